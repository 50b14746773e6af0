"""PCSW prompts for unlabeled volumes, cached per volume, and their mapping into a training crop.

SAM's decoder needs prompts, and an unlabeled volume has no ground truth to derive them from. The
teacher's coarse head labels the whole prepared volume (slice by slice, S x S windows as in
validation); :func:`medsam_kit.prompts.pcsw_prompts` turns that into one prompt per class: the
key slice's tight box and most interior point, and the accepted window of slices, where the
object was found to be one physical 3D object.

Caching: labelling a volume costs one teacher pass over all its slices, so the prompts of a volume
are computed when it is first sampled and reused until they are ``refresh`` optimizer steps old
(then recomputed with the current teacher). The cache is part of the method's state, so a resumed
run uses the prompts an uninterrupted one would.

Mapping (:func:`crop_prompts`): an unlabeled training sample is an S x S crop of slice ``z`` at
``(y0, x0)`` of the prepared volume, then warped (weak view). With ``per_slice`` (the default of
the SSS method), class ``k`` has a prompt on it when PCSW's accepted 3D component of ``k`` touches
slice ``z``: that slice's tight box of the component and its most interior pixel (a positive
point). Otherwise (``per_slice=False``, the key-slice reading) every slice of the accepted window
gets the key slice's box, and the point only on the key slice itself (elsewhere it may miss the
object, e.g. the hole of the myocardium ring). The key slice's box is the widest cross-section:
on the other slices of a heart (or of any object that tapers) it is loose, and a decoder trained
on tight GT boxes answers a loose box with a mask it was never taught to produce, which the
student is then trained to copy; the per-slice boxes are the teacher's own 3D-consistent object,
slice by slice, i.e. the kind of prompt the decoder learns from labeled slices. (SSS itself feeds
the key-slice prompt to SAM-2's memory propagation, which our runs do not train.) Boxes are
shifted by the crop origin and mapped
through the weak view's affine (the enclosing box of the four mapped corners), clipped to the
image; a box is dropped when less than ``min_inside`` of it lies in the image (the object is
mostly outside the crop, so the pseudo-mask would describe a cut-off object); a point only counts
when it lands inside the image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass

import numpy as np
import torch

from medsam_kit.engine.augment import map_boxes, map_points
from medsam_kit.engine.coarse import coarse_logit_chunks
from medsam_kit.methods.supervised import inclusive_pixel_boxes
from medsam_kit.prompts import pcsw_prompts


@dataclass(frozen=True)
class VolumePrompt:
    """The PCSW prompt of one class of one volume, in prepared-volume pixels.

    Attributes:
        cls: class index (coarse channel, ``1..K``).
        box: ``(x0, y0, x1, y1)`` inclusive-exclusive on the key slice.
        point: ``(x, y)`` pixel-index positive point on the key slice.
        start, stop: slices ``[start, stop)`` the prompt applies to (the accepted window; the key
            slice alone for a fallback prompt).
        key_slice: the slice the box and point were taken from.
        slices: ``((z, box, point), ...)``: the accepted component's box and interior point on each
            slice it touches (:attr:`medsam_kit.prompts.pcsw.PcswPrompt.slices`).
    """

    cls: int
    box: tuple[float, float, float, float]
    point: tuple[float, float]
    start: int
    stop: int
    key_slice: int
    slices: tuple[tuple[int, tuple[float, float, float, float], tuple[float, float]], ...] = ()


def coarse_class_volume(model, image: torch.Tensor, batch_size: int = 8, pad_value: float = 0.0,
                        autocast: Callable | None = None) -> np.ndarray:
    """Coarse-head class indices ``(Z, Y, X)`` uint8 (0 background, ``k`` = channel ``k``) of a volume
    (arguments of :func:`medsam_kit.engine.coarse.coarse_logit_chunks`)."""
    chunks = coarse_logit_chunks(model, image, batch_size, pad_value, autocast)
    return torch.cat([logits.argmax(1).to(torch.uint8).cpu() for logits in chunks]).numpy()


class PcswCache:
    """PCSW prompts per unlabeled volume, recomputed when ``refresh`` optimizer steps old.

    Args:
        coarse_volume: ``case_id -> (Z, Y, X)`` class-index labels of the volume (one teacher pass).
        num_classes: K; prompts are made for classes ``1..K``.
        refresh: steps after which a volume's prompts are recomputed (0: never).
        tau, min_voxels: PCSW continuity threshold and smallest object (:func:`pcsw_prompts`).
        fallback: also use fallback prompts (no window qualified: the largest 2D component), on
            their key slice only. Off by default: a class whose coarse mask is no coherent object
            gives no trustworthy pseudo-label.

    Attributes:
        computed: volumes labelled so far (for tests and logs).
    """

    def __init__(self, coarse_volume: Callable[[str], np.ndarray], num_classes: int, refresh: int = 200,
                 tau: float = 0.8, min_voxels: int = 10, fallback: bool = False) -> None:
        if refresh < 0:
            raise ValueError(f"pcsw_refresh must be >= 0 steps (0: never refresh), got {refresh}")
        self.coarse_volume = coarse_volume
        self.num_classes = int(num_classes)
        self.refresh = int(refresh)
        self.tau, self.min_voxels, self.fallback = float(tau), int(min_voxels), bool(fallback)
        self.entries: dict[str, tuple[int, list[VolumePrompt]]] = {}
        self.computed = 0

    def prompts(self, case_id: str, step: int) -> list[VolumePrompt]:
        """The prompts of ``case_id`` at optimizer step ``step`` (computed now when missing or stale)."""
        entry = self.entries.get(case_id)
        if entry is None or (self.refresh > 0 and step - entry[0] >= self.refresh):
            entry = (int(step), self._compute(case_id))
            self.entries[case_id] = entry
        return entry[1]

    def _compute(self, case_id: str) -> list[VolumePrompt]:
        labels = self.coarse_volume(case_id)
        self.computed += 1
        results = pcsw_prompts(labels, classes=range(1, self.num_classes + 1), tau=self.tau,
                               min_voxels=self.min_voxels)
        out = []
        for cls, r in results.items():
            if r is None or (r.fallback and not self.fallback):
                continue
            start, stop = r.window if r.window is not None else (r.slice_index, r.slice_index + 1)
            slices = tuple((int(z), b.as_tuple(), tuple(float(v) for v in pt)) for z, b, pt in r.slices)
            out.append(VolumePrompt(cls, r.box.as_tuple(), tuple(r.point), int(start), int(stop), r.slice_index,
                                    slices))
        return out

    def state_dict(self) -> dict:
        """Plain data: ``{case_id: [step, [prompt tuples]]}`` and the compute count."""
        return {"entries": {cid: [step, [_plain(astuple(p)) for p in prompts]]
                            for cid, (step, prompts) in self.entries.items()},
                "computed": self.computed}

    def load_state_dict(self, state: dict) -> None:
        def prompt(c, box, point, start, stop, key, slices=()):
            slices = tuple((int(z), tuple(sb), tuple(sp)) for z, sb, sp in slices)
            return VolumePrompt(int(c), tuple(box), tuple(point), int(start), int(stop), int(key), slices)

        self.entries = {cid: (int(step), [prompt(*p) for p in prompts])
                        for cid, (step, prompts) in state.get("entries", {}).items()}
        self.computed = int(state.get("computed", 0))


def _plain(value):
    """Tuples -> lists, recursively (the cache state is plain data)."""
    return [_plain(v) for v in value] if isinstance(value, tuple | list) else value


def crop_prompts(prompts: Sequence[Sequence[VolumePrompt]], origins: torch.Tensor, matrices: torch.Tensor,
                 image_size: int, min_inside: float = 0.5, per_slice: bool = False):
    """Decoder prompts of a weak-view batch from the volumes' PCSW prompts (module docstring).

    Args:
        prompts: per sample, its volume's :class:`VolumePrompt` list.
        origins: ``(B, 3)`` int ``(z, y, x)`` crop origins in the prepared volume (``z``: the slice).
        matrices: ``(B, 2, 3)`` weak-view warps (:func:`medsam_kit.methods.sss.views.weak_view`).
        image_size: S.
        min_inside: least share of the mapped box that must lie inside the image.
        per_slice: each slice's own box and point of the accepted component (module docstring);
            False: the key slice's box on every slice of the window.

    Returns:
        ``(index, classes, boxes, points, point_labels)`` CPU tensors: ``(P,)`` sample, ``(P,)`` class
        index, ``(P, 4)`` float32 inclusive corner pixels (the decoder's convention), ``(P, 1, 2)``
        float32 points and ``(P, 1)`` int64 labels (1, or -1 = padding where no point applies);
        None when no prompt applies.
    """
    rows = []
    origins = torch.as_tensor(origins).cpu().long()
    for b, volume_prompts in enumerate(prompts):
        z, y0, x0 = (int(v) for v in origins[b])
        for p in volume_prompts:
            if per_slice and p.slices:
                found = [(sb, sp) for k, sb, sp in p.slices if k == z]
                if found:
                    (bx0, by0, bx1, by1), (px, py) = found[0]
                    rows.append((b, p.cls, (bx0 - x0, by0 - y0, bx1 - x0, by1 - y0), (px - x0, py - y0), True))
            elif p.start <= z < p.stop:
                box = (p.box[0] - x0, p.box[1] - y0, p.box[2] - x0, p.box[3] - y0)
                rows.append((b, p.cls, box, (p.point[0] - x0, p.point[1] - y0), z == p.key_slice))
    if not rows:
        return None
    index = torch.tensor([r[0] for r in rows], dtype=torch.int64)
    size = (image_size, image_size)
    mats = matrices.cpu()[index]
    mapped = map_boxes(torch.tensor([r[2] for r in rows], dtype=torch.float64), mats, size)
    clipped = mapped.clamp(0, image_size)
    area = lambda t: (t[:, 2] - t[:, 0]).clamp_min(0) * (t[:, 3] - t[:, 1]).clamp_min(0)  # noqa: E731
    keep = (area(clipped) >= min_inside * area(mapped)) & (clipped[:, 2] - clipped[:, 0] >= 1) \
        & (clipped[:, 3] - clipped[:, 1] >= 1)
    if not bool(keep.any()):
        return None
    points = map_points(torch.tensor([[r[3]] for r in rows], dtype=torch.float64), mats, size)[:, 0]
    inside = (points >= 0).all(1) & (points <= image_size - 1).all(1)
    use_point = torch.tensor([r[4] for r in rows]) & inside
    boxes = torch.from_numpy(inclusive_pixel_boxes(clipped.numpy(), image_size)).float()
    classes = torch.tensor([r[1] for r in rows], dtype=torch.int64)
    point_labels = torch.where(use_point, 1, -1).long()[:, None]
    return index[keep], classes[keep], boxes[keep], points.float()[keep, None], point_labels[keep]
