"""Prompted and automatic 3D segmentation slice by slice, with propagation through the volume.

**Prompted**: the prompts of each label (a :class:`~medsam_kit.prompts.PromptSet`) are decoded on
their slices; from every prompted slice the object is *propagated* in both directions: the next
slice is decoded with the tight box of the previous slice's mask (SAM-1 style box propagation, as
MedSAM's 3D inference does) plus, by default, a positive point at that mask's most interior
pixel, until the mask vanishes (area below ``min_area`` pixels), another prompted slice of the
same label is reached, or the volume ends.

A mask decoder prompted with a box always answers with *some* object, so box propagation alone
neither stops where a structure ends nor resists drifting onto a neighbour of similar shape. With
``guide="coarse"`` (the default for medsam_kit runs, whose coarse head is trained) the coarse
semantic head supplies both: on the next slice, the coarse head's components of the label that
touch the previous mask's box are the region the box and point are taken from, and no such
component ends the object. Models whose coarse head is untrained (official weights) use
``guide="none"``. SAM-2 models may instead propagate with memory attention, slices as video frames
(:func:`medsam_kit.infer.memory.propagate_with_memory`, ``--propagation memory``).

**Automatic**: the coarse semantic head labels every slice (batched, chunk by chunk), PCSW
(:func:`medsam_kit.prompts.pcsw_prompts`) turns those coarse masks into one key slice + box +
point per class, and the prompted path refines and propagates from there.

**Multi-class assembly** (prompted mode, and automatic with ``refine="decoder"``): each class gives a
probability (sigmoid of the decoder logits) per voxel; where classes overlap the most probable wins, and
a voxel whose best probability is below ``background_threshold`` is background. Only the running best
probability and label are kept (``(Z, Y, X)`` float16 + uint8), so memory does not grow with the number
of classes unless per-class probabilities are requested. Automatic mode's default ``refine="auto"``
keeps the coarse class probabilities and the decoder's per-class probabilities (about ``4 K + 2`` bytes
per voxel for ``K`` classes) to decide, slice by slice, where the decoder may change the coarse labels
(:func:`fuse_refinement`).

Bounded memory: encoder features live only in the predictor's byte-bounded
:class:`~medsam_kit.infer.cache.EmbeddingCache` and are computed ``batch_size`` slices at a time.
Arrays are ``(C, Z, Y, X)`` model-input intensities in ``[0, 1]``; labels ``(Z, Y, X)``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from medsam_kit.infer.slice_predictor import SlicePredictor
from medsam_kit.prompts.from_masks import tight_box
from medsam_kit.prompts.pcsw import TAU, pcsw_prompt_set, pcsw_prompts
from medsam_kit.prompts.types import BoxPrompt, PromptSet, SlicePrompts


@dataclass(frozen=True)
class PropagationOptions:
    """How far and how an object is followed from its prompted slice(s).

    Attributes:
        mask_threshold: logit above which a pixel is in the mask (0 = probability 0.5).
        min_area: a propagated mask with fewer pixels ends the object in that direction.
        box_margin: pixels added on every side of the previous mask's box; 0 (default) keeps the
            tight box. A margin gives objects that grow from slice to slice room, but the decoder
            reads a box as "the object fills this box": on thin or nested structures a few pixels
            change which object the box describes (a left-ventricle box grown by 2 px encloses the
            2-4 px thick myocardium and is decoded as it), and the error compounds slice by slice.
            Training prompts are tight boxes with zero-mean jitter (``methods.supervised``), so the
            tight box is what the decoder learnt.
        max_distance: most slices propagated from a prompted slice in each direction (None: no limit).
        propagate: False decodes only the prompted slices.
        interior_point: also pass one positive point, the previous mask's most interior pixel (maximum
            of its distance transform), with the box. A box alone is ambiguous between nested
            structures (a left-ventricle box vs the myocardium ring around it); the point says which
            one is meant. The decoder was trained with boxes plus sometimes one positive point.
        guide: ``"coarse"``: the coarse head's label region picks each propagated box and ends the object
            (module docstring); ``"none"``: the previous mask alone.
        method: ``"box"`` (default): box (+ point) propagation, any model; ``"memory"``: SAM-2
            memory attention with the prompted slices as conditioning frames
            (:func:`medsam_kit.infer.memory.propagate_with_memory`; SAM-2 models only, worth it with
            weights whose memory modules were trained -- official SAM-2.1, MedSAM2; box and point
            prompts only; ``guide`` and ``interior_point`` do not apply).
    """

    mask_threshold: float = 0.0
    min_area: int = 4
    box_margin: float = 0.0
    max_distance: int | None = None
    propagate: bool = True
    interior_point: bool = True
    guide: str = "none"
    method: str = "box"

    def __post_init__(self) -> None:
        if self.guide not in GUIDES:
            raise ValueError(f"propagation guide must be one of {GUIDES}, got {self.guide!r}")
        if self.method not in METHODS:
            raise ValueError(f"propagation method must be one of {METHODS}, got {self.method!r}")


GUIDES = ("none", "coarse")
METHODS = ("box", "memory")
#: How automatic mode turns the coarse head's answer into labels (:func:`segment_automatic`).
REFINE_MODES = ("auto", "decoder", "none")
# refine="auto" (fuse_refinement): chosen on runs of ACDC phantom style A as the rule with the highest mean gain
# over the coarse head that lost on no style-A run (12 variants of weight, stability and IoU; README), then
# checked on style B. A decoder slice counts when SAM's stability score (offset 1 logit) reaches 0.8 or its
# mask overlaps the coarse one with IoU 0.5; its probability weighs 0.3 in the class-vs-background decision.
DECODER_WEIGHT = 0.3
STABILITY_OFFSET = 1.0
MIN_STABILITY = 0.8
MIN_SLICE_IOU = 0.5

PredictFn = Callable[[int, BoxPrompt, "np.ndarray | None"], np.ndarray]
# guide(slice_index, previous_mask) -> the (Y, X) bool region to prompt on that slice, or None: the object ended
GuideFn = Callable[[int, np.ndarray], "np.ndarray | None"]


def coarse_guide(coarse_class_mask: np.ndarray, min_area: int = 4) -> GuideFn:
    """A propagation guide from one class's coarse ``(Z, Y, X)`` bool mask.

    On slice ``z`` it returns the union of the coarse 2D components that have at least
    ``min_area`` pixels and overlap the previous mask's tight box (the structure moves little
    between adjacent slices; a component elsewhere is another instance or a false positive), or
    None when there is none.
    """

    def guide(z: int, previous: np.ndarray) -> np.ndarray | None:
        region = coarse_class_mask[z]
        if int(region.sum()) < min_area:
            return None
        box = tight_box(previous)
        components, count = ndimage.label(region)
        inside = np.unique(components[int(box.y0):int(box.y1), int(box.x0):int(box.x1)])
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        keep = [c for c in inside if c != 0 and sizes[c] >= min_area]
        return np.isin(components, keep) if keep else None

    return guide


def interior_point(mask: np.ndarray) -> np.ndarray:
    """``(1, 2)`` float64 ``(x, y)`` of the pixel of ``mask`` ``(Y, X)`` farthest from its boundary.

    The slice border counts as boundary (the mask is padded with background). Ties go to the first
    pixel in row-major order, so the result is deterministic.
    """
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return np.array([[float(col), float(row)]])


def propagate_object(predict: PredictFn, num_slices: int, seeds: dict[int, np.ndarray],
                     options: PropagationOptions = PropagationOptions(), guide: GuideFn | None = None
                     ) -> dict[int, np.ndarray]:
    """Follow one object from its seed slices through the volume (the propagation rule of the module docstring).

    Args:
        predict: ``predict(slice_index, box, point) -> (Y, X)`` logits on that slice for an end-exclusive
            box and ``point``, ``(1, 2)`` ``(x, y)`` of a positive point (None without
            ``options.interior_point``).
        num_slices: ``Z``.
        seeds: ``{slice_index: (Y, X) logits}`` of the prompted slices.
        options: thresholds and limits.
        guide: optional ``guide(z, previous_mask)`` (e.g. :func:`coarse_guide`): the region whose box
            and interior point prompt slice ``z``; None from it ends the object in that direction.

    Returns:
        ``{slice_index: (Y, X) logits}`` for the seeds and every propagated slice (where two seeds
        reach the same slice, the element-wise maximum).
    """
    result = {z: np.asarray(v, dtype=np.float32) for z, v in seeds.items()}
    if not options.propagate:
        return result
    for z0 in sorted(seeds):
        for step in (1, -1):
            previous = seeds[z0] > options.mask_threshold
            z, travelled = z0 + step, 1
            while 0 <= z < num_slices and z not in seeds:
                if options.max_distance is not None and travelled > options.max_distance:
                    break
                if int(previous.sum()) < options.min_area:
                    break
                region = previous
                if guide is not None:
                    region = guide(z, previous)
                    if region is None:
                        break  # the guide sees no continuation of the object on this slice
                box = tight_box(region)
                if options.box_margin:
                    box = BoxPrompt(box.x0 - options.box_margin, box.y0 - options.box_margin,
                                    box.x1 + options.box_margin, box.y1 + options.box_margin).clipped(region.shape)
                point = interior_point(region) if options.interior_point else None
                logits = np.asarray(predict(z, box, point), dtype=np.float32)
                mask = logits > options.mask_threshold
                if int(mask.sum()) < options.min_area:
                    break  # the object ended: the vanished slice is not kept
                result[z] = np.maximum(result[z], logits) if z in result else logits
                previous = mask
                z, travelled = z + step, travelled + 1
    return result


class LabelAssembler:
    """Running multi-class assembly on a ``(Z, Y, X)`` grid (see the module docstring).

    Args:
        shape_zyx: the grid.
        label_values: the classes that may be added.
        keep_probabilities: also keep one ``(Z, Y, X)`` float16 probability map per class.
    """

    def __init__(self, shape_zyx: Sequence[int], label_values: Sequence[int], keep_probabilities: bool = False
                 ) -> None:
        self.shape = tuple(int(s) for s in shape_zyx)
        self.best_probability = np.zeros(self.shape, np.float16)
        self.best_label = np.zeros(self.shape, np.uint8)
        self.probabilities = ({int(v): np.zeros(self.shape, np.float16) for v in label_values}
                              if keep_probabilities else None)

    def add(self, label: int, z: int, logits: np.ndarray) -> None:
        """Add class ``label``'s ``(Y, X)`` logits on slice ``z``."""
        probability = torch.sigmoid(torch.as_tensor(logits)).numpy().astype(np.float16)
        better = probability > self.best_probability[z]
        self.best_probability[z][better] = probability[better]
        self.best_label[z][better] = label
        if self.probabilities is not None:
            np.maximum(self.probabilities[label][z], probability, out=self.probabilities[label][z])

    def labels(self, background_threshold: float = 0.5) -> np.ndarray:
        """``(Z, Y, X)`` uint8: the most probable class where its probability exceeds the threshold, else 0."""
        return np.where(self.best_probability > background_threshold, self.best_label, 0).astype(np.uint8)


def decode_slice_prompts(predictor: SlicePredictor, volume_id: Hashable, image: np.ndarray, z: int,
                         prompts: SlicePrompts) -> np.ndarray:
    """``(Y, X)`` logits of one object on slice ``z``; several boxes (separate parts) are combined by maximum."""
    points = prompts.point_coords if len(prompts.points) else None
    labels = prompts.point_labels if len(prompts.points) else None
    boxes = prompts.boxes or (None,)
    # the predictor places a mask prompt like the image (resized or in the decode window)
    outputs = [predictor.predict(volume_id, image, z, box, points, labels, mask=prompts.mask) for box in boxes]
    return np.maximum.reduce(outputs) if len(outputs) > 1 else outputs[0]


def segment_prompted(predictor: SlicePredictor, volume_id: Hashable, image: np.ndarray, prompts: PromptSet,
                     options: PropagationOptions = PropagationOptions(), keep_probabilities: bool = False,
                     coarse_classes: Sequence[int] | None = None, coarse_labels: np.ndarray | None = None
                     ) -> LabelAssembler:
    """Prompted 3D segmentation of ``image`` ``(C, Z, Y, X)`` in ``[0, 1]``.

    Args:
        predictor: slice predictor (its cache keeps the encoder work of earlier calls).
        volume_id: names ``image`` in the cache; the same id must always mean the same array.
        image: model-input intensities, channels first.
        prompts: per label, per slice prompts in slice pixels of ``image``.
        options: propagation rule.
        keep_probabilities: keep per-class probability maps in the result.
        coarse_classes: label values of the coarse head's channels 1..K (for ``options.guide ==
            "coarse"``; None: channel k is label k). Labels outside them propagate unguided.
        coarse_labels: the coarse ``(Z, Y, X)`` labels if already computed (automatic mode).

    Returns:
        The :class:`LabelAssembler`; ``.labels(background_threshold)`` is the label map.
    """
    _, nz, ny, nx = image.shape
    assembler = LabelAssembler((nz, ny, nx), prompts.labels(), keep_probabilities)
    last = {"z": None}

    def predict(z: int, box: BoxPrompt, point: np.ndarray | None) -> np.ndarray:
        step = 1 if last["z"] is None or z > last["z"] else -1
        last["z"] = z
        labels = None if point is None else np.ones(len(point), np.int64)
        # prefetch: one encoder batch ahead in the travel direction, not one call per slice
        return predictor.predict(volume_id, image, z, box, point, labels, prefetch_step=step)

    if options.method == "memory" and options.propagate:
        return _segment_with_memory(predictor, volume_id, image, prompts, options, keep_probabilities)
    guided = options.guide == "coarse" and options.propagate
    if guided and coarse_labels is None:
        coarse_labels = coarse_label_volume(predictor, volume_id, image, coarse_classes)
    known = set(coarse_classes) if coarse_classes is not None else set(range(1, 256))
    for label in prompts.labels():
        guide = coarse_guide(coarse_labels == label, options.min_area) if guided and label in known else None
        seeds = {}
        for z in prompts.slices(label):
            if not 0 <= z < nz:
                raise ValueError(f"label {label}: prompt on slice {z} but the volume has {nz} slices (0..{nz - 1})")
            seeds[z] = decode_slice_prompts(predictor, volume_id, image, z, prompts.get(label, z))
        for z, logits in propagate_object(predict, nz, seeds, options, guide).items():
            assembler.add(label, z, logits)
    return assembler


def _segment_with_memory(predictor: SlicePredictor, volume_id: Hashable, image: np.ndarray, prompts: PromptSet,
                         options: PropagationOptions, keep_probabilities: bool) -> LabelAssembler:
    """:func:`segment_prompted` with SAM-2 memory propagation, one object (label) at a time."""
    from medsam_kit.infer.memory import propagate_with_memory  # SAM-2 internals; only when asked for

    _, nz, ny, nx = image.shape
    assembler = LabelAssembler((nz, ny, nx), prompts.labels(), keep_probabilities)
    for label in prompts.labels():
        seeds = {z: prompts.get(label, z) for z in prompts.slices(label)}
        logits = propagate_with_memory(predictor, volume_id, image, seeds, mask_threshold=options.mask_threshold,
                                       min_area=options.min_area, max_distance=options.max_distance)
        for z, slice_logits in logits.items():
            assembler.add(label, z, slice_logits)
    return assembler


def coarse_volume(predictor: SlicePredictor, volume_id: Hashable, image: np.ndarray,
                  class_values: Sequence[int] | None, probabilities: bool = True
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Coarse-head labels and (optionally) class probabilities of ``image`` ``(C, Z, Y, X)``, ``batch_size``
    slices at a time.

    Returns:
        ``(labels (Z, Y, X) uint8, probabilities (K + 1, Z, Y, X) float16 or None)``: labels are the
        float32 argmax (as :func:`coarse_label_volume`; channel ``k`` is label ``class_values[k - 1]``),
        probabilities channel 0 background (None unless ``probabilities``). ``class_values`` None: channel
        ``k`` is label ``k``.
    """
    _, nz, ny, nx = image.shape
    lut = None if class_values is None else np.asarray([0, *class_values], dtype=np.uint8)
    labels, kept = np.zeros((nz, ny, nx), np.uint8), None
    for start in range(0, nz, predictor.batch_size):
        indices = list(range(start, min(nz, start + predictor.batch_size)))
        chunk = predictor.coarse_probabilities(volume_id, image, indices)  # (B, K + 1, Y, X) float32
        channels = chunk.argmax(dim=1).to(torch.uint8).numpy()
        labels[start:start + len(indices)] = channels if lut is None else lut[channels]
        if probabilities:
            if kept is None:
                kept = np.zeros((chunk.shape[1], nz, ny, nx), np.float16)
            kept[:, start:start + len(indices)] = chunk.numpy().transpose(1, 0, 2, 3)
    return labels, kept


def coarse_label_volume(predictor: SlicePredictor, volume_id: Hashable, image: np.ndarray,
                        class_values: Sequence[int] | None = None) -> np.ndarray:
    """Coarse-head labels ``(Z, Y, X)`` uint8 of ``image`` ``(C, Z, Y, X)``, ``batch_size`` slices at a time.

    Args:
        class_values: label value of coarse channel ``k`` (1-based) is ``class_values[k - 1]`` (the
            trainer's rule: the dataset's sorted non-zero label values, e.g. BraTS 2021 ``[1, 2, 4]``);
            None: channel k is label k.
    """
    return coarse_volume(predictor, volume_id, image, class_values, probabilities=False)[0]


def automatic_prompts(coarse_labels: np.ndarray, classes: Sequence[int], tau: float = TAU, min_voxels: int = 10
                      ) -> PromptSet:
    """PCSW prompts (key slice, box, positive point) per class from coarse ``(Z, Y, X)`` labels."""
    return pcsw_prompt_set(pcsw_prompts(coarse_labels, classes=list(classes), tau=tau, min_voxels=min_voxels))


def mask_stability(probabilities: np.ndarray, offset: float = STABILITY_OFFSET) -> float:
    """SAM's stability score of a mask from its ``(Y, X)`` probabilities: the area above ``sigmoid(+offset)``
    over the area above ``sigmoid(-offset)`` (1.0: moving the threshold by ``offset`` logits changes nothing).

    The automatic mask generators of SAM and SAM-2 keep masks by this score; it needs no training and is
    low where the decoder hesitates over a wide band (a mask it is guessing)."""
    high, low = 1.0 / (1.0 + np.exp(-offset)), 1.0 / (1.0 + np.exp(offset))
    wide = int((probabilities > low).sum())
    return float((probabilities > high).sum()) / wide if wide else 0.0


def fuse_refinement(coarse_labels: np.ndarray, coarse_probabilities: np.ndarray,
                    decoder_probabilities: Mapping[int, np.ndarray], classes: Sequence[int],
                    decoder_weight: float = DECODER_WEIGHT, keep_scores: bool = False
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """``refine="auto"``: the coarse head's labels, changed by the decoder only where the decoder is trustworthy.

    Per class ``c`` and slice, where the decoder's mask of ``c`` is stable (:func:`mask_stability` >=
    :data:`MIN_STABILITY`) or agrees with the coarse mask of ``c`` (IoU >= :data:`MIN_SLICE_IOU`), each pixel the
    coarse head labels ``c`` or background is decided between those two by the fused scores
    ``(1 - w) * coarse_c + w * decoder`` against ``(1 - w) * coarse_bg + w * (1 - decoder)``. So a boundary
    moves where a confident decoder says, and a coarse false positive the decoder leaves out becomes
    background; but the decoder never moves a pixel from one class to another (a left-ventricle box
    decoded as the myocardial ring around it cannot relabel the ring), and a hesitant, disagreeing
    decoder (an under-trained one on unfamiliar data) changes nothing. A background pixel two classes'
    decoders claim goes to the higher fused score. Every other pixel keeps its coarse label. (Rules
    chosen on runs of ACDC phantom style A, checked on style B: README.)

    Args:
        coarse_labels: ``(Z, Y, X)`` uint8 coarse argmax (label values).
        coarse_probabilities: ``(K + 1, Z, Y, X)`` coarse softmax (channel 0 background).
        decoder_probabilities: ``{label value: (Z, Y, X)}`` sigmoid of the decoder's propagated masks (0 where
            it did not decode).
        classes: label values of coarse channels 1..K, sorted.
        decoder_weight: ``w``.
        keep_scores: also return the scores (memory: a copy of ``coarse_probabilities``).

    Returns:
        ``(labels (Z, Y, X) uint8, scores (K + 1, Z, Y, X) float16 or None)``: scores are the coarse
        probabilities with class ``c``'s fused score where the decoder decided a pixel (they need not give
        the labels as their argmax).
    """
    labels = np.array(coarse_labels, dtype=np.uint8, copy=True)
    scores = np.array(coarse_probabilities, dtype=np.float16, copy=True) if keep_scores else None
    w = float(decoder_weight)
    claimed = np.zeros(labels.shape[1:], np.float32)  # best fused score of a background pixel claimed on a slice
    for z in range(labels.shape[0]):  # one slice at a time: memory stays at a few slices' worth
        claimed[:] = 0.0
        for k, value in enumerate(classes, start=1):
            decoder_volume = decoder_probabilities.get(int(value))
            if decoder_volume is None:
                continue
            decoder = decoder_volume[z].astype(np.float32)
            mask = decoder > 0.5
            if not mask.any():
                continue
            coarse = coarse_labels[z] == value
            iou = float((mask & coarse).sum()) / float((mask | coarse).sum())
            if mask_stability(decoder) < MIN_STABILITY and iou < MIN_SLICE_IOU:
                continue  # a hesitant mask that disagrees with the coarse head: not evidence
            fused = (1 - w) * coarse_probabilities[k, z].astype(np.float32) + w * decoder
            background = (1 - w) * coarse_probabilities[0, z].astype(np.float32) + w * (1 - decoder)
            labels[z][coarse & (background > fused)] = 0
            free = (coarse_labels[z] == 0) & (fused > background) & (fused > claimed)
            labels[z][free] = value
            claimed[free] = fused[free]
            if scores is not None:
                decided = coarse | (coarse_labels[z] == 0)
                scores[k, z][decided] = fused[decided]
    return labels, scores


def segment_automatic(predictor: SlicePredictor, volume_id: Hashable, image: np.ndarray, classes: Sequence[int],
                      options: PropagationOptions = PropagationOptions(), keep_probabilities: bool = False,
                      tau: float = TAU, min_voxels: int = 10, refine: str = "auto"
                      ) -> tuple[AutomaticResult, PromptSet]:
    """Automatic 3D segmentation: coarse head → PCSW prompts → decoder refinement → propagation.

    ``classes`` are the label values of the coarse head's channels 1..K, in sorted order.

    Args:
        refine: ``"none"``: the coarse head's labels alone (no decoder work: the fastest path);
            ``"decoder"``: the decoder's propagated masks assembled by probability (the coarse head only
            chooses the prompts); ``"auto"``: the coarse labels, changed by the decoder only where it can be
            trusted (:func:`fuse_refinement`).

    Returns:
        ``(result, prompts)``: the :class:`AutomaticResult` (``.labels(background_threshold)``,
        ``.probabilities``) and the PCSW prompts (a class without coarse foreground gets none).
    """
    if refine not in REFINE_MODES:
        raise ValueError(f"refine must be one of {REFINE_MODES}, got {refine!r}")
    num_channels = getattr(predictor.model, "num_classes", len(classes))
    if len(classes) != num_channels:
        raise ValueError(f"the model's coarse head has {num_channels} classes but {len(classes)} label values "
                         f"{list(classes)} were given; pass the label names the model was trained with")
    classes = sorted(int(c) for c in classes)
    needs_probabilities = refine == "auto" or (refine == "none" and keep_probabilities)
    coarse, coarse_probabilities = coarse_volume(predictor, volume_id, image, classes, needs_probabilities)
    prompts = automatic_prompts(coarse, classes, tau=tau, min_voxels=min_voxels)
    if refine == "none":
        return AutomaticResult(coarse, _class_maps(coarse_probabilities, classes) if keep_probabilities else None), \
            prompts
    assembler = segment_prompted(predictor, volume_id, image, prompts, options,
                                 keep_probabilities or refine == "auto", coarse_classes=classes, coarse_labels=coarse)
    for value in classes:  # classes PCSW found nothing for still get an (empty) probability map
        if assembler.probabilities is not None and value not in assembler.probabilities:
            assembler.probabilities[value] = np.zeros(assembler.shape, np.float16)
    if refine == "decoder":
        return AutomaticResult(None, assembler.probabilities, assembler), prompts
    labels, scores = fuse_refinement(coarse, coarse_probabilities, assembler.probabilities, classes,
                                     keep_scores=keep_probabilities)
    return AutomaticResult(labels, _class_maps(scores, classes) if keep_probabilities else None), prompts


def _class_maps(scores: np.ndarray, classes: Sequence[int]) -> dict[int, np.ndarray]:
    return {int(value): scores[k] for k, value in enumerate(classes, start=1)}


@dataclass
class AutomaticResult:
    """What :func:`segment_automatic` found: fixed labels (``refine`` none / auto) or a decoder assembly.

    Attributes:
        fixed_labels: ``(Z, Y, X)`` uint8, or None when the labels come from ``assembler``.
        probabilities: ``{label value: (Z, Y, X) float16}`` per class when asked for (coarse scores,
            fused scores or the decoder's probabilities, following ``refine``).
        assembler: the decoder's :class:`LabelAssembler` (``refine="decoder"``).
    """

    fixed_labels: np.ndarray | None
    probabilities: dict[int, np.ndarray] | None
    assembler: LabelAssembler | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.assembler.shape if self.fixed_labels is None else tuple(self.fixed_labels.shape)

    def labels(self, background_threshold: float = 0.5) -> np.ndarray:
        """``(Z, Y, X)`` uint8 labels; ``background_threshold`` applies to the decoder assembly only."""
        if self.fixed_labels is not None:
            return self.fixed_labels
        return self.assembler.labels(background_threshold)
