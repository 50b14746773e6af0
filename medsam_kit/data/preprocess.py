"""Preprocessing: a plan derived from the fingerprint, applied case by case, and its inverse.

Steps of :meth:`Preprocessor.apply`, in order (nnU-Net normalises before resampling too, so
masks and percentiles are taken on the acquired voxels):

1. **Orientation** (only when ``plan.orientation`` is set, e.g. ``'LPS'``): ``SimpleITK.DICOMOrient``
   permutes/flips axes so array Z is the named slice axis. The default keeps the acquisition grid:
   SAM-family models segment *acquired* slices (ACDC short-axis stacks are oblique; reorienting
   them to LPS would slice them across the acquisition planes and mix 5–10 mm gaps into every slice).
2. **Intensity normalisation per channel**, by modality (MONAI transforms):
   CT → window ``[lo, hi]`` HU (default: the fingerprint's foreground 0.5/99.5 percentiles, like
   nnU-Net CTNormalization; or a user window such as brain 0..80) scaled to ``[0, 1]``;
   MRI → clip to the case's 0.5/99.5 percentiles inside the nonzero mask, then z-score (background
   zeros stay 0 when the mask is used); EM → clip to the case's 0.5/99.5 percentiles, scale to ``[0, 1]``.
3. **In-plane resampling** to ``plan.target_spacing_xy`` (SimpleITK, linear for images, nearest for
   labels; origin and direction kept, size chosen to cover the same extent). The through-plane
   spacing is kept by default: 2D/2.5D SAM models work slice by slice, so resampling along Z
   would only interpolate new slices from anisotropic data (5–10 mm) without adding information.

Every preprocessed case records the original grid in ``case.meta["preprocessing"]``;
:func:`invert_preprocessing` maps a label map back onto it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medsam_kit.data.case import Case
from medsam_kit.data.datasets import SPECS
from medsam_kit.data.fingerprint import PERCENTILES, DatasetFingerprint
from medsam_kit.io._sitk import geometry_from_image, image_from_array
from medsam_kit.io.atomic import atomic_write_text
from medsam_kit.io.geometry import Geometry

PLAN_VERSION = 1
SCHEMES = ("ct_window", "zscore", "percentile_scale")
# nnU-Net uses the nonzero mask for z-scoring when it covers less than 3/4 of the image (there via
# the crop-to-nonzero size); skull-stripped BraTS (~15 % nonzero) gets the mask, cine MRI does not.
NONZERO_MASK_THRESHOLD = 0.75


@dataclass(frozen=True)
class ChannelNormalization:
    """How one channel's intensities are normalised.

    Attributes:
        scheme: 'ct_window' (clip to ``window`` then scale to [0, 1]), 'zscore' (clip to the case's
            ``percentiles`` then subtract mean / divide by std) or 'percentile_scale' (clip to the
            case's ``percentiles``, scale to [0, 1]).
        window: ``(lo, hi)`` in the image's units (HU for CT), for 'ct_window'.
        percentiles: ``(lower, upper)`` in percent, for 'zscore' and 'percentile_scale'.
        use_nonzero_mask: compute statistics on nonzero voxels only and keep zeros at 0 ('zscore').
    """

    scheme: str
    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] | None = None
    use_nonzero_mask: bool = False

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"normalisation scheme {self.scheme!r} is not one of {', '.join(SCHEMES)}")
        if self.scheme == "ct_window" and (self.window is None or not self.window[1] > self.window[0]):
            raise ValueError(f"a CT window needs lo < hi, got {self.window}")
        if self.scheme != "ct_window" and self.percentiles is None:
            raise ValueError(f"scheme {self.scheme!r} needs percentiles (lower, upper)")


@dataclass(frozen=True)
class PreprocessingPlan:
    """Everything that decides the preprocessed arrays (its :meth:`digest` keys the cache).

    Attributes:
        dataset, modality, channel_names, label_names: copied from the fingerprint.
        normalization: one :class:`ChannelNormalization` per channel.
        target_spacing_xy: in-plane ``(x, y)`` spacing in mm, or None to keep each case's.
        target_spacing_z: through-plane spacing in mm, or None (default) to keep each case's.
        orientation: DICOM orientation code (e.g. 'LPS') to reorient to, or None to keep the
            acquisition grid (default).
    """

    dataset: str
    modality: str
    channel_names: tuple[str, ...]
    label_names: dict[int, str]
    normalization: tuple[ChannelNormalization, ...]
    target_spacing_xy: tuple[float, float] | None = None
    target_spacing_z: float | None = None
    orientation: str | None = None
    version: int = PLAN_VERSION

    def to_dict(self) -> dict:
        data = asdict(self)
        data["label_names"] = {str(k): v for k, v in self.label_names.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessingPlan:
        if data.get("version") != PLAN_VERSION:
            raise ValueError(f"plan version {data.get('version')!r} is not {PLAN_VERSION}; re-run prepare")
        norms = tuple(
            ChannelNormalization(
                n["scheme"],
                _pair(n.get("window")),
                _pair(n.get("percentiles")),
                bool(n.get("use_nonzero_mask", False)),
            )
            for n in data["normalization"]
        )
        return cls(
            dataset=data["dataset"],
            modality=data["modality"],
            channel_names=tuple(data["channel_names"]),
            label_names={int(k): v for k, v in data["label_names"].items()},
            normalization=norms,
            target_spacing_xy=_pair(data.get("target_spacing_xy")),
            target_spacing_z=data.get("target_spacing_z"),
            orientation=data.get("orientation"),
        )

    def digest(self) -> str:
        """Short stable hash of the plan (equal plans give equal digests)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def save(self, path: str | os.PathLike) -> Path:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PreprocessingPlan:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a medsam_kit plan ({exc}); delete it and re-run prepare") from exc


def _pair(values) -> tuple[float, float] | None:
    return None if values is None else (float(values[0]), float(values[1]))


def _oriented_spacing(spacing: tuple[float, ...], direction, code: str | None) -> tuple[float, float, float]:
    """Spacing ``(x, y, z)`` after DICOMOrient to ``code`` (a one-voxel image carries the geometry)."""
    if code is None:
        return tuple(spacing)
    probe = sitk.Image(1, 1, 1, sitk.sitkUInt8)
    probe.SetSpacing(spacing)
    probe.SetDirection(tuple(np.asarray(direction, dtype=float).reshape(-1)))
    return sitk.DICOMOrient(probe, code).GetSpacing()


def make_plan(
    fingerprint: DatasetFingerprint,
    *,
    target_spacing_xy: float | tuple[float, float] | None = None,
    target_spacing_z: float | None = None,
    ct_window: tuple[float, float] | None = None,
    orientation: str | None = None,
) -> PreprocessingPlan:
    """Derive the preprocessing plan from a fingerprint (see module docstring for the rules).

    Args:
        fingerprint: the dataset's :class:`DatasetFingerprint`.
        target_spacing_xy: in-plane spacing in mm (one value for x and y, or ``(x, y)``); default:
            the median in-plane spacing of the cases (after ``orientation``, when given).
        target_spacing_z: through-plane spacing in mm; default None keeps each case's.
        ct_window: ``(lo, hi)`` HU for CT (e.g. ``(0, 80)`` brain window); default: the dataset's
            own (:attr:`DatasetSpec.ct_window`, BHSD: subdural window) or else the foreground
            0.5/99.5 percentiles from the fingerprint (nnU-Net's rule).
        orientation: DICOM code such as 'LPS' to reorient every case to; default keeps the grid.

    Raises:
        ValueError: unknown modality, a CT window for a non-CT dataset, no foreground statistics
            to derive a CT window from, or a bad orientation code.
    """
    if orientation is not None:
        orientation = orientation.upper()
        axes = sorted({"L": 0, "R": 0, "P": 1, "A": 1, "S": 2, "I": 2}.get(c, -1) for c in orientation)
        if len(orientation) != 3 or axes != [0, 1, 2]:
            raise ValueError(
                f"orientation {orientation!r} must be a DICOM code with one of L/R, P/A, S/I each, "
                "e.g. 'LPS' or 'RAS'"
            )
    if target_spacing_xy is None:
        spacings = [_oriented_spacing(c.spacing, c.direction, orientation) for c in fingerprint.cases]
        median = np.median(spacings, axis=0)
        target_spacing_xy = (float(median[0]), float(median[1]))
    elif np.isscalar(target_spacing_xy):
        target_spacing_xy = (float(target_spacing_xy), float(target_spacing_xy))
    target_spacing_xy = _pair(target_spacing_xy)
    if min(target_spacing_xy) <= 0 or (target_spacing_z is not None and target_spacing_z <= 0):
        raise ValueError(f"target spacing must be positive, got {target_spacing_xy} / {target_spacing_z}")

    modality = fingerprint.modality.upper()
    if ct_window is not None and modality != "CT":
        raise ValueError(
            f"a CT window was given but dataset {fingerprint.dataset!r} is {modality}; drop --ct-window"
        )
    if ct_window is None and fingerprint.dataset in SPECS:
        ct_window = SPECS[fingerprint.dataset].ct_window
    median_nonzero = float(np.median([c.nonzero_fraction for c in fingerprint.cases]))
    norms = []
    for stats in fingerprint.intensity:
        if modality == "CT":
            window = ct_window or (stats["percentile_00_5"], stats["percentile_99_5"])
            if window[0] is None:
                raise ValueError(
                    f"dataset {fingerprint.dataset!r} has no foreground voxels to derive a CT window "
                    "from; pass one, e.g. --ct-window 0 80 (brain)"
                )
            norms.append(ChannelNormalization("ct_window", window=_pair(window)))
        elif modality == "MRI":
            norms.append(
                ChannelNormalization(
                    "zscore",
                    percentiles=PERCENTILES,
                    use_nonzero_mask=median_nonzero < NONZERO_MASK_THRESHOLD,
                )
            )
        elif modality == "EM":
            norms.append(ChannelNormalization("percentile_scale", percentiles=PERCENTILES))
        else:
            raise ValueError(
                f"dataset {fingerprint.dataset!r}: no normalisation for modality {modality!r}; "
                "expected CT, MRI or EM"
            )
    return PreprocessingPlan(
        dataset=fingerprint.dataset,
        modality=modality,
        channel_names=fingerprint.channel_names,
        label_names=dict(fingerprint.label_names),
        normalization=tuple(norms),
        target_spacing_xy=target_spacing_xy,
        target_spacing_z=target_spacing_z,
        orientation=orientation,
    )


# --------------------------------------------------------------------------- intensities
def normalize_channel(channel: np.ndarray, norm: ChannelNormalization) -> tuple[np.ndarray, dict]:
    """Normalise one ``(Z, Y, X)`` channel; returns float32 ``(Z, Y, X)`` and the values used."""
    # Imported here: monai.transforms takes seconds to import, and every CLI verb imports this module.
    from monai.transforms import NormalizeIntensity, ScaleIntensityRange, ScaleIntensityRangePercentiles
    from monai.utils import convert_to_numpy

    channel = np.asarray(channel, dtype=np.float32)
    if norm.scheme == "ct_window":
        lo, hi = norm.window
        out = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(channel[None])
        return convert_to_numpy(out, dtype=np.float32)[0], {"window": [lo, hi]}
    mask = channel != 0 if norm.use_nonzero_mask else np.ones(channel.shape, bool)
    values = channel[mask]
    if values.size == 0 or values.min() == values.max():  # constant: nothing to scale (MONAI would warn)
        return np.zeros_like(channel), {"constant": True}
    if norm.scheme == "percentile_scale":
        out = ScaleIntensityRangePercentiles(
            lower=norm.percentiles[0], upper=norm.percentiles[1], b_min=0.0, b_max=1.0, clip=True
        )(channel[None])
        return convert_to_numpy(out, dtype=np.float32)[0], {"percentiles": list(norm.percentiles)}
    # zscore: MONAI's percentile transform has no mask, so the masked clip is done here.
    lo, hi = np.percentile(values, norm.percentiles)
    clipped = channel.copy()
    clipped[mask] = np.clip(values, lo, hi)
    out = NormalizeIntensity(nonzero=norm.use_nonzero_mask)(clipped[None])
    kept = clipped[mask]
    return convert_to_numpy(out, dtype=np.float32)[0], {
        "clip": [float(lo), float(hi)],
        "mean": float(kept.mean()),
        "std": float(kept.std()),
    }


# --------------------------------------------------------------------------- geometry
def _to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    return image_from_array(array, geometry, vector=array.ndim == 4)


def _from_sitk(image: sitk.Image, channels_first: bool) -> tuple[np.ndarray, Geometry]:
    array = sitk.GetArrayFromImage(image)
    if channels_first:  # vector pixels come back last; a one-component vector comes back without the axis
        array = np.moveaxis(array, -1, 0) if array.ndim == 4 else array[None]
    return array, geometry_from_image(image)


def _resample(image: sitk.Image, size_xyz, spacing, origin, direction, linear: bool) -> sitk.Image:
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(s) for s in size_xyz])
    resampler.SetOutputSpacing([float(s) for s in spacing])
    resampler.SetOutputOrigin([float(o) for o in origin])
    resampler.SetOutputDirection([float(d) for d in np.asarray(direction).reshape(-1)])
    resampler.SetInterpolator(sitk.sitkLinear if linear else sitk.sitkNearestNeighbor)
    # Centres of the outermost new voxels may fall up to half a voxel outside the old grid.
    resampler.SetUseNearestNeighborExtrapolator(True)
    return resampler.Execute(image)


def resample_to_spacing(
    array: np.ndarray, geometry: Geometry, spacing: tuple[float, float, float], *, is_label: bool = False
) -> tuple[np.ndarray, Geometry]:
    """Resample a ``(Z, Y, X)`` or ``(C, Z, Y, X)`` array to ``spacing`` ``(x, y, z)`` mm.

    Origin and direction are kept; the new size is ``round(size * old_spacing / spacing)`` per axis
    so the grid covers the same physical extent. Linear interpolation, or nearest for labels.
    """
    image = _to_sitk(array, geometry)
    old_size = np.asarray(image.GetSize(), dtype=float)
    new_size = np.maximum(1, np.round(old_size * np.asarray(geometry.spacing) / np.asarray(spacing)))
    out = _resample(image, new_size, spacing, geometry.origin, geometry.direction_matrix, linear=not is_label)
    return _from_sitk(out, channels_first=array.ndim == 4)


def reorient(array: np.ndarray, geometry: Geometry, code: str) -> tuple[np.ndarray, Geometry]:
    """Permute/flip a ``(Z, Y, X)`` or ``(C, Z, Y, X)`` array so its axes follow DICOM ``code`` (lossless)."""
    return _from_sitk(sitk.DICOMOrient(_to_sitk(array, geometry), code), channels_first=array.ndim == 4)


# --------------------------------------------------------------------------- apply / invert
class Preprocessor:
    """Apply a :class:`PreprocessingPlan` to cases: ``Preprocessor(plan).apply(case) -> Case``."""

    def __init__(self, plan: PreprocessingPlan) -> None:
        self.plan = plan
        self.digest = plan.digest()

    def apply(self, case: Case) -> Case:
        """Preprocess one case.

        Returns:
            A new :class:`Case`: image float32 ``(C, Z', Y', X')``, label uint8 ``(Z', Y', X')`` (or None),
            geometry of the new grid, and ``meta["preprocessing"]`` with the original geometry and
            shape, the plan digest and the per-channel normalisation values used.
        """
        plan = self.plan
        if tuple(case.channel_names) != tuple(plan.channel_names):
            raise ValueError(
                f"case {case.case_id}: channels {list(case.channel_names)} but the plan expects "
                f"{list(plan.channel_names)}; prepare it with its own dataset's plan"
            )
        image, label, geometry = case.image.astype(np.float32), case.label, case.geometry
        if label is not None and label.size and (label.min() < 0 or label.max() > 255):
            raise ValueError(
                f"case {case.case_id}: label values {int(label.min())}..{int(label.max())} do not fit "
                "uint8; preprocessed labels are stored as uint8 (0..255)"
            )
        if plan.orientation is not None:
            image, geometry = reorient(image, geometry, plan.orientation)
            if label is not None:
                label, _ = reorient(label, case.geometry, plan.orientation)
        channels, details = [], []
        for channel, norm in zip(image, plan.normalization, strict=True):
            normalized, used = normalize_channel(channel, norm)
            channels.append(normalized)
            details.append({"scheme": norm.scheme, **used})
        image = np.stack(channels)

        target = (
            *(plan.target_spacing_xy or geometry.spacing[:2]),
            plan.target_spacing_z or geometry.spacing[2],
        )
        resampled = not np.allclose(geometry.spacing, target, rtol=1e-5, atol=0)
        if resampled:
            image, new_geometry = resample_to_spacing(image, geometry, target)
            if label is not None:
                label, _ = resample_to_spacing(label, geometry, target, is_label=True)
            geometry = new_geometry
        info = {
            "plan_digest": self.digest,
            "orientation": plan.orientation,
            "resampled": bool(resampled),
            "original_geometry": case.geometry.to_dict(),
            "original_shape_zyx": list(case.spatial_shape),
            "geometry": geometry.to_dict(),
            "shape_zyx": list(image.shape[1:]),
            "normalization": details,
        }
        return Case(
            case.case_id,
            np.ascontiguousarray(image, dtype=np.float32),
            geometry,
            tuple(case.channel_names),
            None if label is None else np.ascontiguousarray(label, dtype=np.uint8),
            dict(case.label_names or plan.label_names),
            {**case.meta, "preprocessing": info},
        )


def invert_preprocessing(pred_label: np.ndarray, preprocessed_case_meta: dict) -> np.ndarray:
    """Map a label map on the preprocessed grid back onto the case's original grid.

    Args:
        pred_label: ``(Z', Y', X')`` integer labels on the preprocessed grid.
        preprocessed_case_meta: ``case.meta`` of the preprocessed case (or its ``"preprocessing"`` entry).

    Returns:
        ``(Z, Y, X)`` labels on the original grid (same dtype as ``pred_label``). Exact when the
        preprocessed grid is the original one (no resampling); otherwise (resampled or reoriented)
        each label is resampled as a one-hot
        channel with linear interpolation in world space and the arg-max taken, which is smoother
        than nearest-neighbour when upsampling a coarse prediction.
    """
    info = preprocessed_case_meta.get("preprocessing", preprocessed_case_meta)
    shape = tuple(info["shape_zyx"])
    if tuple(pred_label.shape) != shape:
        raise ValueError(
            f"prediction shape {tuple(pred_label.shape)} != preprocessed grid {shape}; "
            "pass the label predicted on this case's preprocessed image"
        )
    source, target = Geometry.from_dict(info["geometry"]), Geometry.from_dict(info["original_geometry"])
    target_shape = tuple(info["original_shape_zyx"])
    if shape == target_shape and source.almost_equal(target):
        return pred_label.copy()
    values = np.unique(pred_label)
    one_hot = np.stack([(pred_label == v).astype(np.float32) for v in values])
    image = _to_sitk(one_hot, source)
    out = _resample(
        image, target_shape[::-1], target.spacing, target.origin, target.direction_matrix, linear=True
    )
    probabilities, _ = _from_sitk(out, channels_first=True)
    return values[np.argmax(probabilities, axis=0)].astype(pred_label.dtype)
