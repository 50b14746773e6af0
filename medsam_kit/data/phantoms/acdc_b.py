"""ACDC phantoms, style B: a second, independently written cine-MRI simulator in the ACDC raw layout.

Why a second style: settings tuned on one simulator can exploit its quirks (where the heart sits,
how bright blood is, what the noise looks like). Choose settings on style A
(:mod:`medsam_kit.data.phantoms.acdc`) and report them on style B (or the other way round); a
result that holds on only one of them is a result about the simulator. Style B shares no
anatomy or contrast code with style A; the file layout is the same (``training/patientNNN/``,
``testing/patientNNN/``, ``Info.cfg``, ``patientNNN_4d.nii.gz``, ``patientNNN_frameXX[_gt].nii.gz``
for ED and ES; images int16, labels uint8 0 bg, 1 RV, 2 MYO, 3 LV).

Write it with ``generate_phantoms("acdc", out, style="B")`` or
``medsam-kit phantoms acdc --style B --out DIR``.

How style B differs from style A (per patient, drawn from ``default_rng([seed, index, 0xB])``,
a stream unrelated to style A's):

* **scan**: images 160–256 × 160–256 pixels (usually not square) of 1.2–2.0 mm, 7–14 slices
  5–10 mm apart (thickness ≤ spacing), 10–12 cine frames (``NbFrame`` says how many); direction
  from three random Euler angles; breath-hold mismatch shifts whole slices by a few mm.
* **position**: the whole thorax rotated in plane by −40° to +40° about an orientation of its own
  (short-axis views are planned alike, so real stacks vary by tens of degrees, not by turns); the
  heart off-centre by up to 20 % of
  the field of view; the LV long axis tilted and slightly curved through the stack.
* **LV**: endocardium in polar form ``r = R0 · P(s) · (1 + Σ_k a_k cos(k(θ − φ_k) + twist_k s))``
  with a superquadric taper ``P(s) = (1 − s^n)^(1/m)`` from base (s = 0) to apex (s = 1);
  myocardium of angle-dependent thickness (harmonics, septal hypertrophy for HCM, a thinned
  akinetic sector for MINF); systole shrinks the cavity by the patient's ejection fraction and
  thickens the wall by an explicit thickening fraction; papillary muscles and 4–9 small
  trabeculae as dark blobs in the blood pool (labelled LV, as ACDC does).
* **RV**: a polar crescent on the LV epicardium, centred 150–210° round the LV from its lateral
  wall, half-span 55–90°, height and tip shape (triangular to round) per patient, thin free wall
  (unlabeled); ends at 65–95 % of the LV length, so apical slices may have none.
* **above the base**: left and right atria, aortic root and pulmonary trunk (bright, unlabeled).
* **surroundings**: body ellipse with BMI-dependent subcutaneous fat, chest-wall muscle, lungs,
  spine with bright marrow, descending aorta, patchy epicardial fat, liver and a fluid-filled
  stomach rising into the apical slices.
* **contrast**: blood/myocardium ratio 2–5; muscle and liver anything from darker to brighter
  than myocardium; slow-flow darkening of the blood pool towards the apex; coil-sensitivity bias
  from 1–2 surface coils (varies through the stack); slice-to-slice gain jumps; Rician or
  clipped-Gaussian noise at SNR 6–30, optionally amplified in the centre (parallel-imaging
  g-factor); ghost replicas along the phase-encoding axis or motion blur on some slices; global
  scale with a maximum anywhere from ~300 to ~4000.
* **partial volume**: analytic, not by sub-slice sampling: every edge is a Gaussian-CDF ramp
  whose width combines the in-plane PSF with how much the boundary moves across the slice
  thickness.

Labels are the same continuous shapes evaluated at the slice centres (ED = frame 1, ES mid-cycle).

Not simulated: k-space truncation (Gibbs), wrap-around, through-plane flow, dark-band off-resonance
artefacts, an LVOT gap in the basal myocardium, valves, and any link between the direction matrix
and where the anatomy appears in the image.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from medsam_kit.data.phantoms.acdc import write_patient
from medsam_kit.io import Geometry

DEFAULT_CASES = 10
GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")
_TRAIN_FRACTION = 0.8
_STREAM = 0xB  # third seed word: style B never shares random numbers with style A

# Per group, ranges of: ED endocardial radius at the base (mm), mean ED wall (mm), LV ejection
# fraction, RV height factor, RV ES/ED height ratio. Overlapping on purpose, like real cohorts.
_PHENOTYPES = {
    "NOR": dict(r0=(21, 27), wall=(6.0, 9.5), ef=(0.55, 0.70), rv=(0.9, 1.15), rv_es=(0.55, 0.70)),
    "DCM": dict(r0=(28, 37), wall=(4.5, 7.0), ef=(0.10, 0.35), rv=(0.9, 1.2), rv_es=(0.70, 0.85)),
    "HCM": dict(r0=(16, 22), wall=(10.0, 16.0), ef=(0.65, 0.82), rv=(0.8, 1.0), rv_es=(0.55, 0.70)),
    "MINF": dict(r0=(24, 32), wall=(6.0, 9.0), ef=(0.20, 0.45), rv=(0.9, 1.15), rv_es=(0.65, 0.80)),
    "RV": dict(r0=(20, 26), wall=(6.0, 9.0), ef=(0.50, 0.65), rv=(1.3, 1.7), rv_es=(0.75, 0.90)),
}


def generate(out_dir: Path, *, cases: int | None = None, seed: int = 0,
             progress: Callable[[int, int], None] | None = None, **options) -> None:
    """Write ``cases`` style-B patients in the ACDC raw layout under ``out_dir``.

    Layout as :func:`medsam_kit.data.phantoms.acdc.generate`: ``training/patientNNN/`` (first
    ~80 %, at least one), then ``testing/patientNNN/``; cine ``(T, Z, Y, X)`` int16, frames
    ``(Z, Y, X)`` int16, labels uint8. Groups are a fresh permutation of the five ACDC groups for
    every block of five patients.

    Args:
        out_dir: destination root (created).
        cases: number of patients; None for :data:`DEFAULT_CASES`.
        seed: patient ``i`` depends only on ``(seed, i)``.
        progress: optional ``progress(done, total)`` called after each patient.
        **options: none are accepted (kept for the common generator signature).
    """
    if options:
        raise ValueError(f"unknown ACDC style-B phantom option(s) {sorted(options)}; this generator takes none")
    total = DEFAULT_CASES if cases is None else int(cases)
    if total < 1:
        raise ValueError(f"cases must be at least 1, got {total}")
    n_train = min(total, max(1, round(_TRAIN_FRACTION * total)))
    out_dir = Path(out_dir)
    for index in range(total):
        group = GROUPS[np.random.default_rng([seed, index // 5, _STREAM, 1]).permutation(5)[index % 5]]
        patient = f"patient{index + 1:03d}"
        folder = out_dir / ("training" if index < n_train else "testing") / patient
        write_patient(folder, *simulate_patient(np.random.default_rng([seed, index, _STREAM]), group))
        if progress is not None:
            progress(index + 1, total)


def simulate_patient(rng: np.random.Generator, group: str,
                     ) -> tuple[np.ndarray, dict[int, np.ndarray], Geometry, dict]:
    """One style-B patient.

    Returns:
        ``(cine, labels, geometry, info)``: ``cine`` int16 ``(T, Z, Y, X)``; ``labels`` maps the
        1-based ED and ES frame numbers to uint8 ``(Z, Y, X)``; ``geometry`` of the ``(Z, Y, X)``
        grid; ``info`` the ``Info.cfg`` fields in ACDC order.
    """
    heart = _Heart(rng, group)
    scan = _Scan(rng, heart)
    height = float(rng.uniform(150, 198))
    bmi = float(rng.uniform(18, 36))
    thorax = _thorax(rng, scan, heart, bmi)
    lv_blood = 1.0
    rv_blood = float(rng.uniform(0.85, 1.05))
    myo = lv_blood / float(rng.uniform(2.0, 5.0))  # bright-blood (bSSFP) contrast ratio
    fat = float(rng.uniform(0.55, 1.0))
    slow_flow = float(rng.uniform(0.0, 0.35 if group == "DCM" else 0.2))  # apical darkening
    blood_levels = (lv_blood, rv_blood, myo, fat, slow_flow)

    n_frames = int(rng.integers(10, 13))
    es_frame = 1 + int(round(n_frames * rng.uniform(0.28, 0.42)))
    phases = _cardiac_cycle(n_frames, es_frame, float(rng.uniform(0.6, 0.8)))
    corrupt = _Acquisition(rng, scan, thorax["coils"])

    cine = np.empty((n_frames, scan.nz, scan.ny, scan.nx), np.int16)
    scale = None
    for t, phase in enumerate(phases):
        image = thorax["image"].copy()
        heart.paint(image, scan, phase, blood_levels)
        image = corrupt(image)
        if scale is None:  # the scanner's arbitrary units: set once per series, from the ED frame
            scale = float(np.exp(rng.uniform(np.log(300), np.log(4000)))) / float(np.percentile(image, 99.9))
        cine[t] = np.clip(np.rint(image * scale), 0, np.iinfo(np.int16).max).astype(np.int16)

    labels = {1: heart.labels(scan, 0.0), es_frame: heart.labels(scan, 1.0)}
    info = {"ED": 1, "ES": es_frame, "Group": group, "Height": round(height, 1), "NbFrame": n_frames,
            "Weight": round(bmi * (height / 100) ** 2, 1)}
    return cine, labels, scan.geometry(rng), info


def _cardiac_cycle(n_frames: int, es_frame: int, diastasis: float) -> np.ndarray:
    """Contraction per frame (0 = ED, 1 = ES): raised-cosine systole, then rapid filling up to
    ``diastasis`` of the way back, a plateau, and the atrial kick at the end of the cycle."""
    t = np.arange(n_frames) / n_frames
    t_es = (es_frame - 1) / n_frames
    systole = 0.5 - 0.5 * np.cos(np.pi * t / t_es)
    late = (t - t_es) / (1.0 - t_es)  # 0 at ES, 1 at the next ED
    filling = 1.0 - diastasis * np.clip(late / 0.35, 0, 1) ** 0.8 - (1.0 - diastasis) * np.clip(
        (late - 0.8) / 0.2, 0, 1)
    return np.where(t <= t_es, systole, filling)


def _ramp(distance: np.ndarray, sigma: float) -> np.ndarray:
    """Fraction of a voxel inside a boundary ``distance`` mm away (positive inside) seen through a
    Gaussian PSF of width ``sigma`` mm: the analytic partial-volume model of this style.

    The Gaussian CDF is taken in its tanh form (error < 2e-4) in float32, several times faster
    than ``scipy.special.ndtr``.
    """
    x = np.asarray(distance, np.float32) * np.float32(1.0 / sigma)
    return np.float32(0.5) + np.float32(0.5) * np.tanh(np.float32(0.7978846) * x * (1 + np.float32(0.044715) * x * x))


def _blend(image: np.ndarray, fraction: np.ndarray, level) -> None:
    image += fraction * (level - image)


class _Scan:
    """Grid and per-slice placement. Image axes ``(Z, Y, X)``; in-plane mm ``y = row · pixel``."""

    def __init__(self, rng: np.random.Generator, heart: _Heart) -> None:
        self.pixel = float(rng.uniform(1.2, 2.0))
        fov = rng.uniform(260, 400, 2)
        self.ny, self.nx = (int(np.clip(round(f / self.pixel), 160, 256)) for f in fov)
        self.dz = float(rng.choice([5.0, 6.0, 6.5, 7.0, 8.0, 9.0, 10.0]))
        self.thickness = min(self.dz, float(rng.uniform(5.0, 8.0)))
        reach = heart.base + heart.length + heart.apex_wall + rng.uniform(-12, 14)
        self.nz = int(np.clip(round(reach / self.dz) + 1, 7, 14))
        self.z = np.arange(self.nz) * self.dz  # slice centres; z grows from base to apex
        self.psf = self.pixel * float(rng.uniform(0.45, 0.8))  # in-plane PSF sigma, mm
        # whole thorax, in plane: a planned short-axis view varies by tens of degrees around one orientation
        self.rotation = float(np.deg2rad(25.0 + rng.uniform(-40.0, 40.0)))
        extent = np.array([self.ny, self.nx]) * self.pixel
        room = np.maximum(extent / 2 - heart.reach - 8.0, 0.0)
        self.centre = extent / 2 + rng.uniform(-1, 1, 2) * np.minimum(0.2 * extent, room)
        jitter = float(rng.choice([0.0, rng.uniform(0.8, 3.0)], p=[0.5, 0.5]))  # breath-hold mismatch
        self.slice_shift = rng.normal(0, jitter, (self.nz, 2)) if jitter else np.zeros((self.nz, 2))
        # Anatomical unit vectors in image (y, x): lateral (patient left) and anterior.
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        self.left, self.anterior = np.array([s, c]), np.array([c, -s])
        self.yy = (np.arange(self.ny) * self.pixel)[:, None]
        self.xx = (np.arange(self.nx) * self.pixel)[None, :]

    def geometry(self, rng: np.random.Generator) -> Geometry:
        """Oblique short-axis direction from Euler angles (det +1) and an origin near the heart."""
        yaw, pitch, roll = rng.uniform(0.3, 1.2), rng.uniform(0.35, 1.0), rng.uniform(0, 2 * np.pi)
        rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        ry = np.array([[np.cos(pitch), 0, np.sin(pitch)], [0, 1, 0], [-np.sin(pitch), 0, np.cos(pitch)]])
        rx = np.array([[1, 0, 0], [0, np.cos(roll), -np.sin(roll)], [0, np.sin(roll), np.cos(roll)]])
        direction = rz @ ry @ rx
        spacing = (self.pixel, self.pixel, self.dz)
        half = (np.array([self.nx, self.ny, self.nz]) - 1) / 2 * np.array(spacing)
        centre = np.array([rng.uniform(-40, 40), rng.uniform(-200, -120), rng.uniform(-80, 40)])
        return Geometry(spacing, tuple(centre - direction @ half), tuple(map(tuple, direction)))

    def slab(self, k: int, samples: int = 5) -> np.ndarray:
        """Depths (mm) sampled across slice ``k``'s thickness."""
        return self.z[k] + (np.arange(samples) - (samples - 1) / 2) * self.thickness / samples


class _Heart:
    """Continuous heart in heart-local polar coordinates.

    ``θ`` is measured from the LV lateral wall (patient left) towards anterior; depth ``z`` from the
    first slice towards the apex. At contraction ``c`` (0 ED, 1 ES) the base sits at
    ``base + descent · c`` and the apex stays put.
    """

    def __init__(self, rng: np.random.Generator, group: str) -> None:
        p = {k: float(rng.uniform(*v)) for k, v in _PHENOTYPES[group].items()}
        self.r0, self.wall, self.ef = p["r0"], p["wall"], p["ef"]
        self.length = float(rng.uniform(55, 80) * (1.15 if group == "DCM" else 1.0))
        self.base = float(rng.uniform(-0.3, 1.4)) * 7.0
        self.apex_wall = float(rng.uniform(4, 9))
        self.descent = float(rng.uniform(0.06, 0.16)) * self.length * (0.5 + p["ef"])
        self.taper_n, self.taper_m = float(rng.uniform(1.4, 3.2)), float(rng.uniform(1.6, 3.0))
        # Cavity radius ratio ES/ED: EF ≈ 1 − k² · (shortened length / length).
        shortening = 1.0 - self.descent / self.length
        self.k_es = float(np.sqrt(np.clip((1.0 - p["ef"]) / shortening, 0.05, 0.98)))
        self.thickening = float(rng.uniform(0.15, 0.35) + 0.7 * p["ef"])
        self.shape = [(k, rng.uniform(*amp), rng.uniform(0, 2 * np.pi), rng.uniform(-1.0, 1.0))
                      for k, amp in ((2, (0.02, 0.09)), (3, (0.0, 0.04)), (4, (0.0, 0.025)))]
        self.wall_harmonics = [(k, rng.uniform(0.0, 0.18), rng.uniform(0, 2 * np.pi)) for k in (1, 2)]
        self.rv_angle = float(np.deg2rad(rng.uniform(150, 210)))
        self.rv_half_span = float(np.deg2rad(rng.uniform(55, 90)))
        self.rv_height = float(rng.uniform(20, 34) * p["rv"])
        self.rv_tip = float(rng.uniform(1.0, 2.6))  # 1: triangular, larger: rounder crescent
        self.rv_end = float(rng.uniform(0.65, 0.95))
        self.rv_wall = float(rng.uniform(1.8, 3.5))
        self.rv_es = p["rv_es"]
        self.septal_flattening = float(rng.uniform(0.10, 0.22) if group == "RV" else rng.uniform(0, 0.06))
        self.septal_bulge = float(rng.uniform(0.3, 0.8)) if group == "HCM" else 0.0
        self.infarct = None
        if group == "MINF":  # (angle, half-width, depth from, depth to, wall factor)
            start = float(rng.uniform(0.0, 0.5))
            self.infarct = (float(rng.uniform(0, 2 * np.pi)), float(np.deg2rad(rng.uniform(30, 60))),
                            start, start + 0.5, float(rng.uniform(0.45, 0.7)))
        self.tilt = rng.normal(0, 0.12, 2)  # LV axis drift, mm per mm of depth (y, x)
        self.bend = rng.normal(0, 0.0015, 2)
        self.sway = rng.uniform(-3, 3, 2)  # whole-heart translation ED -> ES, mm
        self.papillary = [(self.rv_angle + np.pi + side * rng.uniform(0.4, 0.9), rng.uniform(2.5, 4.5),
                           rng.uniform(0.62, 0.75)) for side in (-1, 1)]
        self.trabeculae = [(rng.uniform(0, 2 * np.pi), rng.uniform(0.8, 1.7), rng.uniform(0.86, 0.96),
                            rng.uniform(0.3, 1.0)) for _ in range(int(rng.integers(4, 10)))]
        self.fat_harmonics = [(k, rng.uniform(0, 1.0), rng.uniform(0, 2 * np.pi)) for k in (1, 2, 3)]
        self.fat_depth = float(rng.uniform(1.0, 5.0))
        self.atria = dict(la=(rng.uniform(0.8, 1.1), rng.uniform(4, 14)), ra=rng.uniform(0.55, 0.8),
                          aorta=rng.uniform(11, 15), pa=rng.uniform(10, 14))
        self.reach = self.r0 + 1.5 * self.wall + 1.3 * self.rv_height + self.rv_wall + self.fat_depth + 6.0

    # ------------------------------------------------------------------ profiles along the axis
    def _depth(self, z: np.ndarray, c: float, apex_extra: float = 0.0) -> np.ndarray:
        base = self.base + self.descent * c
        return (np.asarray(z, float) - base) / (self.base + self.length + apex_extra - base)

    def _taper(self, s: np.ndarray) -> np.ndarray:
        """Superquadric radius factor: 1 at the base, 0 at the apex, 0 outside [0, 1]."""
        inside = (s >= 0) & (s < 1)
        return np.where(inside, (1.0 - np.clip(s, 0, 1) ** self.taper_n) ** (1.0 / self.taper_m), 0.0)

    def _rv_taper(self, s: np.ndarray) -> np.ndarray:
        u = np.clip(s / self.rv_end, 0, 1)
        return np.where((s >= 0) & (s < self.rv_end), np.sqrt(1.0 - u**2.2), 0.0)

    def _axis_profiles(self, z: float | np.ndarray, c: float) -> dict[str, np.ndarray]:
        s = self._depth(z, c)
        return {"endo": self._taper(s), "epi": self._taper(self._depth(z, c, self.apex_wall)),
                "rv": self._rv_taper(s), "s": s}

    # ------------------------------------------------------------------ in-plane fields
    def _polar(self, scan: _Scan, k: int, c: float, window) -> tuple[np.ndarray, np.ndarray]:
        """Radius (mm) and angle θ of the window's pixels around slice ``k``'s LV centre."""
        depth = scan.z[k] - self.base
        centre = scan.centre + self.tilt * depth + self.bend * depth**2 + self.sway * c + scan.slice_shift[k]
        dy = scan.yy[window[0]] - centre[0]
        dx = scan.xx[:, window[1]] - centre[1]
        lateral = dy * scan.left[0] + dx * scan.left[1]
        anterior = dy * scan.anterior[0] + dx * scan.anterior[1]
        return np.hypot(lateral, anterior).astype(np.float32), np.arctan2(anterior, lateral).astype(np.float32)

    def _contours(self, theta: np.ndarray, s: float, endo_p: float, epi_p: float, rv_p: float,
                  c: float) -> dict[str, np.ndarray]:
        """Endocardial, epicardial and RV outer radii (mm) per pixel angle at one slice."""
        shape = 1.0 + sum(a * np.cos(k * (theta - phi) + twist * s) for k, a, phi, twist in self.shape)
        toward_rv = np.cos(theta - self.rv_angle)
        shape = shape * (1.0 - self.septal_flattening * np.clip(toward_rv, 0, None) ** 3)
        wall = self.wall * (1.0 + sum(a * np.cos(k * theta + phi) for k, a, phi in self.wall_harmonics))
        wall = wall * (1.0 + self.septal_bulge * np.clip(toward_rv, 0, None) ** 2) * (1.0 - 0.3 * np.clip(s, 0, 1) ** 2)
        k_es, thickening = np.full_like(theta, self.k_es), np.full_like(theta, self.thickening)
        if self.infarct is not None:
            angle, half_width, s0, s1, factor = self.infarct
            sector = (np.cos(theta - angle) > np.cos(half_width)) & (s0 <= s <= s1)
            wall = np.where(sector, wall * factor, wall)
            k_es = np.where(sector, 0.97, k_es)  # akinetic: neither moves in nor thickens
            thickening = np.where(sector, 0.0, thickening)
        endo_ed = self.r0 * shape
        endo = endo_ed * (1.0 - c * (1.0 - k_es)) * endo_p
        wall = wall * (1.0 + c * thickening)
        epi = np.maximum((endo_ed * (1.0 - c * (1.0 - k_es)) + wall) * epi_p, endo + 0.5 * wall * (endo > 0))
        offset = np.angle(np.exp(1j * (theta - self.rv_angle)))
        span = self.rv_half_span * (1.0 - 0.3 * np.clip(s / self.rv_end, 0, 1))
        u = np.abs(offset) / span
        height = self.rv_height * (1.0 - c * (1.0 - self.rv_es)) * rv_p
        rv = height * (1.0 - np.minimum(u, 2.0) ** self.rv_tip)  # negative beyond the tips
        return {"endo": endo.astype(np.float32), "epi": epi.astype(np.float32), "rv": rv.astype(np.float32),
                "rv_u": u.astype(np.float32)}

    def _window(self, scan: _Scan) -> tuple[slice, slice]:
        """Pixel window that holds the heart (and its atria) on every slice and frame."""
        depth = scan.z - self.base
        centres = scan.centre + np.outer(depth, self.tilt) + np.outer(depth**2, self.bend) + scan.slice_shift
        lo = (centres.min(axis=0) - self.reach - 20 - np.abs(self.sway)) / scan.pixel
        hi = (centres.max(axis=0) + self.reach + 20 + np.abs(self.sway)) / scan.pixel
        lo, hi = np.floor(np.maximum(lo, 0)).astype(int), np.ceil(np.minimum(hi, [scan.ny, scan.nx])).astype(int)
        return slice(lo[0], hi[0]), slice(lo[1], hi[1])

    # ------------------------------------------------------------------ image and labels
    def _slab(self, scan: _Scan, k: int, c: float) -> tuple[dict[str, tuple[float, float, float]], float]:
        """Slice ``k`` across its thickness: per structure ('endo', 'epi', 'rv') the mean radius factor
        where it exists, its spread and the fraction of the thickness in which it exists; and the
        fraction of the thickness above the base."""
        profiles = self._axis_profiles(scan.slab(k), c)
        result = {}
        for key in ("endo", "epi", "rv"):
            values = profiles[key]
            present = values > 0
            result[key] = ((float(values[present].mean()), float(values[present].std()), float(present.mean()))
                           if present.any() else (0.0, 0.0, 0.0))
        return result, float(np.mean(profiles["s"] < 0))

    def paint(self, image: np.ndarray, scan: _Scan, c: float, levels: tuple) -> None:
        """Overwrite the heart window of ``image`` ``(Z, Y, X)`` (relative units, blood ≈ 1)."""
        lv_blood, rv_blood, myo, fat, slow_flow = levels
        window = self._window(scan)
        for k in range(scan.nz):
            # Through-plane partial volume: a structure that fills only part of the slice thickness
            # is seen at that fraction of its contrast, and the spread of its radius across the
            # thickness widens the edge ramp (a thick slice through a sloping wall blurs it).
            slab, above_base = self._slab(scan, k, c)
            (endo_p, endo_spread, endo_in), (epi_p, epi_spread, epi_in), (rv_p, rv_spread, rv_in) = (
                slab["endo"], slab["epi"], slab["rv"])
            r, theta = self._polar(scan, k, c, window)
            view = image[k, window[0], window[1]]
            if above_base > 0:
                self._paint_atria(view, r, theta, above_base, rv_blood, myo)
            if epi_in == 0:
                continue
            s = float(self._depth(scan.z[k], c))
            contour = self._contours(theta, s, endo_p, epi_p, rv_p, c)
            sig_endo = np.hypot(scan.psf, self.r0 * endo_spread)
            sig_epi = np.hypot(scan.psf, (self.r0 + self.wall) * epi_spread)
            sig_rv = np.hypot(scan.psf, self.rv_height * rv_spread)
            outside = r - contour["epi"]
            has_rv = (contour["rv_u"] < 1.15) & (rv_in > 0)  # the free wall wraps just past the tips
            rv_outer = np.where(has_rv, np.maximum(contour["rv"], 0) + self.rv_wall, 0.0)
            fat_band = self.fat_depth * (1 + sum(a * np.cos(k_ * theta + phi) for k_, a, phi in self.fat_harmonics))
            _blend(view, _ramp(contour["epi"] + rv_outer + np.clip(fat_band, 0, None) - r, sig_epi) * epi_in, fat)
            _blend(view, _ramp(np.minimum(outside + 1.0, rv_outer - outside), sig_rv) * rv_in, myo)
            _blend(view, _ramp(contour["epi"] - r, sig_epi) * epi_in, myo)
            _blend(view, _ramp(np.minimum(outside, contour["rv"] - outside), sig_rv) * rv_in, rv_blood)
            if endo_in > 0:
                pool = lv_blood * (1.0 - slow_flow * float(np.clip(s, 0, 1)) ** 1.5)
                _blend(view, _ramp(contour["endo"] - r, sig_endo) * endo_in, pool)
                cavity = endo_p * self.r0 * (1 - c * (1 - self.k_es))
                self._paint_muscles(view, r, theta, s, cavity, scan.psf, myo)

    def _paint_muscles(self, view, r, theta, s, cavity_radius, psf, myo) -> None:
        """Papillary muscles (mid-ventricle) and trabeculae (mid to apex): dark blobs in the pool."""
        blobs = []
        if 0.2 < s < 0.8:
            blobs += [(angle, size, where) for angle, size, where in self.papillary]
        blobs += [(angle, size, where) for angle, size, where, start in self.trabeculae if s > start * 0.6]
        for angle, size, where in blobs:
            distance = np.sqrt(r**2 + (where * cavity_radius) ** 2
                               - 2 * r * where * cavity_radius * np.cos(theta - angle))
            _blend(view, _ramp(size - distance, psf), myo)

    def _paint_atria(self, view, r, theta, fraction, blood, myo) -> None:
        """Atria and great arteries in the slices above the base (bright, unlabeled)."""
        a = self.atria
        def disk(angle, distance, radius, level):
            d = np.sqrt(r**2 + distance**2 - 2 * r * distance * np.cos(theta - angle))
            _blend(view, _ramp(radius + 1.5 - d, 1.0) * fraction, myo)  # thin wall
            _blend(view, _ramp(radius - d, 1.0) * fraction, level)
        disk(-np.pi / 2, a["la"][1], a["la"][0] * self.r0, blood)  # left atrium: posterior
        disk(self.rv_angle, self.r0 + self.wall + 0.6 * self.rv_height, a["ra"] * self.r0, blood)
        disk(0.5 * (np.pi / 2 + self.rv_angle), 0.9 * self.r0, a["aorta"], blood)  # aortic root
        disk(np.pi / 2 + 0.3, 1.9 * self.r0, a["pa"], blood)  # pulmonary trunk, anterior

    def labels(self, scan: _Scan, c: float) -> np.ndarray:
        """ACDC labels ``(Z, Y, X)`` uint8 at the slice centres: 1 RV, 2 MYO, 3 LV (muscles included)."""
        label = np.zeros((scan.nz, scan.ny, scan.nx), np.uint8)
        window = self._window(scan)
        for k in range(scan.nz):
            axis = self._axis_profiles(scan.z[k], c)
            endo_p, epi_p, rv_p = float(axis["endo"]), float(axis["epi"]), float(axis["rv"])
            if epi_p <= 0:
                continue
            r, theta = self._polar(scan, k, c, window)
            contour = self._contours(theta, float(axis["s"]), endo_p, epi_p, rv_p, c)
            view = label[k, window[0], window[1]]
            outside = r - contour["epi"]
            view[(outside >= 0) & (outside < contour["rv"]) & (contour["rv"] > 1.0)] = 1
            view[outside < 0] = 2
            view[r < contour["endo"]] = 3
        return label


def _ellipse_depth(yy, xx, centre, half_axes, axis_dir) -> np.ndarray:
    """Approximate distance (mm, positive inside) to an ellipse whose first half-axis lies along
    the unit (y, x) vector ``axis_dir``."""
    dy, dx = yy - centre[0], xx - centre[1]
    u = dy * axis_dir[0] + dx * axis_dir[1]
    v = dx * axis_dir[0] - dy * axis_dir[1]
    rho = np.sqrt((u / half_axes[0]) ** 2 + (v / half_axes[1]) ** 2)
    return ((1.0 - rho) * min(half_axes)).astype(np.float32)


def _thorax(rng: np.random.Generator, scan: _Scan, heart: _Heart, bmi: float) -> dict:
    """Static surroundings ``(Z, Y, X)`` float32 in units of LV blood, and surface-coil positions."""
    myo_like = float(rng.uniform(0.2, 0.5))
    muscle, liver_level = myo_like * float(rng.uniform(0.7, 1.5)), myo_like * float(rng.uniform(0.9, 2.0))
    fat, lung, marrow = float(rng.uniform(0.55, 1.0)), float(rng.uniform(0.02, 0.08)), float(rng.uniform(0.3, 0.6))
    fluid = float(rng.uniform(0.5, 1.1))
    L, A = scan.left, scan.anterior
    body_centre = scan.centre - L * rng.uniform(15, 45) - A * rng.uniform(25, 50)
    body_axes = (rng.uniform(140, 185), rng.uniform(95, 130))  # half-width left-right, half-depth
    fat_depth = 4.0 + 1.3 * (bmi - 18.0)
    wall_depth = float(rng.uniform(8, 18))
    spine = body_centre - A * (body_axes[1] - rng.uniform(30, 45))
    descending = spine + A * rng.uniform(22, 32) + L * rng.uniform(12, 24)
    lungs = [(body_centre + L * side * rng.uniform(60, 85) - A * rng.uniform(-5, 15),
              (rng.uniform(65, 90), rng.uniform(42, 60))) for side in (-1, 1)]
    liver_centre = scan.centre - L * rng.uniform(30, 70) - A * rng.uniform(-10, 25)
    liver_top = heart.base + heart.length * rng.uniform(0.35, 0.95)
    stomach = scan.centre + L * rng.uniform(45, 75) - A * rng.uniform(5, 30) if rng.random() < 0.6 else None
    stomach_top = heart.base + heart.length * rng.uniform(0.6, 1.1)
    sig = scan.psf

    image = np.zeros((scan.nz, scan.ny, scan.nx), np.float32)
    for k in range(scan.nz):
        yy, xx = scan.yy - scan.slice_shift[k, 0], scan.xx - scan.slice_shift[k, 1]
        plane = image[k]
        body = _ellipse_depth(yy, xx, body_centre, body_axes, L)
        _blend(plane, _ramp(body, sig), fat)
        _blend(plane, _ramp(body - fat_depth, sig), muscle)
        _blend(plane, _ramp(body - fat_depth - wall_depth, sig), 0.5 * (muscle + fat) * 0.8)
        for centre, axes in lungs:
            _blend(plane, _ramp(np.minimum(_ellipse_depth(yy, xx, centre, axes, A), body - fat_depth - wall_depth),
                                sig), lung)
        d_spine = np.hypot(yy - spine[0], xx - spine[1])
        _blend(plane, _ramp(18.0 - d_spine, sig), myo_like * 0.6)
        _blend(plane, _ramp(15.0 - d_spine, sig), marrow)
        _blend(plane, _ramp(11.0 - np.hypot(yy - descending[0], xx - descending[1]), sig), 0.95)
        grow = float(np.clip((scan.z[k] - liver_top) / 25.0, 0, 1))
        if grow > 0:
            liver = _ellipse_depth(yy, xx, liver_centre, (45 + 40 * grow, 25 + 40 * grow), L)
            _blend(plane, _ramp(np.minimum(liver, body - fat_depth - wall_depth), sig), liver_level)
        rise = float(np.clip((scan.z[k] - stomach_top) / 20.0, 0, 1))
        if stomach is not None and rise > 0:
            _blend(plane, _ramp(_ellipse_depth(yy, xx, stomach, (20 + 25 * rise, 15 + 15 * rise), L), sig), fluid)
    coils = [body_centre + A * (body_axes[1] + 15)]  # anterior array
    if rng.random() < 0.5:
        coils.append(spine - A * 40)  # posterior array
    return {"image": image, "coils": coils}


class _Acquisition:
    """What the scanner adds to the ideal image: coil bias, ghosts or motion blur, slice gain
    jumps, texture and noise. Calling it returns a new float32 ``(Z, Y, X)`` image."""

    def __init__(self, rng: np.random.Generator, scan: _Scan, coils: list[np.ndarray]) -> None:
        self.rng = rng
        reach = float(rng.uniform(90, 220))
        sensitivity = np.zeros((scan.nz, scan.ny, scan.nx), np.float32)
        coil_depth = rng.uniform(-40, 40)
        for weight, coil in zip((1.0, float(rng.uniform(0.3, 0.9))), coils, strict=False):
            d2 = ((scan.yy - coil[0]) ** 2 + (scan.xx - coil[1]) ** 2)[None] + (
                (scan.z - scan.z.mean() - coil_depth) ** 2)[:, None, None]
            sensitivity += weight / (1.0 + d2 / reach**2)
        centre = tuple(int(np.clip(v / scan.pixel, 0, n - 1)) for v, n in zip(scan.centre, (scan.ny, scan.nx),
                                                                                 strict=True))
        self.bias = sensitivity / sensitivity[scan.nz // 2, centre[0], centre[1]]
        self.bias **= float(rng.uniform(0.5, 1.2))  # partly undone by the vendor's normalisation
        self.gain = np.exp(rng.normal(0, rng.uniform(0.03, 0.12), scan.nz)).astype(np.float32)[:, None, None]
        self.phase_axis = int(rng.integers(1, 3))  # 1: y, 2: x
        self.ghost = None
        self.blurred_slices: list[int] = []
        artefact = rng.random()
        if artefact < 0.35:  # (replica count, amplitude)
            self.ghost = (int(rng.integers(2, 5)), float(rng.uniform(0.03, 0.10)))
        elif artefact < 0.65:
            self.blurred_slices = list(rng.choice(scan.nz, size=int(rng.integers(1, 4)), replace=False))
            self.blur = float(rng.uniform(1.0, 2.5))
        coarse = rng.standard_normal((scan.nz, scan.ny // 8 + 2, scan.nx // 8 + 2))
        self.texture = 1.0 + float(rng.uniform(0.02, 0.06)) * ndimage.zoom(
            coarse, (1, scan.ny / coarse.shape[1], scan.nx / coarse.shape[2]), order=1)[:, :scan.ny, :scan.nx]
        self.texture = self.texture.astype(np.float32)
        self.sigma = 1.0 / float(rng.uniform(6, 30))  # SNR of blood at the reference point
        self.rician = bool(rng.random() < 0.6)
        g_factor = float(rng.uniform(0.0, 0.8)) if rng.random() < 0.4 else 0.0
        profile = np.exp(-(((scan.yy - scan.ny * scan.pixel / 2) / (0.3 * scan.ny * scan.pixel)) ** 2
                           + ((scan.xx - scan.nx * scan.pixel / 2) / (0.3 * scan.nx * scan.pixel)) ** 2))
        self.noise_map = (self.sigma * (1.0 + g_factor * profile)).astype(np.float32)

    def __call__(self, ideal: np.ndarray) -> np.ndarray:
        image = ideal * self.texture * self.bias * self.gain
        if self.ghost is not None:
            replicas, amplitude = self.ghost
            n = image.shape[self.phase_axis]
            ghosts = sum(np.roll(image, (j * n) // replicas, axis=self.phase_axis) for j in range(1, replicas))
            image = image + amplitude * ghosts
        for k in self.blurred_slices:
            image[k] = ndimage.gaussian_filter1d(image[k], self.blur, axis=self.phase_axis - 1)
        noise = self.rng.standard_normal(image.shape, np.float32) * self.noise_map
        if self.rician:
            imag = self.rng.standard_normal(image.shape, np.float32) * self.noise_map
            return np.sqrt((image + noise) ** 2 + imag**2)
        return np.maximum(image + noise, 0.0)
