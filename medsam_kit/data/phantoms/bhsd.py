"""BHSD-like synthetic head CT with intracranial haemorrhage, in the BHSD raw layout.

Simulated (per volume, all drawn from ``default_rng([seed, index])``; the unlabeled pool uses
``default_rng([seed, index, 1])``):

* axial head CT ``(Z, Y, X)`` int16 in HU, 128² pixels of 0.9–1.2 mm and 20–32 slices of
  5 mm (each slice averages sub-slices across its thickness: through-plane partial volume);
  identity direction or a gantry tilt about the left-right axis (det +1); nonzero origin;
* an ellipsoidal head, scaled to the small field of view, in layers found from the distance
  to its surface: air (-1000), scalp, skull (dense tables ~1200–1500 HU around a ~700 HU
  diploe, varying thickness), a thin CSF rim, cortex (grey matter ~38–44 HU) folded by sulci
  (CSF ~0–10 HU), white matter (~27–33 HU), lateral and third ventricles, the interhemispheric
  fissure with a slightly dense falx, basal cisterns round the midbrain, and bone and air
  (sinuses, petrous ridges) in the skull-base slices;
* haemorrhages (50–85 HU, only slightly brighter than cortex): EDH biconvex lens under the
  skull, SDH crescent along the inner skull, IPH irregular blob with a hypodense oedema rim,
  IVH layering in the dependent (posterior) ventricles, SAH filling sulci / fissure / cisterns
  near a centre. Every 4th labeled volume has none, the others one lesion (mostly small) and
  40 % a second; the first 6 (and any 7 consecutive) labeled volumes hold all five types;
* PSF blur and slightly correlated Gaussian noise.

Labels (uint8 0 bg, 1 EDH, 2 IPH, 3 IVH, 4 SAH, 5 SDH) are the continuous lesion shapes at the
slice centres; where lesions overlap the first one keeps its voxels.

Not simulated: mass effect and midline shift, beam hardening and streaks, scanner-specific
reconstruction kernels and padding values, fractures, calcifications other than the falx,
realistic face/skull-base anatomy, and the true (large) head size: heads are scaled to the
~128-pixel grid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medsam_kit.data.phantoms.common import partial_volume, rotation_2d, smooth_field
from medsam_kit.io import Geometry, Volume, write_volume

DEFAULT_CASES = 8
#: Lesion types in label order (label value = position + 1), as in BHSD.
LESIONS = ("EDH", "IPH", "IVH", "SAH", "SDH")
_SUBSLICES = 3  # samples across a 5 mm slice: through-plane partial volume
_SLICE = 5.0


def generate(out_dir: Path, *, cases: int | None = None, seed: int = 0,
             progress: Callable[[int, int], None] | None = None, **options) -> None:
    """Write synthetic head CTs in the BHSD raw layout under ``out_dir``.

    Layout: ``images/ID.nii.gz`` (int16 HU, ``(Z, Y, X)``) with ``ground truths/ID.nii.gz``
    (uint8 labels) for ``cases`` labeled volumes, and ``unlabeled/ID.nii.gz`` for the pool. IDs
    are ``ID_`` + 8 hex digits derived from ``(seed, pool, index)``.

    Args:
        out_dir: destination root (created).
        cases: labeled volumes; None for :data:`DEFAULT_CASES`.
        seed: volume ``i`` depends only on ``(seed, i)``.
        progress: optional ``progress(done, total)`` after each volume (labeled + unlabeled).
        **options: ``unlabeled`` (int, default = ``cases``): size of the unlabeled pool.
    """
    unlabeled = options.pop("unlabeled", None)
    if options:
        raise ValueError(f"unknown BHSD phantom option(s) {sorted(options)}; the only option is 'unlabeled'")
    n_labeled = DEFAULT_CASES if cases is None else int(cases)
    n_unlabeled = n_labeled if unlabeled is None else int(unlabeled)
    if n_labeled < 1 or n_unlabeled < 0:
        raise ValueError(f"BHSD phantoms need cases >= 1 and unlabeled >= 0, "
                         f"got cases={n_labeled}, unlabeled={n_unlabeled}")
    out_dir = Path(out_dir)
    ids = _case_ids(seed, n_labeled, n_unlabeled)
    total = n_labeled + n_unlabeled
    for index in range(n_labeled):
        rng = np.random.default_rng([seed, index])
        ct, label, geometry = simulate_volume(rng, _planned_lesions(rng, index, seed))
        case_id = ids[("labeled", index)]
        write_volume(out_dir / "images" / f"{case_id}.nii.gz", Volume(ct, geometry))
        write_volume(out_dir / "ground truths" / f"{case_id}.nii.gz", Volume(label, geometry))
        if progress is not None:
            progress(index + 1, total)
    for index in range(n_unlabeled):
        rng = np.random.default_rng([seed, index, 1])
        lesions = [] if rng.random() < 0.25 else list(rng.choice(LESIONS, size=1 + (rng.random() < 0.4)))
        ct, _, geometry = simulate_volume(rng, lesions)
        write_volume(out_dir / "unlabeled" / f"{ids[('unlabeled', index)]}.nii.gz", Volume(ct, geometry))
        if progress is not None:
            progress(n_labeled + index + 1, total)


def _case_ids(seed: int, n_labeled: int, n_unlabeled: int) -> dict[tuple[str, int], str]:
    """Unique ``ID_xxxxxxxx`` names; a (rare) hash collision is resolved by rehashing with a salt."""
    ids: dict[tuple[str, int], str] = {}
    taken: set[str] = set()
    for key in [("labeled", i) for i in range(n_labeled)] + [("unlabeled", i) for i in range(n_unlabeled)]:
        salt = 0
        while True:
            digest = hashlib.sha1(f"bhsd-{seed}-{key[0]}-{key[1]}-{salt}".encode()).hexdigest()
            name = f"ID_{digest[:8]}"
            if name not in taken:
                break
            salt += 1
        ids[key] = name
        taken.add(name)
    return ids


def _planned_lesions(rng: np.random.Generator, index: int, seed: int) -> list[str]:
    """Lesion types of labeled volume ``index``: every 4th has none; the others cycle through
    the five types (so a default set holds all five) and get a random second lesion 40 % of
    the time."""
    if index % 4 == 3:
        return []
    ordinal = index - (index + 1) // 4  # how many lesion-bearing volumes come before this one
    lesions = [LESIONS[(ordinal + seed) % len(LESIONS)]]
    if rng.random() < 0.4:
        lesions.append(str(rng.choice(LESIONS)))
    return lesions


def simulate_volume(rng: np.random.Generator, lesions: list[str],
                    ) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """One head CT with the given lesion types.

    Returns:
        ``(ct, label, geometry)``: ``ct`` int16 HU ``(Z, Y, X)``, ``label`` uint8 ``(Z, Y, X)``
        with the values of :data:`LESIONS` (+1), and the grid's geometry.
    """
    nz, ny, nx = int(rng.integers(20, 33)), 128, 128
    pixel = float(rng.uniform(0.9, 1.2))
    head = _Head(rng, nz, ny, nx, pixel)
    hu, label = head.render(rng, lesions)
    # Sub-slices -> 5 mm slices (the labels were taken at the slice centres), then the PSF.
    hu = hu.reshape(nz, _SUBSLICES, ny, nx).mean(axis=1)
    hu = partial_volume(hu, (0.3, float(rng.uniform(0.5, 0.8)), float(rng.uniform(0.5, 0.8))))
    # CT noise is mildly correlated in-plane by the reconstruction kernel.
    hu += float(rng.uniform(3.0, 6.0)) * smooth_field(rng, hu.shape, (0.0, 0.6, 0.6))
    ct = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    tilt = 0.0 if rng.random() < 0.5 else float(np.deg2rad(rng.uniform(5.0, 20.0)))
    direction = np.eye(3)
    direction[1:, 1:] = rotation_2d(tilt)  # gantry tilt: rotation about the left-right (x) axis
    spacing = (pixel, pixel, _SLICE)
    centre_world = np.array([0.0, 20.0, 40.0]) + rng.normal(0.0, 10.0, 3)
    origin = centre_world - direction @ ((np.array([nx, ny, nz]) - 1) / 2 * np.array(spacing))
    return ct, label, Geometry(spacing, tuple(origin), tuple(map(tuple, direction)))


class _Head:
    """Continuous head model on the sub-slice grid ``(nz * S, Y, X)`` in mm relative to its centre
    (+z superior, +y posterior, +x left: the LPS axes of an untilted axial scan)."""

    def __init__(self, rng: np.random.Generator, nz: int, ny: int, nx: int, pixel: float) -> None:
        self.shape = (nz * _SUBSLICES, ny, nx)
        self.pixel = pixel
        sub = _SLICE / _SUBSLICES
        z = (np.arange(nz * _SUBSLICES) - (_SUBSLICES - 1) / 2) * sub  # slice k's centre at k * 5 mm
        extent = (nz - 1) * _SLICE
        self.ay = 0.44 * ny * pixel * rng.uniform(0.9, 1.0)  # half-length (AP), fills the FOV
        self.ax = self.ay * rng.uniform(0.78, 0.88)
        z_centre = extent * rng.uniform(0.2, 0.35)
        self.cz = extent * rng.uniform(0.92, 1.05) - z_centre  # vertex near the top slice
        self.zz = (z - z_centre).astype(np.float32)[:, None, None]
        y = (np.arange(ny) - (ny - 1) / 2) * pixel - rng.uniform(-5, 5)
        x = (np.arange(nx) - (nx - 1) / 2) * pixel - rng.uniform(-5, 5)
        self.yy = y.astype(np.float32)[None, :, None]
        self.xx = x.astype(np.float32)[None, None, :]
        self.atrophy = float(rng.uniform(0.0, 1.0))  # older brains: wider sulci and ventricles

        # Depth below the scalp surface (mm), first-order distance to the level set rho = 1.
        below = self.zz < 0
        zt = np.where(below, 0.35, 1.0) * self.zz / self.cz  # the skull base narrows slowly
        dzt = np.where(below, 0.35, 1.0) / self.cz
        distortion = 0.015 * self._field(rng, 10.0)
        rho = np.sqrt((self.xx / self.ax) ** 2 + (self.yy / self.ay) ** 2 + zt**2) + distortion
        grad = np.sqrt((self.xx / self.ax**2) ** 2 + (self.yy / self.ay**2) ** 2 + (zt * dzt) ** 2)
        self.depth = (1.0 - rho) * np.maximum(rho - distortion, 1e-3) / np.maximum(grad, 1e-6)
        self.scalp = float(rng.uniform(4.0, 7.0))
        self.skull = float(rng.uniform(5.0, 7.5)) * (1.0 + 0.15 * self._field(rng, 12.0))
        self.brain_depth = self.depth - self.scalp - self.skull  # >= 0 inside the inner table
        self.theta = np.arctan2(self.yy, self.xx)
        self.radius = np.hypot(self.yy, self.xx)

    def _field(self, rng: np.random.Generator, sigma_mm: float) -> np.ndarray:
        """Smooth unit-variance random field ``(nz * S, Y, X)`` with correlation length ``sigma_mm``."""
        sub = _SLICE / _SUBSLICES
        sigma_vox = (sigma_mm / sub, sigma_mm / self.pixel, sigma_mm / self.pixel)
        return _coarse_smooth_field(rng, self.shape, sigma_vox)

    def render(self, rng: np.random.Generator, lesions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """HU on the sub-slice grid ``(nz * S, Y, X)`` and labels ``(nz, Y, X)`` at slice centres."""
        depth, bd, zz, yy, xx = self.depth, self.brain_depth, self.zz, self.yy, self.xx
        hu = np.full(self.shape, -1000.0, dtype=np.float32)
        hu[depth >= 0] = rng.uniform(25, 45)  # scalp
        in_skull = (depth >= self.scalp) & (bd < 0)
        frac = np.clip((depth - self.scalp) / self.skull, 0.0, 1.0)
        table, diploe = rng.uniform(1200, 1500), rng.uniform(600, 800)
        bone = diploe + (table - diploe) * np.abs(2 * frac - 1) ** 1.5  # dense inner/outer tables
        hu[in_skull] = bone[in_skull]

        brain = bd >= 0
        csf_hu, gm_hu, wm_hu = rng.uniform(0, 10), rng.uniform(38, 44), rng.uniform(27, 33)
        sulcal = self._field(rng, 4.0)
        sulcal_depth = rng.uniform(12.0, 18.0)
        taper = np.clip(1.0 - bd / sulcal_depth, 0.0, 1.0)
        width = (0.14 + 0.12 * self.atrophy) * taper
        sulci = brain & (np.abs(sulcal) < width)
        cortex = brain & ((bd < rng.uniform(2.5, 3.5)) | (np.abs(sulcal) < 3.0 * width + 0.05 * (taper > 0)))
        rim = brain & (bd < 0.8 + 1.5 * self.atrophy)  # CSF between brain and inner table
        fissure = brain & (np.abs(xx - 1.5 * np.sin(0.02 * yy)) < 1.2 + 0.8 * self.atrophy) & (zz > -10)
        falx = fissure & (np.abs(xx - 1.5 * np.sin(0.02 * yy)) < 0.5)
        ventricles = brain & self._ventricles(rng)
        midbrain_centre = rng.uniform(-3, 3), rng.uniform(5, 15)
        midbrain_r = np.hypot(xx - midbrain_centre[0], yy - midbrain_centre[1])
        cistern_band = (np.abs(zz + 5) < 7) & brain
        midbrain = cistern_band & (midbrain_r < 12.0)
        cisterns = cistern_band & (midbrain_r >= 12.0) & (midbrain_r < 13.5 + 1.5 * self.atrophy)

        texture = 1.5 * self._field(rng, 2.0)
        hu[brain] = wm_hu
        hu[cortex | midbrain] = gm_hu
        hu += np.where(brain, texture, 0.0)
        csf = rim | sulci | fissure | ventricles | cisterns
        hu[csf] = csf_hu + 0.5 * texture[csf]
        hu[falx] = rng.uniform(50, 65)  # dense dura: a hemorrhage look-alike
        self._skull_base(rng, hu, brain)

        label = np.zeros(self.shape, dtype=np.uint8)
        spaces = {"sulci": sulci | rim, "fissure": fissure & ~falx, "cisterns": cisterns,
                  "ventricles": ventricles}
        centres = slice((_SUBSLICES - 1) // 2, None, _SUBSLICES)  # the sub-slice at each slice centre
        for kind in lesions:
            for _ in range(8):  # resample a lesion that missed every slice centre
                mask, edema = self._lesion(rng, kind, brain, spaces)
                if (mask[centres] & (label[centres] == 0)).sum() >= 4:
                    break
            free = mask & (label == 0)  # an earlier lesion keeps its voxels
            if edema is not None:
                hu[edema & ~mask & (label == 0)] -= rng.uniform(6, 12)
            hu[free] = rng.uniform(50, 85) + 0.8 * texture[free]
            label[free] = LESIONS.index(kind) + 1
        return hu, label[centres]

    def _ventricles(self, rng: np.random.Generator) -> np.ndarray:
        """Lateral ventricles (a butterfly of two tilted ellipsoids with occipital horns) and a
        slit-like third ventricle, all growing with atrophy."""
        grow = 1.0 + 0.5 * self.atrophy
        z0, y0 = rng.uniform(0.3, 0.45) * self.cz, rng.uniform(-8, 0)
        mask = np.zeros(self.shape, dtype=bool)
        for side in (-1.0, 1.0):
            mask |= _ellipsoid(self, (z0, y0, side * rng.uniform(7, 10)),
                               (rng.uniform(8, 11) * grow, rng.uniform(22, 30), rng.uniform(4, 6) * grow),
                               side * rng.uniform(0.15, 0.35))
            mask |= _ellipsoid(self, (z0 - 6, y0 + 22, side * rng.uniform(12, 16)),
                               (rng.uniform(5, 8), rng.uniform(8, 12), rng.uniform(3, 5) * grow), side * 0.5)
        third = (np.abs(self.xx) < 1.5 * grow) & (np.abs(self.yy - y0 - 6) < 10)
        return mask | (third & (np.abs(self.zz - z0 + 14) < 7))

    def _skull_base(self, rng: np.random.Generator, hu: np.ndarray, brain: np.ndarray) -> None:
        """Bone and air in the lowest slices: the anterior skull base with sinuses, petrous ridges."""
        top = rng.uniform(0.1, 0.2)
        low = self.zz < -top * self.cz
        # The lower the slice, the further back the anterior skull base (orbits, sinuses) reaches.
        reach = np.clip((-self.zz / self.cz - top) / 0.4, 0.0, 1.0)
        anterior = low & brain & (self.yy < self.ay * (-0.6 + 0.5 * reach) + 0.3 * self.xx**2 / self.ax)
        hu[anterior] = rng.uniform(700, 1100)
        sinus = _ellipsoid(self, (-0.5 * self.cz, -0.55 * self.ay, 0.0),
                           (0.2 * self.cz, 0.15 * self.ay, 0.3 * self.ax))
        hu[anterior & sinus] = -1000.0
        for side in (-1.0, 1.0):
            petrous = _ellipsoid(self, (-0.35 * self.cz, 0.1 * self.ay, side * 0.5 * self.ax),
                                 (6.0, 0.3 * self.ay, 5.0), -side * 0.7)
            hu[low & brain & petrous] = rng.uniform(900, 1400)

    def _random_point(self, rng: np.random.Generator, where: np.ndarray) -> tuple[float, float, float]:
        """Head-mm ``(z, y, x)`` of a uniformly chosen voxel of the mask ``where``."""
        k, j, i = np.unravel_index(rng.choice(np.flatnonzero(where)), self.shape)
        return float(self.zz[k, 0, 0]), float(self.yy[0, j, 0]), float(self.xx[0, 0, i])

    def _lesion(self, rng: np.random.Generator, kind: str, brain: np.ndarray, spaces: dict,
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """Mask of one lesion (and an oedema rim for IPH) on the sub-slice grid."""
        size = float(np.clip(rng.lognormal(0.0, 0.35), 0.5, 2.0))  # most lesions are small
        if kind in ("EDH", "SDH"):
            # Distance along the inner skull surface from the lesion's centre (mm).
            theta0 = rng.uniform(-np.pi, np.pi)
            z0 = rng.uniform(-0.05, 0.7) * self.cz
            arc = np.angle(np.exp(1j * (self.theta - theta0))) * (self.radius + self.brain_depth)
            along = np.sqrt(arc**2 + (self.zz - z0) ** 2)
            if kind == "EDH":  # biconvex lens: thick centre, short extent
                extent, thickness = 18.0 * size, 8.0 * size
                profile = 1.0 - (along / extent) ** 2
            else:  # crescent: thin, long, flat profile following the skull
                extent, thickness = 40.0 * size, 4.5 * size
                profile = 1.0 - (along / extent) ** 4
            return brain & (profile > 0) & (self.brain_depth < thickness * np.clip(profile, 0, 1)), None
        if kind == "IPH":  # centred in deep parenchyma, above the skull base, outside the ventricles
            deep = (self.brain_depth > 12.0) & (self.zz > -0.1 * self.cz) & ~spaces["ventricles"]
            centre = self._random_point(rng, deep)
            distortion = 0.25 * self._field(rng, 4.5)
            level = _level(self, centre, (rng.uniform(5, 9) * size, rng.uniform(5, 9) * size,
                                          rng.uniform(5, 9) * size)) + distortion
            return brain & (level < 0), brain & (level < 0.5)
        if kind == "IVH":  # blood settles in the dependent (posterior, +y) ventricles
            ventricles = spaces["ventricles"]
            ys = np.broadcast_to(self.yy[0], self.shape[1:])
            in_plane = ventricles.any(axis=0)
            level = np.quantile(ys[in_plane], rng.uniform(0.5, 0.85)) if in_plane.any() else 0.0
            side = rng.choice([-1.0, 0.0, 1.0])
            keep = (self.xx * side >= 0) if side else np.ones_like(self.xx, dtype=bool)
            return ventricles & (self.yy > level) & keep, None
        # SAH: blood in the CSF spaces near a centre (surface sulci or the basal cisterns).
        csf = spaces["sulci"] | spaces["fissure"] | spaces["cisterns"]
        near = _level(self, self._random_point(rng, csf), (25.0 * size,) * 3) < 0
        return csf & near, None


def _coarse_smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: tuple[float, ...],
                         ) -> np.ndarray:
    """:func:`common.smooth_field` drawn on a grid coarsened along axes with wide kernels, then
    linearly upsampled: the same kind of field at a fraction of the filtering cost."""
    factors = [max(1, int(s / 1.5)) for s in sigma_vox]
    coarse_shape = tuple(-(-n // f) + 1 if f > 1 else n for n, f in zip(shape, factors, strict=True))
    field = smooth_field(rng, coarse_shape, tuple(s / f for s, f in zip(sigma_vox, factors, strict=True)))
    field = field.astype(np.float32)
    for axis, (n, f) in enumerate(zip(shape, factors, strict=True)):
        if f > 1:  # separable linear upsampling: far cheaper than 3D map_coordinates
            position = np.arange(n) / f
            lower = np.floor(position).astype(int)
            weight = (position - lower).astype(np.float32)
            weight = weight.reshape([-1 if a == axis else 1 for a in range(len(shape))])
            field = field.take(lower, axis=axis) * (1 - weight) + field.take(lower + 1, axis=axis) * weight
    return (field - field.mean()) / (field.std() + 1e-8)


def _level(head: _Head, centre_zyx, radii_zyx, angle: float = 0.0) -> np.ndarray:
    """Normalised-radius level set ``r - 1`` (negative inside) of an ellipsoid in head mm,
    rotated by ``angle`` in the axial plane. Hand-written rather than ``common.ellipsoid``
    because it works on the head's centred, broadcast coordinates and needs the rotation."""
    dz, dy, dx = head.zz - centre_zyx[0], head.yy - centre_zyx[1], head.xx - centre_zyx[2]
    c, s = float(np.cos(angle)), float(np.sin(angle))  # Python floats keep float32 arrays float32
    u, v = c * dx + s * dy, -s * dx + c * dy
    return np.sqrt((dz / radii_zyx[0]) ** 2 + (v / radii_zyx[1]) ** 2 + (u / radii_zyx[2]) ** 2) - 1.0


def _ellipsoid(head: _Head, centre_zyx, radii_zyx, angle: float = 0.0) -> np.ndarray:
    """Boolean inside of :func:`_level`, full grid shape."""
    return np.broadcast_to(_level(head, centre_zyx, radii_zyx, angle) < 0, head.shape)
