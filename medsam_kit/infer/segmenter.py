"""Python API: ``Segmenter(model).segment_volume(volume, prompts=None)`` and ``segment_slice(image, box=...)``.

Shapes and axis order:

* a volume is a :class:`~medsam_kit.io.Volume` or an array ``(Z, Y, X)`` / ``(C, Z, Y, X)``
  (channels first, in the order of the plan's ``channel_names``); slice index = first spatial axis.
* prompts are on the **input** grid: a :class:`~medsam_kit.prompts.PromptSet`, a mapping
  ``{label_value: {slice_index: SlicePrompts}}``, or a decoded prompt-file document
  (``{"labels": {name: {slice: {...}}}}``, see :mod:`medsam_kit.prompts.user_file`); boxes
  ``(x0, y0, x1, y1)`` end-exclusive, points ``(x, y)`` = (column, row).
* results are on the input grid with the input's geometry: labels ``(Z, Y, X)`` uint8.

Steps: preprocessing with the plan (:class:`~medsam_kit.data.preprocess.Preprocessor`; without a
plan the image is used as is) → intensities to ``[0, 1]`` (the run's ``intensity_to_unit``, else
per-channel min-max) → prompted (:func:`~medsam_kit.infer.volume.segment_prompted`) or automatic
(:func:`~medsam_kit.infer.volume.segment_automatic`) segmentation → labels back onto the input
grid (:func:`~medsam_kit.data.preprocess.invert_preprocessing`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsam_kit.data.case import Case
from medsam_kit.data.preprocess import PreprocessingPlan, Preprocessor, invert_preprocessing, normalize_channel
from medsam_kit.infer.cache import DEFAULT_MAX_BYTES, EmbeddingCache
from medsam_kit.infer.grid import map_prompts, resample_linear
from medsam_kit.infer.run_loading import load_run_for_inference
from medsam_kit.infer.slice_predictor import SlicePredictor
from medsam_kit.infer.volume import (
    REFINE_MODES,
    PropagationOptions,
    decode_slice_prompts,
    segment_automatic,
    segment_prompted,
)
from medsam_kit.io.geometry import Geometry
from medsam_kit.io.validate import check_intensities
from medsam_kit.io.volume import Volume
from medsam_kit.prompts.types import BoxPrompt, PointPrompts, PromptSet, SlicePrompts
from medsam_kit.prompts.user_file import parse_prompts


@dataclass
class SegmentationResult:
    """A segmentation on the input's grid.

    Attributes:
        labels: ``(Z, Y, X)`` uint8 label map (0 background).
        geometry: the input's geometry (spacing / origin / direction).
        label_names: ``{value: name}`` including ``0: "background"``.
        probabilities: ``{value: (Z, Y, X) float32}`` per class on the input grid, when requested.
        prompts: the prompts that were decoded, on the model's (preprocessed) grid; for automatic
            mode the PCSW prompts.
        mode: ``"prompted"`` or ``"automatic"``.
    """

    labels: np.ndarray
    geometry: Geometry
    label_names: dict[int, str]
    probabilities: dict[int, np.ndarray] | None = None
    prompts: PromptSet | None = None
    mode: str = "prompted"
    meta: dict = field(default_factory=dict)


def _min_max(image: np.ndarray) -> np.ndarray:
    """Per-channel min-max to ``[0, 1]`` of ``(C, ...)`` (constant channels become 0)."""
    out = np.empty(image.shape, np.float32)
    for c, channel in enumerate(image):
        lo, hi = float(channel.min()), float(channel.max())
        out[c] = (channel - lo) / (hi - lo) if hi > lo else 0.0
    return out


class Segmenter:
    """Segment volumes and slices with a :class:`~medsam_kit.models.SegmenterModel`.

    Args:
        model: the model (its ``image_size`` / ``in_channels`` / ``num_classes`` are used).
        plan: preprocessing plan of the data the model was trained on; None: no preprocessing.
        label_names: ``{value: name}``; default: the plan's, else ``class_1 .. class_K``.
        device: ``"cpu"`` / ``"cuda"``; the model is moved there.
        intensity_to_unit: ``image (C, Z, Y, X) -> [0, 1]`` after preprocessing; default per-channel
            min-max (right for CT windows / EM scaling, an approximation for z-scored MRI).
        cache_bytes: bound of the embedding cache (see :class:`EmbeddingCache`).
        batch_size: slices per encoder call.
        propagation: how objects are followed through the volume.
        background_threshold: probability below which a voxel is background (prompted mode and
            ``refine="decoder"``; ``auto`` and ``none`` label what the coarse head / the fusion decides).
        mode: how slices meet the model's ``S x S`` input: ``"longest"`` resizes whole slices (SAM's
            preprocessing; right for official / MedSAM weights) and ``"native"`` decodes ``S x S``
            windows at the preprocessed resolution (what the trainer trains on; the default of
            :meth:`from_run` and of medsam_kit checkpoints). See :mod:`medsam_kit.infer.slice_predictor`.
        refine: automatic mode only: ``"auto"`` (default) the coarse head's labels, changed by the mask
            decoder only where its mask is stable or agrees with the coarse one (measured never below the
            coarse answer on the phantom runs of the README);
            ``"decoder"`` the decoder's propagated masks alone; ``"none"`` the coarse head alone (fastest).
            See :func:`~medsam_kit.infer.volume.segment_automatic`.
    """

    def __init__(self, model, plan: PreprocessingPlan | None = None, label_names: Mapping[int, str] | None = None,
                 device: str = "cpu", intensity_to_unit: Callable[[np.ndarray], np.ndarray] | None = None,
                 cache_bytes: int = DEFAULT_MAX_BYTES, batch_size: int = 8,
                 propagation: PropagationOptions | None = None, background_threshold: float = 0.5,
                 mode: str = "longest", refine: str = "auto") -> None:
        self.model = model.to(device).eval() if hasattr(model, "to") else model
        self.plan = plan
        if label_names is None:
            label_names = plan.label_names if plan is not None else {
                0: "background", **{k: f"class_{k}" for k in range(1, int(model.num_classes) + 1)}}
        self.label_names = {int(k): str(v) for k, v in label_names.items()}
        self.label_names.setdefault(0, "background")
        self.intensity_to_unit = intensity_to_unit
        self.cache = EmbeddingCache(cache_bytes)
        # Padding must look like what training padded with: the model-input value of a preprocessed 0.
        pad = float(np.mean(intensity_to_unit(np.zeros((1, 1, 1, 1), np.float32)))) if intensity_to_unit else 0.0
        self.predictor = SlicePredictor(self.model, self.cache, batch_size, device, pad_value=pad, mode=mode)
        self.propagation = propagation or PropagationOptions()
        self.background_threshold = background_threshold
        if refine not in REFINE_MODES:
            raise ValueError(f"refine must be one of {REFINE_MODES}, got {refine!r}")
        self.refine = refine

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, device: str = "cpu", **kwargs: Any) -> Segmenter:
        """Segmenter of a training run folder (model, plan, label names, intensity mapping).

        Defaults differ from a bare model's: ``mode="native"`` (the trainer's windows) and
        propagation guided by the run's trained coarse head (``PropagationOptions(guide="coarse")``).
        """
        defaults = {"mode": "native", "propagation": PropagationOptions(guide="coarse")}
        return cls(**{**defaults, **load_run_for_inference(run_dir, device), **kwargs})

    # ------------------------------------------------------------------ helpers
    @property
    def classes(self) -> list[int]:
        return [v for v in sorted(self.label_names) if v != 0]

    @property
    def accepted_channel_counts(self) -> list[int]:
        """Channel counts ``C`` an input ``(C, Z, Y, X)`` may have: the plan's channels, or without a
        plan the model's ``in_channels`` and 1 (a grey volume is repeated into the model's channels)."""
        if self.plan is not None:
            return [len(self.plan.channel_names)]
        return sorted({int(self.model.in_channels), 1})

    def _model_image(self, image: np.ndarray) -> np.ndarray:
        """``(C, Z, Y, X)`` preprocessed → ``(C', Z, Y, X)`` float32 in [0, 1] with the model's channel count."""
        unit = self.intensity_to_unit(image) if self.intensity_to_unit is not None else _min_max(image)
        unit = np.clip(np.asarray(unit, dtype=np.float32), 0.0, 1.0)
        wanted = int(self.model.in_channels)
        if unit.shape[0] == wanted:
            return np.ascontiguousarray(unit)
        if unit.shape[0] == 1:  # grey image into an RGB model: SAM's own convention for medical slices
            return np.ascontiguousarray(np.repeat(unit, wanted, axis=0))
        raise ValueError(f"the image has {unit.shape[0]} channels but the model takes {wanted}; give the "
                         f"channels the model was trained on (plan: {self.plan.channel_names if self.plan else '-'})")

    @staticmethod
    def _volume_id(image: np.ndarray) -> str:
        # Content hash: the same volume segmented again (a new click) finds its embeddings in the cache.
        digest = hashlib.blake2b(np.ascontiguousarray(image).view(np.uint8), digest_size=16)
        digest.update(str(image.shape).encode())
        return digest.hexdigest()

    def _prompt_set(self, prompts, shape_zyx, geometry: Geometry) -> PromptSet:
        if isinstance(prompts, PromptSet):
            result = prompts
        elif isinstance(prompts, Mapping) and "labels" in prompts:
            result = parse_prompts(prompts, shape_zyx, geometry, self.label_names)
        elif isinstance(prompts, Mapping):
            result = PromptSet(prompts)
        else:
            raise ValueError(f"prompts must be a PromptSet, a {{label: {{slice: SlicePrompts}}}} mapping or a "
                             f"prompt-file document, got {type(prompts).__name__}")
        for label, k, slice_prompts in result:
            if not 0 <= k < shape_zyx[0]:
                raise ValueError(f"label {label}: prompt on slice {k}, outside the volume (Z = {shape_zyx[0]})")
            try:
                slice_prompts.check_inside(shape_zyx[1:])
            except ValueError as err:
                raise ValueError(f"label {label}, slice {k}: {err}") from None
        return result

    # ------------------------------------------------------------------ volumes
    def segment_volume(self, volume: Volume | np.ndarray, prompts: PromptSet | Mapping | None = None, *,
                       geometry: Geometry | None = None, return_probabilities: bool = False,
                       refine: str | None = None) -> SegmentationResult:
        """Segment a volume, prompted (``prompts`` given) or automatic (``prompts=None``).

        Args:
            volume: :class:`Volume` or array ``(Z, Y, X)`` / ``(C, Z, Y, X)``.
            prompts: on the input grid (see the module docstring); None for automatic mode.
            geometry: geometry of a plain array (default identity); ignored for a :class:`Volume`.
            return_probabilities: also return per-class probabilities on the input grid.
            refine: automatic mode's refinement for this call (default: the Segmenter's ``refine``).

        Returns:
            :class:`SegmentationResult` with ``labels`` ``(Z, Y, X)`` uint8 on the input grid.

        Raises:
            ValueError: a wrong shape, NaN / infinite voxels, non-real voxels or values beyond float32
                (:func:`medsam_kit.io.check_intensities`), prompts outside the volume.
        """
        if isinstance(volume, Volume):
            array, geometry = volume.array, volume.geometry
            source = volume.meta.get("filename") or volume.meta.get("path") or "the input volume"
        else:
            array, geometry, source = np.asarray(volume), geometry or Geometry(), "the input volume"
        image = array[None] if array.ndim == 3 else array
        if image.ndim != 4:
            raise ValueError(f"volume must be (Z, Y, X) or (C, Z, Y, X), got shape {array.shape}")
        check_intensities(image, source)  # NaN would spread through min-max scaling into every slice
        shape = tuple(image.shape[1:])
        prompt_set = None if prompts is None else self._prompt_set(prompts, shape, geometry)

        work, work_geometry, meta = image.astype(np.float32), geometry, None
        if self.plan is not None:
            if image.shape[0] != len(self.plan.channel_names):
                raise ValueError(f"the volume has {image.shape[0]} channels but the plan expects "
                                 f"{list(self.plan.channel_names)}")
            case = Case("input", work, geometry, tuple(self.plan.channel_names), None, dict(self.label_names), {})
            pre = Preprocessor(self.plan).apply(case)
            work, work_geometry, meta = pre.image, pre.geometry, pre.meta
        model_image = self._model_image(work)
        work_shape = tuple(model_image.shape[1:])
        same_grid = work_shape == shape and work_geometry.almost_equal(geometry)
        if prompt_set is not None and not same_grid:
            prompt_set = map_prompts(prompt_set, geometry, work_geometry, work_shape)

        volume_id = self._volume_id(model_image)
        if prompt_set is None:
            assembler, prompt_set = segment_automatic(self.predictor, volume_id, model_image, self.classes,
                                                      self.propagation, return_probabilities,
                                                      refine=self.refine if refine is None else refine)
            mode = "automatic"
        else:
            assembler = segment_prompted(self.predictor, volume_id, model_image, prompt_set, self.propagation,
                                         return_probabilities, coarse_classes=self.classes)
            mode = "prompted"
        labels = assembler.labels(self.background_threshold)
        if meta is not None:
            labels = invert_preprocessing(labels, meta)
        probabilities = None
        if assembler.probabilities is not None:
            probabilities = {}
            for value in self.classes:
                prob = assembler.probabilities.get(value, np.zeros(work_shape, np.float16)).astype(np.float32)
                probabilities[value] = prob if same_grid else resample_linear(prob, work_geometry, geometry, shape)
        return SegmentationResult(labels.astype(np.uint8), geometry, dict(self.label_names), probabilities,
                                  prompt_set, mode, {"cache": self.cache_stats()})

    # ------------------------------------------------------------------ slices
    def segment_slice(self, image: np.ndarray, box: BoxPrompt | Sequence[float] | None = None,
                      points: np.ndarray | Sequence[Sequence[float]] | None = None,
                      point_labels: Sequence[int] | None = None) -> np.ndarray:
        """Segment one object on one 2D slice.

        Args:
            image: ``(Y, X)`` or ``(C, Y, X)`` slice. With a plan, each channel is normalised by
                the plan's scheme (no resampling: a lone slice has no spacing); then intensities go
                to ``[0, 1]`` as for volumes.
            box: ``(x0, y0, x1, y1)`` end-exclusive, in the slice's pixels, or None.
            points: ``(N, 2)`` ``(x, y)`` = (column, row); point_labels ``(N,)`` 1 positive / 0
                negative (default all positive).

        Returns:
            ``(Y, X)`` bool mask. Repeated calls on the same slice reuse its embedding.
        """
        check_intensities(image, "the input slice")
        image = np.asarray(image, dtype=np.float32)
        image = image[None] if image.ndim == 2 else image
        if image.ndim != 3:
            raise ValueError(f"image must be (Y, X) or (C, Y, X), got shape {image.shape}")
        volume = image[:, None]  # (C, 1, Y, X)
        if self.plan is not None:
            volume = np.stack([normalize_channel(c, n)[0] for c, n in zip(volume, self.plan.normalization,
                                                                         strict=True)])
        model_image = self._model_image(volume)
        shape_yx = model_image.shape[-2:]
        box = None if box is None else (box if isinstance(box, BoxPrompt) else BoxPrompt(*box))
        pts = PointPrompts() if points is None else PointPrompts(np.asarray(points, float), point_labels)
        prompts = SlicePrompts(boxes=(box,) if box is not None else (), points=pts)
        if prompts.is_empty:
            raise ValueError("segment_slice needs a box or points")
        prompts.check_inside(shape_yx)
        logits = decode_slice_prompts(self.predictor, self._volume_id(model_image), model_image, 0, prompts)
        return logits > self.propagation.mask_threshold

    def cache_stats(self) -> dict[str, int]:
        """Encoder calls, encoded slices, cache hits / misses / evictions, bytes held."""
        c = self.cache
        return {"encoder_calls": c.encoder_calls, "encoded_slices": c.encoded_slices, "hits": c.hits,
                "misses": c.misses, "evictions": c.evictions, "bytes": c.nbytes, "entries": len(c)}
