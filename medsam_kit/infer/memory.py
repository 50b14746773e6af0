"""SAM-2 memory propagation: a volume's slices as video frames, followed with SAM-2's memory attention.

:func:`propagate_with_memory` follows one object from its prompted slices through a ``(C, Z, Y, X)``
volume the way ``sam2.sam2_video_predictor.SAM2VideoPredictor`` tracks it through a video: the
prompted slices are *conditioning frames* (decoded without memory, then memory-encoded), every
other slice is decoded by ``SAM2Base.track_step`` from its features cross-attending to the memory
bank (all conditioning frames, the ``num_maskmem - 1`` most recent tracked slices, and up to
``max_obj_ptrs_in_encoder`` object pointers). Order of work, as the official predictor's
``propagate_in_video`` followed by ``propagate_in_video(reverse=True)`` with their default start
(the earliest prompted slice): a forward pass from the earliest prompted slice to the last slice,
then a reverse pass down to slice 0. The reverse pass reads the forward pass's memory of the slices
just after the earliest prompt, exactly as the official predictor does.

Differences from the official predictor (all off the path the equivalence test compares):

* The object *ends* in a direction at the first slice whose object-score logit is not positive
  (``stop_on_object_score``) or whose mask has fewer than ``min_area`` pixels; that slice is not kept
  and nothing after it in that direction is decoded. The official predictor never stops. A pass
  that has ended resumes at the next prompted slice; the reverse pass starts at the *latest*
  prompted slice so that it also fills the slices a forward stop left between two prompts (slices
  the forward pass already decoded are skipped, so without stops the result is the official one).
* Only memory that SAM-2 can still read is kept (see :class:`_MemoryBank`), not every frame's.
* Geometry is :class:`~medsam_kit.infer.slice_predictor.ResizeTransform`'s (SAM's longest-side
  letterbox, or a native window shared by all slices), not the video predictor's square resize;
  for square slices of side ``S`` in "longest" mode the two coincide.
* ``fill_hole_area`` (a CUDA-only post-processing of the official predictor) is not applied.

Memory-encoder inputs follow the model's own flags (``binarize_mask_from_pts_for_mem_enc`` etc.).
As in the official predictor, memory features are stored in bfloat16.

Memory attention only helps with weights whose memory modules were trained (official SAM-2.1,
MedSAM2). medsam_kit's supervised training does not train them, so for its checkpoints box
propagation (:func:`medsam_kit.infer.volume.propagate_object`) stays the default.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medsam_kit.infer.slice_predictor import ResizeTransform, SlicePredictor, Window
from medsam_kit.models.segmenter_model import Features
from medsam_kit.prompts.types import BoxPrompt, SlicePrompts


class _MemoryBank:
    """The ``output_dict`` that ``SAM2Base.track_step`` reads, holding only entries it can still read.

    ``track_step`` at slice ``z`` reads memory features of non-conditioning slices up to
    ``mem_reach`` away in its direction of travel and object pointers up to ``ptr_reach`` away, plus
    every conditioning slice. After each tracked slice, :meth:`prune` keeps a non-conditioning entry
    only while it lies within reach of the current slice or of a prompted slice a later walk can
    start from (the reverse pass reads the forward pass's slices just past the earliest prompt);
    beyond ``mem_reach`` only its small object pointer stays. The bank thus holds at most
    ``num_maskmem - 1`` recent memory maps, ``2 * (num_maskmem - 2)`` around each prompted slice a later
    walk starts from, and one per prompted slice, whatever ``Z`` (object pointers likewise with
    ``max_obj_ptrs_in_encoder``).
    """

    def __init__(self, sam: torch.nn.Module, num_frames: int) -> None:
        nm, stride = int(sam.num_maskmem), int(sam.memory_temporal_stride_for_eval)
        # Farthest slice _prepare_memory_conditioned_features reads for t_rel = 1..num_maskmem - 1.
        self.mem_reach = 1 + (nm - 2) * stride if nm >= 2 else 0
        self.ptr_reach = min(num_frames, sam.max_obj_ptrs_in_encoder) - 1 if sam.use_obj_ptrs_in_encoder else 0
        self.output_dict: dict[str, dict[int, dict]] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        self.pos_enc: list[torch.Tensor] | None = None  # memory position encodings depend on shape only

    @property
    def cond(self) -> dict[int, dict]:
        return self.output_dict["cond_frame_outputs"]

    @property
    def non_cond(self) -> dict[int, dict]:
        return self.output_dict["non_cond_frame_outputs"]

    def entry(self, maskmem_features: torch.Tensor | None, maskmem_pos_enc: list[torch.Tensor] | None,
              obj_ptr: torch.Tensor) -> dict:
        # bfloat16 memory as SAM2VideoPredictor stores it (track_step casts back when concatenating).
        if self.pos_enc is None and maskmem_pos_enc is not None:
            self.pos_enc = [p[:1].clone() for p in maskmem_pos_enc]
        if maskmem_features is None:  # num_maskmem == 0: SAM-2 reads no memory maps
            return {"obj_ptr": obj_ptr}
        return {"maskmem_features": maskmem_features.to(torch.bfloat16), "maskmem_pos_enc": self.pos_enc,
                "obj_ptr": obj_ptr}

    def prune(self, z: int, step: int, anchors: Iterable[int]) -> None:
        """Drop what no later ``track_step`` can read.

        Args:
            z: the slice just tracked; the walk goes on in direction ``step`` (+1 forward, -1 reverse).
            anchors: prompted slices a later walk may start or resume from (a walk starting at ``c``
                reads up to ``reach - 1`` slices past ``c``).
        """
        anchors = list(anchors)

        def needed(t: int, reach: int) -> bool:
            return 0 <= (z - t) * step < reach or any(abs(t - c) < reach for c in anchors)

        for t in list(self.non_cond):
            if not needed(t, max(self.mem_reach, self.ptr_reach)):
                del self.non_cond[t]
            elif not needed(t, self.mem_reach) and "maskmem_features" in self.non_cond[t]:
                self.non_cond[t] = {"obj_ptr": self.non_cond[t]["obj_ptr"]}


def _check_model(predictor: SlicePredictor):
    model = predictor.model
    if getattr(model, "family", None) != "sam2" or not hasattr(getattr(model, "sam", None), "track_step"):
        name = getattr(model, "config", {}).get("model_name", type(model).__name__)
        raise ValueError(f"memory propagation needs a SAM-2 model (memory attention and encoder); {name!r} is "
                         f"family {getattr(model, 'family', None)!r}. Use box propagation "
                         f"(medsam_kit.infer.volume.propagate_object) for SAM-1 models")
    return model.sam


def _check_seeds(seeds: Mapping[int, SlicePrompts], nz: int) -> dict[int, SlicePrompts]:
    if not seeds:
        raise ValueError("memory propagation needs at least one prompted slice (seeds is empty)")
    checked = {}
    for z, prompts in sorted(seeds.items()):
        if isinstance(z, bool) or not isinstance(z, int | np.integer) or not 0 <= z < nz:
            raise ValueError(f"prompt on slice {z!r} but the volume has {nz} slices (0..{nz - 1})")
        if not isinstance(prompts, SlicePrompts):
            raise ValueError(f"slice {z}: prompts must be SlicePrompts, got {type(prompts).__name__}")
        if prompts.mask is not None:
            raise ValueError(f"slice {z}: mask prompts are not supported by memory propagation; give a box and/or "
                             f"points (or use box propagation, which takes mask inputs)")
        if len(prompts.boxes) > 1:
            raise ValueError(f"slice {z}: SAM-2 takes one box per object and slice, got {len(prompts.boxes)}; "
                             f"prompt separate parts as separate objects")
        if not prompts.boxes and not len(prompts.points):
            raise ValueError(f"slice {z}: prompts hold no box or point")
        checked[int(z)] = prompts
    return checked


def _seed_window(predictor: SlicePredictor, shape_yx: Sequence[int], seeds: Mapping[int, SlicePrompts]) -> Window:
    """One native window for every slice (memory maps are spatial): the one best holding all prompts."""
    boxes = [b for p in seeds.values() for b in p.boxes]
    box = None
    if boxes:
        box = BoxPrompt(min(b.x0 for b in boxes), min(b.y0 for b in boxes),
                        max(b.x1 for b in boxes), max(b.y1 for b in boxes))
    points = [p.point_coords for p in seeds.values() if len(p.points)]
    return predictor.window_for(shape_yx, box, np.concatenate(points) if points else None)


def _point_inputs(tf: ResizeTransform, prompts: SlicePrompts, device: torch.device) -> dict[str, torch.Tensor]:
    """SAM-2 ``point_inputs`` in model-input pixels: the box as corner points labelled 2, 3 first, then points."""
    coords, labels = [], []
    for box in prompts.boxes:
        coords.append(tf.box_to_model(box).reshape(2, 2))
        labels.append(np.array([2, 3]))
    if len(prompts.points):
        coords.append(tf.points_to_model(prompts.point_coords))
        labels.append(prompts.point_labels)
    return {"point_coords": torch.as_tensor(np.concatenate(coords)[None], dtype=torch.float32, device=device),
            "point_labels": torch.as_tensor(np.concatenate(labels)[None], dtype=torch.int32, device=device)}


def _track_inputs(sam: torch.nn.Module, features: Features) -> tuple[list, list, list]:
    """``(vision_feats, vision_pos_embeds, feat_sizes)`` for ``track_step`` from one slice's cached features.

    :class:`Features` keeps the maps ``_prepare_backbone_features`` gives, with ``no_mem_embed`` added to
    the stride-16 one (image-predictor style); it is subtracted again here, which can differ from the raw
    map by one rounding step. The stride-16 sine position encoding (the only one memory attention reads)
    depends on the map's shape alone, so it is recomputed rather than cached.
    """
    top = features.image_embed
    if sam.directly_add_no_mem_embed:
        top = top - sam.no_mem_embed.view(1, -1, 1, 1)
    maps = [*features.high_res, top]
    pos = sam.image_encoder.neck.position_encoding(top).to(top.dtype)
    return ([m.flatten(2).permute(2, 0, 1) for m in maps], [pos.flatten(2).permute(2, 0, 1)],
            [tuple(m.shape[-2:]) for m in maps])


@torch.no_grad()
def propagate_with_memory(predictor: SlicePredictor, volume_id: Hashable, image: np.ndarray,
                          seeds: Mapping[int, SlicePrompts], *, mask_threshold: float = 0.0, min_area: int = 4,
                          max_distance: int | None = None, stop_on_object_score: bool = True,
                          window: Window = None) -> dict[int, np.ndarray]:
    """Segment one object through a volume with SAM-2 memory attention (module docstring).

    Args:
        predictor: slice predictor of a SAM-2 model; its cache supplies (and keeps) the encoder features.
        volume_id: names ``image`` in the cache; the same id must always mean the same array.
        image: ``(C, Z, Y, X)`` float32 model-input intensities in ``[0, 1]``.
        seeds: ``{slice_index: SlicePrompts}`` of the prompted slices: at most one box
            ``(x0, y0, x1, y1)`` and any points ``(x, y)`` each, in slice pixels; no mask prompts.
        mask_threshold: logit above which a pixel is in the mask.
        min_area: a tracked slice with fewer mask pixels ends the object in that direction (not kept).
        max_distance: most slices followed from a prompted slice in each direction (None: no limit).
        stop_on_object_score: a tracked slice whose object-score logit is ``<= 0`` (SAM-2's "absent")
            ends the object in that direction (not kept).
        window: "native" mode: the ``(y, x)`` window every slice is decoded in (default: the window best
            holding all prompts); must be None in "longest" mode.

    Returns:
        ``{slice_index: (Y, X) float32 logits}`` on the slice grid for the prompted slices (always) and
        every tracked slice, sorted by slice.

    Raises:
        ValueError: not a SAM-2 model; prompts off the volume, empty, with a mask or several boxes.
    """
    sam = _check_model(predictor)
    if image.ndim != 4:
        raise ValueError(f"image must be (C, Z, Y, X), got shape {tuple(image.shape)}")
    nz, shape_yx = image.shape[1], tuple(int(v) for v in image.shape[-2:])
    seeds = _check_seeds(seeds, nz)
    if predictor.mode == "longest" and window is not None:
        raise ValueError(f"window {window} is for 'native' mode; the predictor resizes whole slices ('longest')")
    if predictor.mode == "native" and window is None:
        window = _seed_window(predictor, shape_yx, seeds)
    tf = predictor.transform(shape_yx, window)
    bank = _MemoryBank(sam, nz)
    size = (predictor.size, predictor.size)
    device = predictor.device
    model, was_training = predictor.model, predictor.model.training
    model.eval()  # track_step reads self.training (memory stride, pointer selection)
    try:
        def features_of(z: int, step: int) -> tuple[list, list, list]:
            predictor.prefetch(volume_id, image, z, step, window)  # one encoder batch ahead, not one call a slice
            return _track_inputs(sam, predictor.features(volume_id, image, [z], window).to(device))

        def kept(out: dict, logits: np.ndarray) -> bool:
            if stop_on_object_score and not bool((out["object_score_logits"] > 0).all()):
                return False
            return int((logits > mask_threshold).sum()) >= min_area

        result: dict[int, np.ndarray] = {}
        starts: dict[int, bool] = {}  # prompted slice -> whether its own mask lets propagation start
        seed_features = predictor.features(volume_id, image, list(seeds), window).to(device)  # one batched pass
        for n, (z, prompts) in enumerate(seeds.items()):
            feats, pos, sizes = _track_inputs(sam, seed_features.select(n))
            out = sam.track_step(frame_idx=z, is_init_cond_frame=True, current_vision_feats=feats,
                                 current_vision_pos_embeds=pos, feat_sizes=sizes,
                                 point_inputs=_point_inputs(tf, prompts, device), mask_inputs=None,
                                 output_dict=bank.output_dict, num_frames=nz, run_mem_encoder=False)
            # SAM2VideoPredictor.propagate_in_video_preflight: memory of the upsampled low-res prediction.
            high_res = F.interpolate(out["pred_masks"], size=size, mode="bilinear", align_corners=False)
            maskmem, maskmem_pos = sam._encode_new_memory(current_vision_feats=feats, feat_sizes=sizes,
                                                          pred_masks_high_res=high_res,
                                                          object_score_logits=out["object_score_logits"],
                                                          is_mask_from_pts=True)
            bank.cond[z] = bank.entry(maskmem, maskmem_pos, out["obj_ptr"])
            result[z] = tf.mask_to_slice(out["pred_masks_high_res"][0, 0]).cpu().numpy().astype(np.float32)
            starts[z] = kept(out, result[z])

        for reverse in (False, True):
            step = -1 if reverse else 1
            order = range(max(seeds), -1, -1) if reverse else range(min(seeds), nz)
            active, origin = False, None
            if reverse:  # the forward pass's last slices are out of the reverse pass's reach
                bank.prune(max(seeds), step, [c for c in seeds if c < max(seeds)])
            for z in order:
                if z in seeds:
                    active, origin = starts[z], z
                    continue
                if z in result or not active:
                    continue  # decoded by the forward pass, or the object has ended in this direction
                if max_distance is not None and abs(z - origin) > max_distance:
                    active = False
                    continue
                feats, pos, sizes = features_of(z, step)
                out = sam.track_step(frame_idx=z, is_init_cond_frame=False, current_vision_feats=feats,
                                     current_vision_pos_embeds=pos, feat_sizes=sizes, point_inputs=None,
                                     mask_inputs=None, output_dict=bank.output_dict, num_frames=nz,
                                     track_in_reverse=reverse, run_mem_encoder=True)
                logits = tf.mask_to_slice(out["pred_masks_high_res"][0, 0]).cpu().numpy().astype(np.float32)
                if not kept(out, logits):
                    active = False
                    continue
                result[z] = logits
                bank.non_cond[z] = bank.entry(out["maskmem_features"], out["maskmem_pos_enc"], out["obj_ptr"])
                bank.prune(z, step, seeds if not reverse else [c for c in seeds if c < z])
    finally:
        model.train(was_training)
    return dict(sorted(result.items()))
