"""Synthetic electron-microscopy phantoms: mitochondria in neuropil, in two appearance domains.

Two domains are written so few-shot domain adaptation (SAMDA) can be studied:

* **domain A**, ``OUT/lucchi/``, Lucchi/EPFL layout (FIB-SEM, 5 nm isotropic):
  ``training.tif``, ``training_groundtruth.tif``, ``testing.tif``, ``testing_groundtruth.tif`` —
  uint8 stacks ``(Z, Y, X)`` of ``(24·cases, 192, 192)``, masks 0/255, geometry spacing 5e-6 mm.
* **domain B**, ``OUT/mitoem/``, MitoEM-style slice folders (multi-beam SEM, 8 × 8 × 30 nm):
  ``{train,val}/im/im0000.png …`` (uint8) and ``{train,val}/mito/seg0000.tif …`` (uint16
  instance ids, one consecutive id per mitochondrion), ``16·cases`` slices of 160 × 160. PNG
  slices keep their geometry (spacing 8e-6, 8e-6, 3e-5 mm; origin z = slice · 3e-5) in a text
  chunk.

What is simulated (everything is built in 3D and sliced, so objects continue across slices):

* Neuropil: cytoplasm brightness differing between neighbouring cell profiles, texture from
  smooth random fields at three scales, and cell membranes as thin dark sheets (the zero sets of
  two smooth fields; dark curves in each slice).
* Mitochondria (the label): bent elongated ellipsoids (tubes) of random 3D orientation with a
  dark double membrane (outer and inner membrane separated by a lighter gap), a granular matrix
  and dark cristae stripes running across the long axis.
* Confusable structures that are **not** mitochondria: dense organelles of mitochondrial size and
  darkness without cristae (lysosome/endosome-like), dense-core vesicles, and clusters of small
  synaptic vesicles with dark rims.
* Imaging: membranes and organelles dark on a bright background (EM contrast, inverted relative
  to the masks), point-spread blur, slow illumination inhomogeneity, Gaussian noise; domain B
  adds section-to-section brightness jitter and has a different resolution, contrast curve,
  noise level and mitochondria size in pixels.

What is not simulated: real cell geometry (axons/dendrites/synapses as connected processes),
ER, microtubules, myelin, staining artefacts, section folds, alignment errors between slices,
charging and the real sizes (165 × 768 × 1024 for Lucchi, 4096² slices for MitoEM).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medsam_kit.data.phantoms.common import bias_field, partial_volume, smooth_field
from medsam_kit.io import Geometry, Volume, write_volume

# Object kinds painted into the scene (0 = cytoplasm).
_MITO, _ORGANELLE, _DENSE_CORE, _VESICLE = 1, 2, 3, 4


@dataclass(frozen=True)
class Domain:
    """Acquisition and tissue parameters of one EM appearance domain (lengths in nm)."""

    spacing_zyx_nm: tuple[float, float, float]
    slices: int  # per unit of ``cases``
    size_yx: int
    mito_radius_nm: tuple[float, float]  # short semi-axes
    mito_length_nm: tuple[float, float]  # long semi-axis
    mito_fraction: tuple[float, float]  # target fraction of voxels
    membrane_nm: tuple[float, float, float]  # outer membrane, gap, inner membrane outer bounds
    cristae_period_nm: float
    blur_px_zyx: tuple[float, float, float]
    noise: float  # Gaussian noise std, fraction of the 0..255 range
    gamma: float
    gain: float
    offset: float
    slice_jitter: float  # per-slice brightness std (serial-section imaging)


LUCCHI = Domain(spacing_zyx_nm=(5.0, 5.0, 5.0), slices=24, size_yx=192, mito_radius_nm=(35.0, 70.0),
                mito_length_nm=(110.0, 300.0), mito_fraction=(0.05, 0.10), membrane_nm=(8.0, 13.0, 19.0),
                cristae_period_nm=35.0, blur_px_zyx=(0.8, 0.8, 0.8), noise=0.035, gamma=1.0, gain=0.95,
                offset=0.03, slice_jitter=0.0)
MITOEM = Domain(spacing_zyx_nm=(30.0, 8.0, 8.0), slices=16, size_yx=160, mito_radius_nm=(40.0, 70.0),
                mito_length_nm=(110.0, 320.0), mito_fraction=(0.04, 0.09), membrane_nm=(9.0, 17.0, 25.0),
                cristae_period_nm=40.0, blur_px_zyx=(0.3, 0.9, 0.9), noise=0.08, gamma=1.4, gain=1.1,
                offset=-0.08, slice_jitter=0.03)


def generate(out_dir: Path, *, cases: int | None = None, seed: int = 0,
             progress: Callable[[int, int], None] | None = None, **options) -> None:
    """Write both EM domains under ``out_dir`` (``lucchi/`` and ``mitoem/``).

    Args:
        out_dir: destination root.
        cases: depth multiplier (default 1): domain A stacks have ``24·cases`` slices, domain B
            folders ``16·cases`` slices. The number of volumes is fixed (2 per domain), like the
            real releases.
        seed: the same seed gives identical files; each of the four volumes depends only on
            ``(seed, volume index)``.
        progress: optional ``progress(done, total)`` called after each of the 4 volumes.
        options: none are accepted (an unknown option is an error).
    """
    if options:
        raise ValueError(f"em phantoms take no option(s) {', '.join(sorted(options))}")
    scale = 1 if cases is None else cases
    out_dir = Path(out_dir)
    jobs = [("lucchi", "training"), ("lucchi", "testing"), ("mitoem", "train"), ("mitoem", "val")]
    for index, (domain_name, split) in enumerate(jobs):
        domain = LUCCHI if domain_name == "lucchi" else MITOEM
        image, instances = make_stack(np.random.default_rng([seed, index]), domain, domain.slices * scale)
        spacing_xyz_mm = tuple(s * 1e-6 for s in domain.spacing_zyx_nm[::-1])
        if domain_name == "lucchi":
            geometry = Geometry(spacing=spacing_xyz_mm)
            write_volume(out_dir / "lucchi" / f"{split}.tif", Volume(image, geometry))
            mask = np.where(instances > 0, 255, 0).astype(np.uint8)
            write_volume(out_dir / "lucchi" / f"{split}_groundtruth.tif", Volume(mask, geometry))
        else:
            folder = out_dir / "mitoem" / split
            for k in range(image.shape[0]):
                geometry = Geometry(spacing=spacing_xyz_mm, origin=(0.0, 0.0, k * spacing_xyz_mm[2]))
                write_volume(folder / "im" / f"im{k:04d}.png", Volume(image[k][None], geometry))
                write_volume(folder / "mito" / f"seg{k:04d}.tif", Volume(instances[k][None], geometry))
        if progress is not None:
            progress(index + 1, len(jobs))


def make_stack(rng: np.random.Generator, domain: Domain, slices: int) -> tuple[np.ndarray, np.ndarray]:
    """One EM volume in memory.

    Returns:
        ``image`` uint8 ``(Z, Y, X)`` and ``instances`` uint16 ``(Z, Y, X)`` (0 background,
        mitochondria numbered 1..N consecutively).
    """
    shape = (slices, domain.size_yx, domain.size_yx)
    scene = _Scene(rng, shape, np.asarray(domain.spacing_zyx_nm))
    scene.place_mitochondria(domain)
    scene.place_confusers(domain)
    image = _render(rng, scene, domain)
    ids = np.unique(scene.instances)
    lookup = np.zeros(int(ids.max()) + 1, np.uint16)
    lookup[ids] = np.arange(len(ids), dtype=np.uint16)  # consecutive ids (ids[0] is background 0)
    return image, lookup[scene.instances]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], sigma_px: tuple[float, ...],
                  ) -> np.ndarray:
    """``common.smooth_field`` for large ``sigma_px``: drawn on a grid coarsened by ~sigma/4 and
    interpolated back, because Gaussian kernels of 50+ px on the full grid dominate the run time."""
    factor = np.maximum(1, np.floor(np.asarray(sigma_px) / 4.0)).astype(int)
    if (factor == 1).all():
        return smooth_field(rng, shape, sigma_px)
    coarse_shape = tuple(-(-n // f) + 1 for n, f in zip(shape, factor, strict=True))
    coarse = smooth_field(rng, coarse_shape, tuple(np.asarray(sigma_px) / factor))
    fine = ndimage.zoom(coarse, factor, order=1)[: shape[0], : shape[1], : shape[2]]
    return (fine - fine.mean()) / (fine.std() + 1e-8)


class _Scene:
    """Object layout of one volume: kind map, mitochondrion ids and the cristae coordinate."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int, int], spacing: np.ndarray) -> None:
        self.rng, self.shape, self.spacing = rng, shape, spacing
        self.kind = np.zeros(shape, np.int8)
        self.instances = np.zeros(shape, np.int32)
        self.axial = np.zeros(shape, np.float32)  # nm along each mitochondrion's long axis
        self.occupied = np.zeros(shape, bool)  # objects plus a clearance halo
        # Surface roughness shared by all objects, ~unit std, smooth over ~20 nm.
        self.roughness = _smooth_field(rng, shape, tuple(20.0 / spacing))

    def _ellipsoid(self, centre_px: np.ndarray, axes: np.ndarray, radii_nm: np.ndarray, bend: float,
                   halo_nm: float, roughness: float):
        """Bounding-box slices, inside mask, halo mask and long-axis coordinate of a bent ellipsoid.

        ``axes`` rows are orthonormal directions (z, y, x components) of the semi-axes
        ``radii_nm`` (long axis first). Hand-written rather than ``common.ellipsoid`` because
        objects are rotated and bent, and a local box keeps hundreds of objects cheap.
        """
        reach = (radii_nm.max() + halo_nm) / self.spacing
        lo = np.maximum(np.floor(centre_px - reach).astype(int), 0)
        hi = np.minimum(np.ceil(centre_px + reach).astype(int) + 1, self.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        grids = np.meshgrid(*[(np.arange(a, b) - c) * s for a, b, c, s in
                              zip(lo, hi, centre_px, self.spacing, strict=True)], indexing="ij")
        local = [sum(axis[i] * grids[i] for i in range(3)) for axis in axes]
        # Bend the tube: displace the second axis quadratically along the long axis.
        local[1] = local[1] - bend * radii_nm[1] * (local[0] / radii_nm[0]) ** 2
        r = np.sqrt(sum((q / rad) ** 2 for q, rad in zip(local, radii_nm, strict=True)))
        r = r + roughness * self.roughness[box]
        inside = r < 1.0
        halo = r < 1.0 + halo_nm / radii_nm[1:].min()
        return box, inside, halo, local[0]

    def _random_axes(self) -> np.ndarray:
        """Rows: a random orthonormal frame (long axis first), (z, y, x) components."""
        return np.linalg.qr(self.rng.standard_normal((3, 3)))[0].T

    def _try_place(self, kind: int, radii_nm: np.ndarray, halo_nm: float, bend: float = 0.0,
                   roughness: float = 0.03, centre_px: np.ndarray | None = None, min_voxels: int = 8):
        if centre_px is None:
            centre_px = self.rng.uniform(0, 1, 3) * (np.asarray(self.shape) - 1)
        box, inside, halo, axial = self._ellipsoid(centre_px, self._random_axes(), radii_nm, bend, halo_nm,
                                                   roughness)
        if inside.sum() < min_voxels or (self.occupied[box] & halo).any():
            return None
        self.kind[box][inside] = kind
        self.occupied[box] |= halo
        return box, inside, axial

    def place_mitochondria(self, domain: Domain) -> None:
        target = self.rng.uniform(*domain.mito_fraction) * self.kind.size
        count, filled = 0, 0
        for _ in range(400):
            if filled >= target:
                break
            radius = self.rng.uniform(*domain.mito_radius_nm)
            length = max(1.4 * radius, self.rng.uniform(*domain.mito_length_nm))
            radii = np.array([length, radius, radius * self.rng.uniform(0.75, 1.0)])
            placed = self._try_place(_MITO, radii, halo_nm=40.0, bend=self.rng.uniform(-0.8, 0.8),
                                     roughness=0.05, min_voxels=50)
            if placed is None:
                continue
            box, inside, axial = placed
            count += 1
            self.instances[box][inside] = count
            # Random phase per mitochondrion so cristae of neighbours are not aligned.
            self.axial[box][inside] = axial[inside] + self.rng.uniform(0, domain.cristae_period_nm)
            filled += int(inside.sum())

    def place_confusers(self, domain: Domain) -> None:
        mito_voxels = int((self.kind == _MITO).sum())
        organelle_voxels, budget = 0, self.rng.uniform(0.7, 1.0) * mito_voxels
        # Dense organelles of mitochondrial size and darkness but without cristae.
        for _ in range(200):
            if organelle_voxels >= budget:
                break
            radius = self.rng.uniform(*domain.mito_radius_nm) * self.rng.uniform(0.9, 1.4)
            aspect = self.rng.uniform(1.0, 1.7), self.rng.uniform(0.8, 1.0)
            radii = np.array([radius * aspect[0], radius, radius * aspect[1]])
            placed = self._try_place(_ORGANELLE, radii, halo_nm=25.0, roughness=0.08, min_voxels=30)
            if placed is not None:
                organelle_voxels += int(placed[1].sum())
        for _ in range(self.rng.integers(3, 8)):
            self._try_place(_DENSE_CORE, np.full(3, self.rng.uniform(35.0, 50.0)), halo_nm=10.0, min_voxels=3)
        # Synaptic vesicle clusters: many ~40 nm spheres around a point.
        for _ in range(self.rng.integers(2, 5)):
            last = np.asarray(self.shape) - 1
            centre = self.rng.uniform(0, 1, 3) * last
            for _ in range(40):
                where = np.clip(centre + self.rng.normal(0, 90.0, 3) / self.spacing, 0, last)
                radii = np.full(3, self.rng.uniform(17.0, 23.0))
                self._try_place(_VESICLE, radii, halo_nm=6.0, centre_px=where, min_voxels=1)


def _render(rng: np.random.Generator, scene: _Scene, domain: Domain) -> np.ndarray:
    """Grey values (uint8, dark membranes on bright background) of a laid-out scene."""
    shape, spacing = scene.shape, scene.spacing

    def field(sigma_nm: float) -> np.ndarray:
        return _smooth_field(rng, shape, tuple(np.maximum(sigma_nm / spacing, 0.5)))

    # Cell profiles and their membranes: level sets of smooth fields, each side of a sheet with
    # its own brightness; the third family makes sparse darker profiles (dendrites, glia) whose
    # grey values overlap those of mitochondria. The distance to a sheet is approximated by
    # |f| / |grad f| so membranes keep a constant thickness.
    image = np.full(shape, 0.74)
    for sigma_nm, level, above, below in ((70.0, 0.0, 0.06, -0.06), (130.0, 0.0, 0.04, -0.04),
                                          (150.0, 1.0, -0.16, 0.0)):
        cells = field(sigma_nm) - level
        gradient = np.sqrt(sum(g**2 for g in np.gradient(cells, *spacing)))
        distance_nm = np.abs(cells) / (gradient + 1e-9)
        image += np.where(cells > 0, above, below)
        image -= 0.38 * np.exp(-((distance_nm / 7.0) ** 2))
    image += 0.025 * field(0.0) + 0.035 * field(40.0) + 0.05 * field(250.0)

    # Objects: distance to the own boundary (objects never touch, thanks to the halos).
    dist = ndimage.distance_transform_edt(scene.kind > 0, sampling=spacing)
    grain = 0.05 * field(0.0)
    outer, gap, inner = domain.membrane_nm
    mito = scene.kind == _MITO
    wobble = 8.0 * field(25.0)
    stripes = np.cos(2 * np.pi * (scene.axial + wobble) / domain.cristae_period_nm) > 0.45
    levels = [
        (mito, 0.47 + grain),
        (mito & stripes & (dist > inner), 0.31 + grain),
        (mito & (dist <= inner), 0.30),
        (mito & (dist <= gap), 0.50),
        (mito & (dist <= outer), 0.27),
        (scene.kind == _ORGANELLE, 0.45 + 1.6 * grain),
        ((scene.kind == _ORGANELLE) & (dist <= outer), 0.28),
        (scene.kind == _DENSE_CORE, 0.25 + grain),
        (scene.kind == _VESICLE, 0.66),
        ((scene.kind == _VESICLE) & (dist <= 7.0), 0.36),
    ]
    for where, value in levels:
        image[where] = value[where] if isinstance(value, np.ndarray) else value

    image = partial_volume(image, domain.blur_px_zyx) * bias_field(rng, shape, strength=0.12)
    image = domain.gain * np.clip(image, 0, 1) ** domain.gamma + domain.offset
    image += rng.normal(0, domain.slice_jitter, (shape[0], 1, 1)) if domain.slice_jitter else 0.0
    image += rng.normal(0, domain.noise, shape)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
