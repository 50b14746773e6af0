"""Building blocks shared by the phantom generators: smooth random fields, bias, noise, blur.

All functions take an explicit ``numpy.random.Generator`` so phantoms are deterministic for a
seed. Arrays are ``(Z, Y, X)`` like everywhere in the package.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float | tuple[float, ...],
                 ) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit std (texture, shape jitter)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (field - field.mean()) / (field.std() + 1e-8)


def bias_field(rng: np.random.Generator, shape: tuple[int, ...], strength: float = 0.3) -> np.ndarray:
    """Multiplicative low-frequency intensity inhomogeneity (MRI coil bias), mean ≈ 1.

    A random low-order polynomial over normalised coordinates, exponentiated so it stays positive.
    """
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    log_field = np.zeros(shape)
    for axis, grid in enumerate(grids):
        log_field += rng.uniform(-1, 1) * grid + rng.uniform(-0.5, 0.5) * grid**2
        for other in grids[axis + 1:]:
            log_field += rng.uniform(-0.5, 0.5) * grid * other
    log_field *= strength / (np.abs(log_field).max() + 1e-8)
    return np.exp(log_field)


def rician_noise(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude-MRI noise: ``|image + n1 + i·n2|`` with Gaussian ``n1, n2`` of std ``sigma``."""
    real = image + rng.normal(0.0, sigma, image.shape)
    imag = rng.normal(0.0, sigma, image.shape)
    return np.sqrt(real**2 + imag**2)


def partial_volume(image: np.ndarray, sigma_zyx: tuple[float, float, float]) -> np.ndarray:
    """Blur with an anisotropic Gaussian standing in for the scanner's point-spread function."""
    return ndimage.gaussian_filter(image, sigma_zyx)


def rotation_2d(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s], [s, c]])


def ellipsoid(shape: tuple[int, int, int], center_zyx: np.ndarray, radii_zyx: np.ndarray,
              spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
              distortion: np.ndarray | None = None) -> np.ndarray:
    """Signed-ish level set ``r - 1`` of an axis-aligned ellipsoid in **mm** (negative inside).

    ``center_zyx`` and ``radii_zyx`` are in mm; ``distortion`` (same shape, ~unit scale) is
    added to the normalised radius to make the surface irregular.
    """
    zz, yy, xx = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing_zyx, strict=True)], indexing="ij")
    r = np.sqrt(((zz - center_zyx[0]) / radii_zyx[0]) ** 2 + ((yy - center_zyx[1]) / radii_zyx[1]) ** 2
                + ((xx - center_zyx[2]) / radii_zyx[2]) ** 2)
    if distortion is not None:
        r = r + distortion
    return r - 1.0
