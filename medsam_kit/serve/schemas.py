"""Response models of HTTP API v1 (they document ``/openapi.json``; the endpoints return plain dicts).

The prompt document a ``segment`` request sends is *not* modelled here: it is validated by
:func:`medsam_kit.prompts.parse_prompts`, the one schema of :mod:`medsam_kit.prompts.user_file`;
:data:`PROMPT_DOCUMENT_SCHEMA` only describes it for readers and fuzzers of the OpenAPI schema.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    """Every 4xx (and the never-expected 500): one line saying what was wrong and what to do."""

    detail: str


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class ModelInfo(BaseModel):
    name: str
    image_size: int
    in_channels: int
    num_classes: int


class LabelInfo(BaseModel):
    value: int = Field(description="label value in the returned label maps")
    name: str
    color: list[int] = Field(description="0-255 [r, g, b]", min_length=3, max_length=3)


class Info(BaseModel):
    api_version: int
    medsam_kit_version: str
    model: ModelInfo
    channels: list[str] = Field(description="the model's input channels, in the order uploads must hold them")
    accepted_channels: list[int] = Field(description="channel counts an upload may have (a model without a plan "
                                                     "also takes one grey channel, repeated into its channels)")
    labels: list[LabelInfo] = Field(description="structures the model segments (no background)")
    max_upload_bytes: int
    formats: list[str] = Field(description="values of the output query parameter")
    coordinates: list[str] = Field(description="values of the prompt document's \"coordinates\"")


class GeometryInfo(BaseModel):
    """ITK / LPS geometry: spacing and origin in (x, y, z) order, direction columns = index axes."""

    spacing: list[float]
    origin: list[float]
    direction: list[list[float]]


class VolumeCreated(BaseModel):
    id: str = Field(description="uuid4 hex naming the volume in later requests")
    shape_zyx: list[int]
    channels: int
    geometry: GeometryInfo


class CacheInfo(BaseModel):
    entries: int = Field(description="slice embeddings held for this volume (as of the last model call)")
    bytes: int


class VolumeDetail(VolumeCreated):
    bytes: int = Field(description="memory charged to the volume: voxels and embeddings")
    cache: CacheInfo


class VolumeSummary(BaseModel):
    id: str
    shape_zyx: list[int]
    channels: int
    bytes: int


class VolumeList(BaseModel):
    volumes: list[VolumeSummary]


_BOX_OR_POINT = {"type": "array", "items": {}}
#: OpenAPI description of the prompt document (validation: ``parse_prompts``).
PROMPT_DOCUMENT_SCHEMA = {
    "type": "object",
    "required": ["coordinates", "labels"],
    "properties": {
        "format": {"type": "string", "enum": ["medsam-kit-prompts"]},
        "version": {"type": "integer", "enum": [1]},
        "coordinates": {"type": "string", "enum": ["voxel", "world"],
                        "description": "required: voxel = (x column, y row) on slice k; world = mm"},
        "space": {"type": "string", "enum": ["LPS", "RAS"], "description": "required with world coordinates"},
        "labels": {
            "type": "object",
            "description": "{label name: {slice index k: {boxes, points, point_labels}}}",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "boxes": {"type": "array", "items": _BOX_OR_POINT,
                                  "description": "voxel [x0, y0, x1, y1] end-exclusive, or world [[x,y,z],[x,y,z]]"},
                        "points": {"type": "array", "items": _BOX_OR_POINT,
                                   "description": "voxel [x, y], or world [x, y, z]"},
                        "point_labels": {"type": "array", "items": {"type": "integer", "enum": [0, 1]}},
                    },
                },
            },
        },
    },
    "example": {"coordinates": "voxel", "labels": {"LV": {"4": {"boxes": [[100, 90, 131, 122]],
                                                                "points": [[115, 105]], "point_labels": [1]}}}},
}
