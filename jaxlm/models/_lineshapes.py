"""lmfit's lineshapes, in lmfit's parameterisation and without a baseline: the parts of
composite models (``gaussian_peak + gaussian_peak + linear``).

=================  ==========================================  ==============================
model              lmfit                                       note
=================  ==========================================  ==============================
gaussian_peak      GaussianModel                               amplitude = area
lorentzian_peak    LorentzianModel                             amplitude = area, sigma = HWHM
voigt              VoigtModel (gamma free)                     amplitude = area
moffat             MoffatModel                                 amplitude = height
skewed_gaussian    SkewedGaussianModel                         amplitude = area of the Gaussian
step               StepModel(form="erf")                       from 0 to amplitude
rectangle          RectangleModel(form="erf")                  from 0 to amplitude and back
linear, constant   LinearModel, ConstantModel
=================  ==========================================  ==============================

The baseline is a part of its own (``constant``, ``linear``, ``poly2`` …).  Each peak's
guess looks at the largest peak above a baseline (the 5th percentile): its height, its
position and its full width at half maximum from the points above half its height (not
the area, which would count the other peaks), so that in a sum each part can be guessed
from what the parts before it left (see :mod:`._compose`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import erf, wofz

from jaxlm.models._base import (
    Model,
    at_max,
    baseline,
    broadcast_x,
    correlation_sign,
    crossing,
    fallback,
    percentile,
    positive,
    register,
    spacing,
    stack,
    valid_x,
    width_above,
    x_span,
)

_SQRT_2PI = math.sqrt(2 * math.pi)
_SQRT_2 = math.sqrt(2.0)
# peak height × sigma / area of a Voigt profile with gamma = sigma: Re w(i/√2)/√(2π),
# where Re w(iy) = erfcx(y) = exp(y²)·erfc(y) for real y
_VOIGT_HEIGHT = math.exp(0.5) * math.erfc(1 / _SQRT_2) / _SQRT_2PI
_FWHM_SIGMA = 2 * math.sqrt(2 * math.log(2))  # Gaussian FWHM / sigma
# Voigt FWHM / sigma for gamma = sigma (Olivero & Longbothum: 0.5346 f_L + √(0.2166 f_L² + f_G²))
_VOIGT_FWHM_SIGMA = 0.5346 * 2 + math.sqrt(0.2166 * 4 + _FWHM_SIGMA**2)


def _peak(x, y):
    """Height above the baseline, centre and full width at half maximum of the largest peak
    (the number of points above half its height times the mean spacing)."""
    b = baseline(y)
    height = positive(jnp.nanmax(y, -1) - b, 1.0)
    above = jnp.sum(y - b[..., None] > 0.5 * height[..., None], -1).astype(y.dtype)
    fwhm = positive(above * spacing(x, y), spacing(x, y))
    return height, fallback(at_max(x, y), 0.0), positive(fwhm, 1.0)


def _gaussian_peak(x, amplitude, center, sigma):
    return amplitude / (_SQRT_2PI * sigma) * jnp.exp(-0.5 * ((x - center) / sigma) ** 2)


def _gaussian_peak_guess(x, y):
    height, center, fwhm = _peak(x, y)
    sigma = fwhm / _FWHM_SIGMA
    return stack(height * sigma * _SQRT_2PI, center, sigma)


def _lorentzian_peak(x, amplitude, center, sigma):
    return amplitude / (math.pi * sigma) / (1 + ((x - center) / sigma) ** 2)


def _lorentzian_peak_guess(x, y):
    height, center, fwhm = _peak(x, y)
    sigma = fwhm / 2
    return stack(height * sigma * math.pi, center, sigma)


def _voigt(x, amplitude, center, sigma, gamma):
    width = sigma * _SQRT_2
    re, im = jnp.broadcast_arrays((x - center) / width, gamma / width)
    z = jax.lax.complex(re, im)  # explicit: no float/complex promotion (strict mode)
    return amplitude * jnp.real(wofz(z)) / (sigma * _SQRT_2PI)


def _voigt_guess(x, y):
    height, center, fwhm = _peak(x, y)
    sigma = fwhm / _VOIGT_FWHM_SIGMA
    return stack(height * sigma / _VOIGT_HEIGHT, center, sigma, sigma)


def _moffat(x, amplitude, center, sigma, beta):
    return amplitude / (((x - center) / sigma) ** 2 + 1) ** beta


def _moffat_guess(x, y):
    """beta and sigma from the widths at ½ and ¼ of the height: at a fraction q the
    half-width is sigma·sqrt(q^(−1/beta) − 1), so (w¼/w½)² = 2^(1/beta) + 1.  From them a
    fit of the test case takes 5 steps (median) where it took 10 from beta = 1
    (``benchmarks/guess_steps.py``); beta = 1 and sigma = HWHM where the squared ratio
    is under 2^(1/100) + 1 (beta over 100, or a top flatter than a Gaussian's)."""
    height, center, fwhm = _peak(x, y)
    b = baseline(y)
    half = width_above(x, y, b + 0.5 * height)
    quarter = width_above(x, y, b + 0.25 * height)
    u = (quarter / jnp.where(half > 0, half, 1)) ** 2 - 1  # 2^(1/beta)
    shaped = (half > 0) & jnp.isfinite(u) & (u > 2 ** (1 / 100))
    u = jnp.where(shaped, u, 2)
    beta = jnp.where(shaped, math.log(2) / jnp.log(u), 1)
    return stack(height, center, jnp.where(shaped, half, fwhm) / 2 / jnp.sqrt(u - 1), beta)


def _skewed_gaussian(x, amplitude, center, sigma, gamma):
    return (1 + erf(gamma * (x - center) / (_SQRT_2 * sigma))) * _gaussian_peak(x, amplitude, center, sigma)


def _skewed_gaussian_guess(x, y):
    g = _gaussian_peak_guess(x, y)
    return jnp.concatenate([g, jnp.zeros_like(g[..., :1])], -1)


def _levels(x, y):
    """Low and high level of a step-like curve and the sign of its rise."""
    lo, hi = percentile(y, 5.0), percentile(y, 95.0)
    return fallback(lo, 0.0), fallback(hi, 1.0), correlation_sign(x, y)


def _step(x, amplitude, center, sigma):
    return amplitude * 0.5 * (1 + erf((x - center) / sigma))


def _step_guess(x, y):
    lo, hi, sign = _levels(x, y)
    center = fallback(crossing(x, y, 0.5 * (lo + hi)), 0.0)
    return stack(sign * positive(hi - lo, 1.0), center, positive(x_span(x, y) / 20, 1.0))


def _rectangle(x, amplitude, center1, sigma1, center2, sigma2):
    return amplitude * 0.5 * (erf((x - center1) / sigma1) + erf((center2 - x) / sigma2))


def _rectangle_guess(x, y):
    """Edges where y crosses the middle level; each edge's width from the points on its
    side between a quarter and three quarters of the way up (an erf edge spends
    2·erfinv(½)·sigma = 0.954·sigma of x there; half a spacing where no point does).  From
    these widths a fit takes 5 steps (median) where it took 13 from span/50."""
    lo, hi, _ = _levels(x, y)
    amplitude = positive(hi - lo, 1.0)
    inside = valid_x(x, y) * jnp.where(y > 0.5 * (lo + hi)[..., None], 1.0, jnp.nan)
    span = x_span(x, y)
    center1 = fallback(jnp.nanmin(inside, -1), jnp.nanmin(valid_x(x, y), -1) + 0.25 * span)
    center2 = fallback(jnp.nanmax(inside, -1), jnp.nanmin(valid_x(x, y), -1) + 0.75 * span)
    f = (y - lo[..., None]) / amplitude[..., None]
    edge = (f > 0.25) & (f < 0.75)  # False where y is NaN
    left = broadcast_x(x, y) < (0.5 * (center1 + center2))[..., None]
    per_point = spacing(x, y) / 0.9539
    width1 = jnp.maximum(jnp.sum(edge & left, -1).astype(y.dtype), 0.5) * per_point
    width2 = jnp.maximum(jnp.sum(edge & ~left, -1).astype(y.dtype), 0.5) * per_point
    default = positive(span / 50, 1.0)
    return stack(amplitude, center1, positive(width1, default), center2, positive(width2, default))


def _linear(x, slope, intercept):
    return slope * x + intercept


def _linear_guess(x, y):
    xv = valid_x(x, y)
    xc = xv - jnp.nanmean(xv, -1, keepdims=True)
    yc = y - jnp.nanmean(y, -1, keepdims=True)
    slope = fallback(jnp.nansum(xc * yc, -1) / jnp.nansum(xc * xc, -1), 0.0)
    intercept = fallback(jnp.nanmean(y, -1) - slope * jnp.nanmean(xv, -1), 0.0)
    return stack(slope, intercept)


def _constant(x, c):
    return c + jnp.zeros_like(x)


def _constant_guess(x, y):
    return stack(fallback(jnp.nanmean(y, -1), 0.0))


for _model in (
    Model(
        "gaussian_peak",
        _gaussian_peak,
        ("amplitude", "center", "sigma"),
        _gaussian_peak_guess,
        1,
        "amplitude/(sigma·√(2π))·exp(−(x−center)²/(2·sigma²))",
    ),
    Model(
        "lorentzian_peak",
        _lorentzian_peak,
        ("amplitude", "center", "sigma"),
        _lorentzian_peak_guess,
        1,
        "amplitude/(π·sigma)/(1 + ((x−center)/sigma)²)",
    ),
    Model(
        "voigt",
        _voigt,
        ("amplitude", "center", "sigma", "gamma"),
        _voigt_guess,
        1,
        "amplitude·Re w((x−center + i·gamma)/(sigma·√2))/(sigma·√(2π)), w the Faddeeva function",
    ),
    Model(
        "moffat",
        _moffat,
        ("amplitude", "center", "sigma", "beta"),
        _moffat_guess,
        1,
        "amplitude/(((x−center)/sigma)² + 1)^beta",
    ),
    Model(
        "skewed_gaussian",
        _skewed_gaussian,
        ("amplitude", "center", "sigma", "gamma"),
        _skewed_gaussian_guess,
        1,
        "gaussian_peak(x; amplitude, center, sigma)·(1 + erf(gamma·(x−center)/(sigma·√2)))",
    ),
    Model(
        "step",
        _step,
        ("amplitude", "center", "sigma"),
        _step_guess,
        1,
        "amplitude·(1 + erf((x−center)/sigma))/2",
    ),
    Model(
        "rectangle",
        _rectangle,
        ("amplitude", "center1", "sigma1", "center2", "sigma2"),
        _rectangle_guess,
        1,
        "amplitude·(erf((x−center1)/sigma1) + erf((center2−x)/sigma2))/2",
    ),
    Model("linear", _linear, ("slope", "intercept"), _linear_guess, 1, "slope·x + intercept"),
    Model("constant", _constant, ("c",), _constant_guess, 1, "c"),
):
    register(_model)
