"""Synthetic BraTS phantoms: skull-stripped multi-parametric brain MRI with a glioma.

Each case is one folder in the BraTS raw layout (docs/design.md §4) with four co-registered
modalities and a segmentation:

* ``naming="2023"``: ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz``,
  labels 1 NCR, 2 ED, 3 ET;
* ``naming="2021"``: ``BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz``,
  labels 1 NCR, 2 ED, 4 ET (3 unused).

What is simulated:

* Grid: 1 mm isotropic like the real data, but a **smaller field of view, 96 × 96 × 72 voxels
  (x, y, z; array ``(Z, Y, X)`` = ``(72, 96, 96)``)** instead of 240 × 240 × 155, so a case takes
  well under a second. Identity direction in LPS and origin ``(0, -(ny - 1), 0)``, which is what
  SimpleITK reports for the real (SRI24-registered) files (``(0, -239, 0)`` there).
* Anatomy (a scaled-down brain): irregular brain mask, cortical grey matter with a gyral
  white/grey boundary, sulcal and interhemispheric CSF, two lateral ventricles with choroid
  plexus, deep grey nuclei, white matter.
* Tumour: an irregular core (smooth-field distorted ellipsoid) of varying size and location,
  either a necrotic core (label NCR) inside an enhancing rim (ET), a solid enhancing tumour
  without necrosis, or a non-enhancing tumour (NCR only); vasogenic edema (ED) around it that
  spreads through white matter and spares cortex and CSF; sometimes a second small focus.
* Contrasts: per-tissue relative intensities for T1, T1c, T2 and FLAIR (CSF dark on T1/FLAIR
  and bright on T2; NCR dark on T1c and bright on T2; ET bright on T1c only; ED bright on T2
  and FLAIR, not on T1c). Confusable neighbours: enhancing choroid plexus and superficial veins
  (bright on T1c, not tumour) and small periventricular white-matter hyperintensities (bright on
  FLAIR, not edema).
* Acquisition: tissue texture, partial-volume blur, an independent multiplicative bias field,
  Rician noise and an arbitrary intensity scale per modality; skull-stripped (exactly 0 outside
  the brain). Images are **int16** (like the BraTS 2021 release), the seg is uint8.

What is not simulated: skull, scalp and the registration/resampling of the real pipeline,
mass effect (the tumour does not displace the ventricles), haemorrhage and calcification,
multi-site scanner differences beyond scale/bias/noise, and the real 240 × 240 × 155 size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from medsam_kit.data.phantoms.common import bias_field, ellipsoid, partial_volume, rician_noise, smooth_field
from medsam_kit.io import Geometry, Volume, write_volume

SHAPE_ZYX = (72, 96, 96)
DEFAULT_CASES = 6

#: naming -> (case-id format, separator before the suffix, modality suffixes in channel order, ET value)
_NAMINGS: dict[str, tuple[str, str, tuple[str, ...], int]] = {
    "2023": ("BraTS-GLI-{index:05d}-000", "-", ("t1n", "t1c", "t2w", "t2f"), 3),
    "2021": ("BraTS2021_{index:05d}", "_", ("t1", "t1ce", "t2", "flair"), 4),
}

# Tissue classes of the simulated anatomy (internal; labels are derived from them).
BG, CSF, GM, WM, DEEP_GM, NCR, NET, ED, ET, PLEXUS, WMH = range(11)
# Relative intensities (WM ≈ 1 on T1) per modality in channel order T1, T1c, T2, FLAIR. Rough
# literature-style ratios: CSF dark on T1 and FLAIR (fluid suppressed) but brightest on T2;
# necrosis dark on T1c, bright on T2; enhancing tumour and choroid plexus/veins bright on T1c
# only; edema and WM hyperintensities bright on T2 and FLAIR.
_CONTRAST = np.zeros((11, 4))
_CONTRAST[CSF] = (0.30, 0.30, 2.00, 0.22)
_CONTRAST[GM] = (0.62, 0.66, 1.20, 1.02)
_CONTRAST[WM] = (1.00, 1.00, 0.80, 0.85)
_CONTRAST[DEEP_GM] = (0.72, 0.75, 1.05, 1.00)
_CONTRAST[NCR] = (0.40, 0.35, 1.75, 1.05)
_CONTRAST[NET] = (0.55, 0.60, 1.45, 1.30)
_CONTRAST[ED] = (0.70, 0.72, 1.50, 1.40)
_CONTRAST[ET] = (0.62, 1.50, 1.20, 1.20)
_CONTRAST[PLEXUS] = (0.65, 1.55, 0.60, 0.70)
_CONTRAST[WMH] = (0.85, 0.88, 1.30, 1.35)


def generate(out_dir: Path, *, cases: int | None = None, seed: int = 0,
             progress: Callable[[int, int], None] | None = None, naming: str = "2023", **options) -> None:
    """Write ``cases`` BraTS-like cases under ``out_dir`` (one folder per case).

    Args:
        out_dir: destination root; case folders are created inside it.
        cases: number of cases (default 6).
        seed: the same seed gives identical files; case ``i`` depends only on ``(seed, i)``.
        progress: optional ``progress(done, total)`` called after each case.
        naming: '2023' (``BraTS-GLI-XXXXX-000``, ET = 3) or '2021' (``BraTS2021_XXXXX``, ET = 4).
        options: none are accepted (an unknown option is an error).
    """
    if options:
        raise ValueError(f"brats phantoms take no option(s) {', '.join(sorted(options))}; known: naming")
    if naming not in _NAMINGS:
        raise ValueError(f"brats phantoms: naming must be one of {', '.join(_NAMINGS)}, got {naming!r}")
    case_format, sep, suffixes, et_value = _NAMINGS[naming]
    total = DEFAULT_CASES if cases is None else cases
    geometry = Geometry(spacing=(1.0, 1.0, 1.0), origin=(0.0, -(SHAPE_ZYX[1] - 1.0), 0.0))
    for index in range(total):
        images, seg = make_case(np.random.default_rng([seed, index]), et_value=et_value)
        case_id = case_format.format(index=index)
        folder = Path(out_dir) / case_id
        for suffix, image in zip(suffixes, images, strict=True):
            write_volume(folder / f"{case_id}{sep}{suffix}.nii.gz", Volume(image, geometry))
        write_volume(folder / f"{case_id}{sep}seg.nii.gz", Volume(seg, geometry))
        if progress is not None:
            progress(index + 1, total)


def make_case(rng: np.random.Generator, et_value: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """One phantom case in memory.

    Returns:
        ``images`` int16 ``(4, Z, Y, X)`` in channel order T1, T1c, T2, FLAIR (0 outside the
        brain) and ``seg`` uint8 ``(Z, Y, X)`` with 0 background, 1 NCR, 2 ED, ``et_value`` ET.
    """
    tissue, brain, depth = _anatomy(rng)
    _add_tumour(rng, tissue, brain, depth)
    seg = np.zeros(SHAPE_ZYX, np.uint8)
    seg[(tissue == NCR) | (tissue == NET)] = 1
    seg[tissue == ED] = 2
    seg[tissue == ET] = et_value
    return _render(rng, tissue, brain), seg


def _anatomy(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue class map ``(Z, Y, X)`` int8, brain mask and depth below the brain surface (mm)."""
    shape = SHAPE_ZYX
    centre = np.array([shape[0] * 0.47, shape[1] * 0.5, shape[2] * 0.5]) + rng.uniform(-2, 2, 3)
    radii = np.array([29.0, 42.0, 36.0]) * rng.uniform(0.9, 1.03, 3)
    brain = ellipsoid(shape, centre, radii, distortion=0.035 * smooth_field(rng, shape, 6)) < 0
    brain[[0, -1]] = brain[:, [0, -1]] = brain[:, :, [0, -1]] = False  # keep a background frame
    brain = ndimage.binary_opening(brain, iterations=2)
    # Depth below the brain surface (mm) organises the cortex and the subarachnoid CSF.
    depth = ndimage.distance_transform_edt(brain)
    tissue = np.where(brain, WM, BG).astype(np.int8)

    # Cortex of ~2.5 mm plus gyri: a smooth field pushes the GM/WM boundary in and out.
    gyri = np.clip(smooth_field(rng, shape, 1.8), 0, None)
    cortex = brain & (depth < rng.uniform(2.2, 3.0) + 2.0 * gyri)
    tissue[cortex] = GM
    # Sulci: thin CSF sheets (near-zero set of a smooth field) inside the cortical band.
    sulci = cortex & (np.abs(smooth_field(rng, shape, 3.0)) < 0.12) & (depth < 6)
    zz, _, xx = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    # Interhemispheric fissure: superior midline (z grows superiorly with identity LPS direction).
    midline = np.abs(xx - centre[2] - 1.5 * smooth_field(rng, shape, 8)) < 1.0
    fissure = brain & midline & (zz > centre[0] - 4) & (depth < 18)
    tissue[sulci | fissure | (brain & (depth < 1.2))] = CSF

    # Deep grey nuclei (thalamus / basal ganglia) and lateral ventricles, mirrored left/right.
    for side in (-1, 1):
        offset = np.array([-3.0, 3.0, side * rng.uniform(8, 11)])
        nuclei = ellipsoid(shape, centre + offset, np.array([6.0, 9.0, 5.0]) * rng.uniform(0.85, 1.15, 3)) < 0
        tissue[nuclei & brain] = DEEP_GM
        v_radii = np.array([5.0, 15.0, 3.2]) * rng.uniform(0.8, 1.3, 3)
        v_centre = centre + np.array([5.0, -2.0, side * rng.uniform(4.5, 6.0)])
        ventricle = ellipsoid(shape, v_centre, v_radii, distortion=0.08 * smooth_field(rng, shape, 3)) < 0
        tissue[ventricle & brain] = CSF
        plexus = ellipsoid(shape, v_centre + np.array([-1.0, 6.0, 0.0]), np.array([1.6, 3.5, 1.6])) < 0
        tissue[plexus & ventricle & brain] = PLEXUS

    # Superficial veins: curves where two smooth fields both cross zero, near the surface.
    sheet_a, sheet_b = smooth_field(rng, shape, 4), smooth_field(rng, shape, 4)
    veins = (np.abs(sheet_a) < 0.13) & (np.abs(sheet_b) < 0.13) & (depth < 5)
    tissue[ndimage.binary_dilation(veins) & brain] = PLEXUS

    # White-matter hyperintensities (small-vessel disease, periventricular caps): FLAIR-bright
    # mimics of edema, common in the older patients who have gliomas.
    wm = np.flatnonzero(tissue == WM)
    for _ in range(rng.integers(2, 9)):
        where = np.array(np.unravel_index(rng.choice(wm), shape), dtype=float)
        blob = ellipsoid(shape, where, rng.uniform(1.5, 5.0, 3)) < 0
        tissue[blob & (tissue == WM)] = WMH
    return tissue, brain, depth


def _add_tumour(rng: np.random.Generator, tissue: np.ndarray, brain: np.ndarray, depth: np.ndarray) -> None:
    """Paint one glioma (sometimes with a second small focus) into ``tissue`` in place."""
    shape = tissue.shape
    kind = rng.choice(["necrotic", "solid", "non-enhancing"], p=[0.6, 0.25, 0.15])
    lesions = [rng.uniform(5.0, 15.0)]  # core radius in mm: small to large tumours
    if rng.random() < 0.2:
        lesions.append(rng.uniform(2.5, 4.5))
    parenchyma = np.isin(tissue, (WM, DEEP_GM, GM, WMH))
    for core_radius in lesions:
        candidates = np.flatnonzero(parenchyma & (depth > max(8.0, 0.7 * core_radius)))
        centre = np.array(np.unravel_index(rng.choice(candidates), shape), dtype=float)
        core_radii = core_radius * rng.uniform(0.75, 1.25, 3)
        distortion = rng.uniform(0.12, 0.3) * smooth_field(rng, shape, 3)
        core = (ellipsoid(shape, centre, core_radii, distortion=distortion) < 0) & brain & (tissue != CSF)
        edema = ellipsoid(shape, centre, core_radii * rng.uniform(1.4, 2.4, 3),
                          distortion=rng.uniform(0.2, 0.4) * smooth_field(rng, shape, 5)) < 0
        # Vasogenic edema tracks white matter and spares cortex and CSF.
        tissue[edema & np.isin(tissue, (WM, DEEP_GM, WMH))] = ED
        if kind == "non-enhancing":
            tissue[core] = NET
            continue
        tissue[core] = ET
        if kind == "necrotic":
            rim = rng.uniform(1.5, 3.5)  # enhancing rim thickness, mm
            inner = ndimage.distance_transform_edt(core) > rim
            tissue[inner] = NCR


def _render(rng: np.random.Generator, tissue: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Four int16 modalities ``(4, Z, Y, X)`` from the tissue map."""
    shape = tissue.shape
    # Per-scan contrast variability (sequence parameters differ between sites).
    contrast = _CONTRAST * rng.uniform(0.93, 1.07, _CONTRAST.shape)
    values = contrast[tissue]  # (Z, Y, X, 4)
    # Edema fades towards its periphery: blend its contrast towards white matter with the
    # distance from the tumour core, so the WT boundary is not a sharp step on FLAIR/T2.
    edema = tissue == ED
    core_distance = ndimage.distance_transform_edt(~np.isin(tissue, (NCR, NET, ET)))
    weight = 0.5 + 0.5 * np.exp(-core_distance[edema] / 6.0)[:, None]
    values[edema] = contrast[WM] + weight * (contrast[ED] - contrast[WM])
    texture = 1.0 + 0.03 * smooth_field(rng, shape, 1.2)
    tumour = np.isin(tissue, (NCR, NET, ET, ED))
    texture[tumour] += 0.06 * smooth_field(rng, shape, 1.0)[tumour]  # heterogeneous tumour tissue
    images = np.zeros((4, *shape), np.int16)
    for channel in range(4):
        clean = partial_volume(values[..., channel] * texture, (0.6, 0.6, 0.6))
        noisy = rician_noise(rng, clean * bias_field(rng, shape, strength=0.3), sigma=0.03)
        scale = rng.uniform(400, 1200)  # MRI intensities have no absolute unit; vary per scan
        image = np.clip(np.rint(noisy * scale), 1, np.iinfo(np.int16).max)
        images[channel] = np.where(brain, image, 0)  # skull stripping
    return images
