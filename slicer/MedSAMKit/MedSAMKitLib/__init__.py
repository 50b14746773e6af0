"""Slicer-free part of the MedSAMKit extension: HTTP client, geometry conversions, NRRD in memory.

Uses only the Python standard library and numpy (both in every 3D Slicer), never ``import slicer``,
so it is unit-tested outside Slicer and the extension installs no packages into Slicer's Python.
"""

from .client import (
    API_VERSION,
    DEFAULT_URL,
    LabelInfo,
    LabelMapResult,
    MedSAMKitClient,
    MedSAMKitError,
    ServerInfo,
    UploadedVolume,
    format_size,
    normalize_url,
)
from .geometry import (
    RoiBox,
    SegmentSpec,
    as_matrix,
    geometry_to_matrix,
    grid_difference,
    ijk_to_ras,
    keep_values,
    matrix_to_geometry,
    prompt_document,
    ras_to_ijk,
    segment_id_table,
    segments_from_labelmap,
    shear,
    stack_channels,
)
from .nrrd import NrrdError, NrrdImage, read_nrrd, write_nrrd
from .tasks import BackgroundCall

__all__ = [
    "API_VERSION", "DEFAULT_URL", "LabelInfo", "LabelMapResult", "MedSAMKitClient", "MedSAMKitError", "ServerInfo",
    "UploadedVolume", "format_size", "normalize_url", "RoiBox", "SegmentSpec", "as_matrix", "geometry_to_matrix",
    "grid_difference", "ijk_to_ras", "keep_values", "matrix_to_geometry", "prompt_document", "ras_to_ijk",
    "segment_id_table", "segments_from_labelmap", "shear", "stack_channels", "NrrdError", "NrrdImage", "read_nrrd",
    "write_nrrd", "BackgroundCall",
]
