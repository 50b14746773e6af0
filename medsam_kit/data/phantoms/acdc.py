"""ACDC-like synthetic cine MRI: short-axis stacks of a beating heart, in the ACDC raw layout.

Simulated (per patient, all drawn from ``default_rng([seed, patient index])``):

* a 4D cine stack ``(T, Z, Y, X)`` of 8–12 frames, 6–10 short-axis slices 5–10 mm apart and
  ~128² pixels of 1.4–1.8 mm, int16, with an oblique short-axis direction (det +1) and a
  nonzero origin; ED is frame 1 and ES lies mid-cycle;
* a left ventricle as a truncated half-ellipsoid of revolution: bright blood pool with two
  dark papillary muscles (labelled LV, as in ACDC), a myocardial ring that keeps its area when
  it contracts (so it thickens at ES), base descending towards the apex in systole;
* a right-ventricular crescent wrapped around the septal side with a thin unlabeled free wall,
  vanishing before the apex; atria (bright, unlabeled) above the base in the basal slices;
* pathology groups DCM, HCM, MINF, NOR, RV changing cavity size, wall thickness, contraction
  (MINF: a thin hypokinetic sector) and RV size;
* confusable surroundings: descending aorta and atria (bright blood, unlabeled), epicardial and
  subcutaneous fat (bright), chest-wall tissue and liver (myocardium-like), dark lungs;
* coil bias field, Rician noise, in-plane PSF blur and through-plane partial volume (each slice
  averages sub-slices across its thickness, so thick slices blur more than pixels).

Labels (uint8 0 bg, 1 RV, 2 MYO, 3 LV) are evaluated from the same continuous shapes at the
voxel centres of the ED and ES frames.

Not simulated: k-space effects (Gibbs ringing, aliasing/wrap-around), flow and dark-blood
artefacts, breath-hold slice misalignment, trabeculation detail, realistic thoracic anatomy
beyond the few ellipses above, and a link between the direction matrix and where anatomy
appears in the image (shapes are placed in the image frame; the direction is plausible
metadata only).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from medsam_kit.data.phantoms.common import (
    bias_field,
    partial_volume,
    rician_noise,
    rotation_2d,
    smooth_field,
)
from medsam_kit.io import Geometry, Volume, atomic_write_text, write_volume

DEFAULT_CASES = 10
GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")
_SUBSLICES = 3  # samples across a slice's thickness: the through-plane partial volume
_TRAIN_FRACTION = 0.8  # ACDC: 100 training / 50 testing patients

# Per group: ED endocardial radius at the base (mm), ED wall thickness (mm), ES/ED endocardial
# radius ratio (lower = stronger contraction), RV size factor, ES/ED RV radius ratio.
_GROUP_PARAMS = {
    "DCM": dict(r_endo=(28, 34), wall=(5, 7), es=(0.84, 0.92), rv_size=(0.9, 1.1), rv_es=(0.80, 0.90)),
    "HCM": dict(r_endo=(15, 20), wall=(12, 17), es=(0.45, 0.60), rv_size=(0.8, 1.0), rv_es=(0.70, 0.80)),
    "MINF": dict(r_endo=(24, 30), wall=(7, 9), es=(0.78, 0.88), rv_size=(0.9, 1.1), rv_es=(0.75, 0.85)),
    "NOR": dict(r_endo=(20, 26), wall=(7, 10), es=(0.62, 0.75), rv_size=(0.9, 1.1), rv_es=(0.70, 0.80)),
    "RV": dict(r_endo=(19, 25), wall=(7, 9), es=(0.65, 0.78), rv_size=(1.35, 1.6), rv_es=(0.88, 0.95)),
}


def generate(out_dir: Path, *, cases: int | None = None, seed: int = 0,
             progress: Callable[[int, int], None] | None = None, **options) -> None:
    """Write ``cases`` synthetic patients in the ACDC raw layout under ``out_dir``.

    Layout: ``training/patientNNN/`` (first ~80 %, at least one) and ``testing/patientNNN/``
    numbered consecutively from 001, each with ``Info.cfg``, ``patientNNN_4d.nii.gz`` (array
    ``(T, Z, Y, X)`` int16) and ``patientNNN_frameXX[_gt].nii.gz`` for the ED and ES frames
    (images int16 ``(Z, Y, X)``, labels uint8). Groups cycle DCM, HCM, MINF, NOR, RV.

    Args:
        out_dir: destination root (created).
        cases: number of patients; None for :data:`DEFAULT_CASES`.
        seed: patient ``i`` depends only on ``(seed, i)``.
        progress: optional ``progress(done, total)`` called after each patient.
        **options: none are accepted (kept for the common generator signature).
    """
    if options:
        raise ValueError(f"unknown ACDC phantom option(s) {sorted(options)}; this generator takes none")
    total = DEFAULT_CASES if cases is None else int(cases)
    if total < 1:
        raise ValueError(f"cases must be at least 1, got {total}")
    n_train = min(total, max(1, round(_TRAIN_FRACTION * total)))
    out_dir = Path(out_dir)
    for index in range(total):
        rng = np.random.default_rng([seed, index])
        patient = f"patient{index + 1:03d}"
        folder = out_dir / ("training" if index < n_train else "testing") / patient
        write_patient(folder, *simulate_patient(rng, GROUPS[index % len(GROUPS)]))
        if progress is not None:
            progress(index + 1, total)


def write_patient(folder: Path, cine: np.ndarray, labels: dict[int, np.ndarray], geometry: Geometry,
                  info: dict) -> None:
    """Write one patient in the ACDC raw layout: ``<id>_4d.nii.gz``, the ED / ES frames with their ``_gt``
    label maps, and ``Info.cfg`` (the folder's name is the patient id). Shared by every ACDC phantom style."""
    patient = folder.name
    write_volume(folder / f"{patient}_4d.nii.gz", Volume(cine, geometry))
    for frame in (info["ED"], info["ES"]):
        stem = f"{patient}_frame{frame:02d}"
        write_volume(folder / f"{stem}.nii.gz", Volume(cine[frame - 1], geometry))
        write_volume(folder / f"{stem}_gt.nii.gz", Volume(labels[frame], geometry))
    atomic_write_text(folder / "Info.cfg", "".join(f"{key}: {value}\n" for key, value in info.items()))


def simulate_patient(rng: np.random.Generator, group: str,
                     ) -> tuple[np.ndarray, dict[int, np.ndarray], Geometry, dict]:
    """One synthetic patient.

    Returns:
        ``(cine, labels, geometry, info)``: ``cine`` int16 ``(T, Z, Y, X)``; ``labels`` maps the
        1-based ED and ES frame numbers to uint8 ``(Z, Y, X)`` masks; ``geometry`` of the
        ``(Z, Y, X)`` grid; ``info`` the ``Info.cfg`` fields in ACDC order.
    """
    n_frames = int(rng.integers(8, 13))
    es_frame = int(round(n_frames * rng.uniform(0.33, 0.45))) + 1
    nz, ny, nx = int(rng.integers(6, 11)), int(rng.choice([120, 128, 136])), int(rng.choice([120, 128, 136]))
    pixel, dz = float(rng.uniform(1.4, 1.8)), float(rng.choice([5.0, 6.5, 8.0, 10.0]))
    thickness = min(dz, float(rng.uniform(5.0, 8.0)))
    offsets = (np.arange(_SUBSLICES) - (_SUBSLICES - 1) / 2) * thickness / _SUBSLICES
    z_centres = np.arange(nz) * dz
    z_sub = (z_centres[:, None] + offsets[None]).reshape(-1)  # (Z * S,) slice-major

    heart = _Heart(rng, group, nz, dz, (ny * pixel, nx * pixel))
    yy = (np.arange(ny) * pixel)[:, None]
    xx = (np.arange(nx) * pixel)[None, :]
    static = _surroundings(rng, heart, yy, xx, z_sub)
    blood = 1.0  # every intensity level is relative to blood
    texture = 1.0 + 0.05 * smooth_field(rng, static.shape, (0.5, 3.0, 3.0))

    phases = _contraction(n_frames, es_frame)
    bias = bias_field(rng, (nz, ny, nx), strength=float(rng.uniform(0.25, 0.5)))
    noise_sigma = float(rng.uniform(0.03, 0.06))
    scale = float(rng.uniform(250.0, 600.0))  # arbitrary MR units, like the scanner's
    pv_sigma = (0.35, float(rng.uniform(0.5, 0.8)), float(rng.uniform(0.5, 0.8)))
    cine = np.empty((n_frames, nz, ny, nx), dtype=np.int16)
    for t, phase in enumerate(phases):
        image = static.copy()
        heart.paint(image, yy, xx, z_sub, phase, blood)
        image = (image * texture).reshape(nz, _SUBSLICES, ny, nx).mean(axis=1)
        image = rician_noise(rng, partial_volume(image, pv_sigma) * bias, noise_sigma)
        cine[t] = np.clip(np.rint(image * scale), 0, np.iinfo(np.int16).max).astype(np.int16)

    labels = {1: heart.labels(yy, xx, z_centres, 0.0), es_frame: heart.labels(yy, xx, z_centres, 1.0)}
    info = {"ED": 1, "ES": es_frame, "Group": group, "Height": round(float(rng.uniform(150, 195)), 1),
            "NbFrame": n_frames, "Weight": round(float(rng.uniform(50, 110)), 1)}
    return cine, labels, _oblique_geometry(rng, (pixel, pixel, dz), (nx, ny, nz)), info


def _contraction(n_frames: int, es_frame: int) -> np.ndarray:
    """Phase per frame: 0 at ED (frame 1), 1 at ES, smooth systole and diastole in between."""
    t = np.arange(n_frames, dtype=float)
    e = es_frame - 1
    systole = np.sin(0.5 * np.pi * t / e) ** 2
    diastole = np.cos(0.5 * np.pi * (t - e) / (n_frames - e)) ** 2
    return np.where(t <= e, systole, diastole)


def _oblique_geometry(rng: np.random.Generator, spacing_xyz: tuple, size_xyz: tuple) -> Geometry:
    """Short-axis geometry: slice normal near the LV long axis (towards anterior-left-inferior
    in LPS), random in-plane rotation, right-handed; origin puts the grid centre near the heart."""
    normal = np.array([0.55, -0.45, -0.70]) + rng.normal(0.0, 0.15, 3)
    normal /= np.linalg.norm(normal)
    helper = rng.normal(size=3)
    x_axis = helper - helper.dot(normal) * normal
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(normal, x_axis)  # columns (x, y, normal) then have det +1
    direction = np.stack([x_axis, y_axis, normal], axis=1)
    centre_world = np.array([20.0, -20.0, -60.0]) + rng.normal(0.0, 15.0, 3)
    half_extent = (np.asarray(size_xyz) - 1) / 2 * np.asarray(spacing_xyz)
    origin = centre_world - direction @ half_extent
    return Geometry(spacing_xyz, tuple(origin), tuple(map(tuple, direction)))


def _ellipse(yy: np.ndarray, xx: np.ndarray, centre_yx, radii_yx, angle: float) -> np.ndarray:
    """Normalised radius of a rotated ellipse (< 1 inside) on the ``(Y, X)`` mm grid."""
    inverse = rotation_2d(-angle)
    dy, dx = yy - centre_yx[0], xx - centre_yx[1]
    u = inverse[0, 0] * dx + inverse[0, 1] * dy
    v = inverse[1, 0] * dx + inverse[1, 1] * dy
    return np.sqrt((u / radii_yx[1]) ** 2 + (v / radii_yx[0]) ** 2)


def _surroundings(rng: np.random.Generator, heart: _Heart, yy, xx, z_sub: np.ndarray) -> np.ndarray:
    """Static thorax around the heart, relative to blood = 1: ``(Z*S, Y, X)`` float."""
    shape2d = (yy.shape[0], xx.shape[1])
    cy, cx = heart.centre
    u = np.array([np.sin(heart.rv_angle), np.cos(heart.rv_angle)])  # (y, x) unit towards the RV
    w = np.array([u[1], -u[0]])
    tissue = float(rng.uniform(0.28, 0.4))  # chest-wall muscle, myocardium-like
    body_angle = float(rng.uniform(-0.3, 0.3))
    body = _ellipse(yy, xx, (cy + rng.uniform(-20, 20), cx + rng.uniform(-20, 20)),
                    (rng.uniform(100, 130), rng.uniform(140, 170)), body_angle)
    image2d = np.where(body < 1.0, tissue, 0.0)
    fat_depth = rng.uniform(0.06, 0.12)
    image2d[(body < 1.0) & (body > 1.0 - fat_depth)] = rng.uniform(0.75, 0.95)  # subcutaneous fat
    lung = np.full(shape2d, False)
    for side in (-1.0, 1.0):
        centre = np.array([cy, cx]) + side * w * rng.uniform(55, 70) - u * rng.uniform(10, 25)
        lung |= _ellipse(yy, xx, centre, (rng.uniform(45, 60), rng.uniform(30, 40)),
                         heart.rv_angle + rng.uniform(-0.4, 0.4)) < 1.0
    image2d[lung & (body < 1.0 - fat_depth)] = rng.uniform(0.03, 0.07)
    aorta_centre = np.array([cy, cx]) - u * rng.uniform(38, 48) + w * rng.uniform(-20, 5)
    aorta = _ellipse(yy, xx, aorta_centre, (rng.uniform(9, 12),) * 2, 0.0) < 1.0
    image2d[aorta] = rng.uniform(0.85, 1.0)  # bright blood that is not a ventricle

    # The liver rises into the apical slices from the RV/inferior side.
    image = np.repeat(image2d[None], len(z_sub), axis=0)
    liver_centre = np.array([cy, cx]) + u * rng.uniform(30, 50) - w * rng.uniform(20, 40)
    liver_top = heart.z_apex + rng.uniform(-0.7, -0.3) * heart.length
    for k, z in enumerate(z_sub):
        grow = np.clip((z - liver_top) / 30.0, 0.0, 1.0)
        if grow > 0:
            liver = _ellipse(yy, xx, liver_centre, (50 * grow + 1e-3, 70 * grow + 1e-3), heart.rv_angle) < 1.0
            image[k][liver & (body < 1.0 - fat_depth) & ~aorta] = heart.liver
    return image


class _Heart:
    """Continuous heart model in image-frame mm; ``paint`` and ``labels`` evaluate it on a grid.

    Depth ``z`` runs from the first slice (base side) towards the apex. At phase ``c`` (0 ED,
    1 ES) the base plane sits at ``z_base + shortening * c``; the apex stays fixed.
    """

    def __init__(self, rng: np.random.Generator, group: str, nz: int, dz: float, fov_yx: tuple) -> None:
        p = {k: float(rng.uniform(*v)) for k, v in _GROUP_PARAMS[group].items()}
        self.r_endo, self.wall, self.es, self.rv_es = p["r_endo"], p["wall"], p["es"], p["rv_es"]
        self.centre = np.array(fov_yx) / 2 + rng.uniform(-12, 12, 2)
        self.drift = rng.uniform(-8, 8, 2)  # LV axis not quite normal to the slices
        self.rv_angle = float(-2.4 + rng.uniform(-0.6, 0.6))  # RV towards the image's upper left
        self.z_base = float(rng.uniform(-0.4, 0.3)) * dz
        self.z_apex = float((nz - 1) * dz * rng.uniform(0.85, 1.0))
        self.length = self.z_apex - self.z_base
        self.apical_wall = float(rng.uniform(5, 9))
        self.shortening = float(rng.uniform(0.08, 0.14)) * self.length
        self.exponent = float(rng.uniform(1.6, 2.6))  # taper: 2 = ellipsoid, lower = more conical
        # RV: an ellipse (half-depth a, half-width b) pressed onto the septum; minus the LV it is
        # a crescent because it is wider than the LV and its centre sits near the epicardium.
        self.rv_a = float(rng.uniform(12, 20) * p["rv_size"])
        self.rv_b = float(rng.uniform(1.0, 1.3) * p["rv_size"] * (self.r_endo + self.wall))
        self.rv_overlap = float(rng.uniform(-0.2, 0.2))
        self.rv_apex = float(rng.uniform(0.7, 0.9))  # RV ends at this fraction of the LV length
        self.harmonics = [(k, rng.uniform(0.02, 0.05), rng.uniform(0, 2 * np.pi)) for k in (2, 3)]
        self.papillary = [(self.rv_angle + np.pi + side * rng.uniform(0.5, 0.8), rng.uniform(2.5, 4.0))
                          for side in (-1, 1)]
        self.infarct = None
        if group == "MINF":  # (sector centre relative to the RV direction, half-width), radians
            self.infarct = (float(rng.uniform(-np.pi, np.pi)), float(rng.uniform(0.5, 0.9)))
        self.myo_level = float(rng.uniform(0.25, 0.4))
        self.fat_level = float(rng.uniform(0.75, 0.95))
        self.liver = float(rng.uniform(0.4, 0.55))
        self.fat_seed = int(rng.integers(2**31))
        self._grids: dict[bytes, dict[str, np.ndarray]] = {}

    def _profile(self, z: np.ndarray, z_apex: float, phase: float) -> np.ndarray:
        """Radius factor along the axis ``(len(z),)``: 0 above the base and past ``z_apex``."""
        base = self.z_base + self.shortening * phase
        s = np.clip((z - base) / (z_apex - base), 0.0, 1.0)
        return np.where(z >= base, np.sqrt(1.0 - s**self.exponent), 0.0)

    def _grid(self, yy, xx, z: np.ndarray) -> dict[str, np.ndarray]:
        """Phase-independent ``(len(z), Y, X)`` float32 fields, computed once per set of depths."""
        key = z.tobytes()
        if key in self._grids:
            return self._grids[key]
        s = ((z - self.z_base) / self.length)[:, None, None]
        dy = (yy[None] - (self.centre[0] + self.drift[0] * s)).astype(np.float32)
        dx = (xx[None] - (self.centre[1] + self.drift[1] * s)).astype(np.float32)
        r = np.hypot(dy, dx)
        phi = np.arctan2(dy, dx) - np.float32(self.rv_angle)
        shape = 1.0 + sum(a * np.cos(k * phi + b) for k, a, b in self.harmonics)
        wall = np.full_like(phi, self.wall)
        es = np.full_like(phi, self.es)
        if self.infarct is not None:  # thin, hypokinetic sector
            centre, half_width = self.infarct
            sector = np.cos(phi - centre) > np.cos(half_width)
            wall[sector] *= 0.5
            es[sector] = 0.5 * (1.0 + self.es)
        endo_ed = self.r_endo * shape * self._profile(z, self.z_apex, 0.0)[:, None, None].astype(np.float32)
        epi_profile = self._profile(z, self.z_apex + self.apical_wall, 0.0)[:, None, None].astype(np.float32)
        epi_ed = np.maximum((self.r_endo + wall) * shape * epi_profile, endo_ed + 0.5 * wall * (endo_ed > 0))
        cos_rv, sin_rv = np.float32(np.cos(self.rv_angle)), np.float32(np.sin(self.rv_angle))
        d_ed = (self.r_endo + self.wall) * epi_profile + self.rv_a * self.rv_overlap
        la = np.hypot(dy + 8 * sin_rv, dx + 8 * cos_rv) < 0.9 * self.r_endo
        ra = np.hypot(dy - d_ed * sin_rv, dx - d_ed * cos_rv) < 0.6 * self.rv_b
        fat_field = smooth_field(np.random.default_rng(self.fat_seed), r.shape[1:], 4.0)[None] > 0.6
        grid = {"dy": dy, "dx": dx, "r": r, "es": es.astype(np.float32),
                "endo_ed": endo_ed.astype(np.float32),
                "myo_area": (epi_ed**2 - endo_ed**2).astype(np.float32),
                "along": dx * cos_rv + dy * sin_rv, "across": dy * cos_rv - dx * sin_rv,
                "atria": la | ra, "fat_zone": fat_field & (r > 1.0)}
        self._grids[key] = grid
        return grid

    def _maps(self, yy, xx, z: np.ndarray, phase: float) -> dict[str, np.ndarray]:
        """Boolean ``(len(z), Y, X)`` masks of each structure at phase ``phase``."""
        g = self._grid(yy, xx, z)
        base = self.z_base + self.shortening * phase
        present = z >= base
        # Systole shrinks the cavity and lifts the base plane off the basal slices; the myocardium
        # keeps its area, so it thickens.
        endo = g["endo_ed"] * (1.0 - (1.0 - g["es"]) * np.float32(phase)) * present[:, None, None]
        epi = np.sqrt(endo**2 + g["myo_area"]) * present[:, None, None]
        r = g["r"]
        lv, myo = r < endo, (r >= endo) & (r < epi)

        s_rv = np.clip((z - base) / (self.rv_apex * (self.z_apex - base)), 0.0, 1.0)
        taper = np.where(present, np.sqrt(1.0 - s_rv**2), 0.0) * (1.0 - (1.0 - self.rv_es) * phase)
        epi_mean = (self.r_endo + self.wall) * self._profile(z, self.z_apex + self.apical_wall, phase)
        a = self.rv_a * taper + 1e-3
        b = np.maximum(self.rv_b * taper, 1.1 * epi_mean * (taper > 0)) + 1e-3
        d = epi_mean + a * self.rv_overlap
        rho = np.sqrt(((g["along"] - d[:, None, None]) / a[:, None, None]) ** 2
                      + (g["across"] / b[:, None, None]) ** 2)
        exists = (taper > 0.05)[:, None, None]
        outside_lv = (r >= epi) & exists
        rv = (rho < 1.0) & outside_lv
        rv_wall = (rho >= 1.0) & ((rho - 1.0) * np.minimum(a, b)[:, None, None] < 2.5) & outside_lv

        papillary = np.zeros_like(lv)
        s_lv = (z - base) / (self.z_apex - base)
        mid = np.flatnonzero((s_lv > 0.25) & (s_lv < 0.75))
        if mid.size:
            contraction = 1.0 - (1.0 - self.es) * phase
            radius_mean = self.r_endo * self._profile(z[mid], self.z_apex, 0.0) * contraction
            for angle, radius in self.papillary:
                py = (0.55 * radius_mean * np.sin(angle))[:, None, None]
                px = (0.55 * radius_mean * np.cos(angle))[:, None, None]
                papillary[mid] |= (g["dy"][mid] - py) ** 2 + (g["dx"][mid] - px) ** 2 < radius**2
        papillary &= lv

        atria = g["atria"] & ~present[:, None, None]  # bright blood above the base, unlabeled
        fat = g["fat_zone"] & (r < epi + 4.0) & ~lv & ~myo & ~rv & ~rv_wall & present[:, None, None]
        return {"lv": lv, "myo": myo, "rv": rv, "rv_wall": rv_wall, "papillary": papillary,
                "atria": atria, "fat": fat}

    def paint(self, image: np.ndarray, yy, xx, z: np.ndarray, phase: float, blood: float) -> None:
        """Overwrite the heart's voxels of ``image`` ``(len(z), Y, X)`` in place."""
        maps = self._maps(yy, xx, z, phase)
        image[maps["fat"]] = self.fat_level
        image[maps["atria"]] = blood
        image[maps["rv_wall"] | maps["myo"] | maps["papillary"]] = self.myo_level
        image[maps["rv"]] = blood
        image[maps["lv"] & ~maps["papillary"]] = blood

    def labels(self, yy, xx, z: np.ndarray, phase: float) -> np.ndarray:
        """ACDC labels ``(len(z), Y, X)`` uint8: 1 RV, 2 MYO, 3 LV (papillary muscles included)."""
        maps = self._maps(yy, xx, z, phase)
        label = np.zeros(maps["lv"].shape, dtype=np.uint8)
        label[maps["rv"]] = 1
        label[maps["myo"]] = 2
        label[maps["lv"]] = 3
        return label
