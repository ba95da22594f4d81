"""The built-in peak models: one peak on a flat baseline (1-D) and 2-D spots."""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxlm.models._base import (
    Model,
    area,
    at_max,
    baseline,
    broadcast_x,
    fallback,
    positive,
    register,
    spacing,
    stack,
    x_span,
)

_LN2 = math.log(2.0)
_SQRT_2PI = math.sqrt(2 * math.pi)


# --------------------------------------------------------------------------- 1-D peaks
def _peak_basics(x, y):
    b = baseline(y)
    a = positive(jnp.nanmax(y, -1) - b, 1.0)
    return a, fallback(at_max(x, y), 0.0), fallback(b, 0.0), area(x, y, b)


def _gaussian(x, amplitude, center, sigma, offset):
    return amplitude * jnp.exp(-0.5 * ((x - center) / sigma) ** 2) + offset


def _gaussian_guess(x, y):
    a, c, b, s = _peak_basics(x, y)
    return stack(a, c, positive(s / (a * _SQRT_2PI), spacing(x, y)), b)


def _lorentzian(x, amplitude, center, gamma, offset):
    return amplitude / (1 + ((x - center) / gamma) ** 2) + offset


def _lorentzian_guess(x, y):
    a, c, b, s = _peak_basics(x, y)
    return stack(a, c, positive(s / (a * math.pi), spacing(x, y)), b)


def _pseudo_voigt(x, amplitude, center, fwhm, eta, offset):
    u = (x - center) / fwhm
    gauss = jnp.exp(-4 * _LN2 * u**2)
    lorentz = 1 / (1 + 4 * u**2)
    return amplitude * (eta * lorentz + (1 - eta) * gauss) + offset


def _pseudo_voigt_guess(x, y):
    a, c, b, s = _peak_basics(x, y)
    # area of the η = ½ mixture: a·fwhm·(π/2·½ + √(π/ln2)/2·½)
    shape_area = 0.5 * (math.pi / 2) + 0.5 * (math.sqrt(math.pi / _LN2) / 2)
    return stack(a, c, positive(s / (a * shape_area), spacing(x, y)), 0.5, b)


register(
    Model(
        "gaussian",
        _gaussian,
        ("amplitude", "center", "sigma", "offset"),
        _gaussian_guess,
        1,
        "amplitude·exp(−(x−center)²/(2·sigma²)) + offset",
    )
)
register(
    Model(
        "lorentzian",
        _lorentzian,
        ("amplitude", "center", "gamma", "offset"),
        _lorentzian_guess,
        1,
        "amplitude/(1 + ((x−center)/gamma)²) + offset   (gamma: half width at half maximum)",
    )
)
register(
    Model(
        "pseudo_voigt",
        _pseudo_voigt,
        ("amplitude", "center", "fwhm", "eta", "offset"),
        _pseudo_voigt_guess,
        1,
        "amplitude·(eta·L(x) + (1−eta)·G(x)) + offset, L and G of unit height and equal fwhm",
    )
)


# --------------------------------------------------------------------------- 2-D spots
def _xy(points):
    return points[..., 0, :], points[..., 1, :]


def _spot_moments(points, z):
    """Amplitude, centroid, second moments and offset of spots z (…, m) at points (…, 2, m)."""
    px, py = _xy(points)
    px, py = broadcast_x(px, z), broadcast_x(py, z)
    b = fallback(baseline(z, 10.0), 0.0)
    a = positive(jnp.nanmax(z, -1) - b, 1.0)
    w = jnp.clip(jnp.nan_to_num(z - b[..., None], nan=0.0), 0, None)
    w = jnp.where(w > 0.1 * a[..., None], w, 0)  # the noise floor would inflate the moments
    total = jnp.sum(w, -1)
    x0 = jnp.sum(w * px, -1) / total
    y0 = jnp.sum(w * py, -1) / total
    x0 = fallback(x0, at_max(px, z))
    y0 = fallback(y0, at_max(py, z))
    cxx = jnp.sum(w * (px - x0[..., None]) ** 2, -1) / total
    cyy = jnp.sum(w * (py - y0[..., None]) ** 2, -1) / total
    cxy = jnp.sum(w * (px - x0[..., None]) * (py - y0[..., None]), -1) / total
    pitch = positive(
        jnp.sqrt(x_span(px, z) * x_span(py, z) / jnp.sum(~jnp.isnan(z), -1).astype(z.dtype)), 1.0
    )
    return a, x0, y0, cxx, cyy, cxy, b, pitch


def _gaussian_2d(points, amplitude, x0, y0, sigma, offset):
    px, py = _xy(points)
    return amplitude * jnp.exp(-0.5 * ((px - x0) ** 2 + (py - y0) ** 2) / sigma**2) + offset


def _gaussian_2d_guess(points, z):
    a, x0, y0, cxx, cyy, _, b, pitch = _spot_moments(points, z)
    return stack(a, x0, y0, positive(jnp.sqrt(0.5 * (cxx + cyy)), pitch), b)


def _gaussian_2d_elliptic(points, amplitude, x0, y0, sigma_x, sigma_y, offset):
    px, py = _xy(points)
    return amplitude * jnp.exp(-0.5 * (((px - x0) / sigma_x) ** 2 + ((py - y0) / sigma_y) ** 2)) + offset


def _gaussian_2d_elliptic_guess(points, z):
    a, x0, y0, cxx, cyy, _, b, pitch = _spot_moments(points, z)
    return stack(a, x0, y0, positive(jnp.sqrt(cxx), pitch), positive(jnp.sqrt(cyy), pitch), b)


def _gaussian_2d_rotated(points, amplitude, x0, y0, sigma_x, sigma_y, offset, theta):
    px, py = _xy(points)
    c, s = jnp.cos(theta), jnp.sin(theta)
    u = c * (px - x0) + s * (py - y0)
    v = -s * (px - x0) + c * (py - y0)
    return amplitude * jnp.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2)) + offset


def _gaussian_2d_rotated_guess(points, z):
    a, x0, y0, cxx, cyy, cxy, b, pitch = _spot_moments(points, z)
    theta = 0.5 * jnp.arctan2(2 * cxy, cxx - cyy)  # principal axis of the second moments
    half_sum, half_diff = 0.5 * (cxx + cyy), jnp.sqrt(0.25 * (cxx - cyy) ** 2 + cxy**2)
    return stack(
        a,
        x0,
        y0,
        positive(jnp.sqrt(half_sum + half_diff), pitch),
        positive(jnp.sqrt(half_sum - half_diff), pitch),
        b,
        fallback(theta, 0.0),
    )


register(
    Model(
        "gaussian_2d",
        _gaussian_2d,
        ("amplitude", "x0", "y0", "sigma", "offset"),
        _gaussian_2d_guess,
        2,
        "amplitude·exp(−((x−x0)² + (y−y0)²)/(2·sigma²)) + offset",
    )
)
register(
    Model(
        "gaussian_2d_elliptic",
        _gaussian_2d_elliptic,
        ("amplitude", "x0", "y0", "sigma_x", "sigma_y", "offset"),
        _gaussian_2d_elliptic_guess,
        2,
        "amplitude·exp(−(x−x0)²/(2·sigma_x²) − (y−y0)²/(2·sigma_y²)) + offset",
    )
)
register(
    Model(
        "gaussian_2d_rotated",
        _gaussian_2d_rotated,
        ("amplitude", "x0", "y0", "sigma_x", "sigma_y", "offset", "theta"),
        _gaussian_2d_rotated_guess,
        2,
        "elliptic 2-D Gaussian whose sigma_x axis makes the angle theta with x (Gpufit's order; "
        "(sigma_x, sigma_y, theta) and (sigma_y, sigma_x, theta ± π/2) are the same spot: the guess "
        "puts the major axis first)",
    )
)
