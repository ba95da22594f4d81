"""Every built-in model recovers its true parameters from noisy data, started from its guess."""

from __future__ import annotations

import warnings
import zlib

import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm
from jaxlm import models

X1 = np.linspace(0.0, 10.0, 120)
XPOS = np.linspace(0.2, 10.0, 120)
_gx, _gy = np.meshgrid(np.arange(9.0), np.arange(9.0))
GRID = np.stack([_gx.ravel(), _gy.ravel()])

# model name -> (x, true parameters, noise standard deviation)
CASES = {
    "gaussian": (X1, [3.0, 4.2, 0.9, 0.5], 0.03),
    "lorentzian": (X1, [2.0, 5.5, 0.6, 0.2], 0.03),
    "pseudo_voigt": (X1, [2.5, 4.8, 1.5, 0.4, 0.3], 0.01),
    "gaussian_2d": (GRID, [50.0, 4.3, 3.6, 1.3, 5.0], 0.5),
    "gaussian_2d_elliptic": (GRID, [50.0, 4.3, 3.6, 1.0, 1.8, 5.0], 0.5),
    # major axis first: the guess's branch of the (sigma_x, sigma_y, theta) symmetry
    "gaussian_2d_rotated": (GRID, [50.0, 4.3, 3.6, 2.0, 0.9, 5.0, 0.5], 0.5),
    "exponential": (X1, [3.0, 2.2, 0.4], 0.02),
    "biexponential": (X1, [2.0, 0.5, 1.5, 4.0, 0.1], 0.005),
    "triexponential": (np.linspace(0.0, 30.0, 400), [2.0, 0.3, 1.5, 2.0, 1.0, 10.0, 0.1], 0.002),
    "stretched_exponential": (X1, [3.0, 2.0, 0.7, 0.2], 0.01),
    "damped_sine": (X1, [2.0, 4.0, 0.8, 0.6, 0.1], 0.03),
    "logistic": (X1, [3.0, 4.5, 1.7, 0.5], 0.03),
    "hill": (X1, [0.2, 2.5, 3.0, 2.2], 0.02),
    "michaelis_menten": (XPOS, [5.0, 1.5], 0.05),
    "power_law": (X1, [1.5, 0.7], 0.02),
    "poly1": (X1, [0.5, -1.2], 0.1),
    "poly2": (X1, [0.5, -1.2, 0.3], 0.1),
    "poly3": (X1, [0.5, -1.2, 0.3, -0.02], 0.1),
    "poly4": (X1, [0.5, -1.2, 0.3, -0.02, 0.001], 0.1),
    "poly5": (X1, [0.5, -1.2, 0.3, -0.02, 0.001, 1e-4], 0.1),
    # lmfit's offset-free lineshapes
    "gaussian_peak": (X1, [3.0, 4.2, 0.9], 0.03),
    "lorentzian_peak": (X1, [2.0, 5.5, 0.6], 0.03),
    "voigt": (X1, [3.0, 5.0, 0.5, 0.4], 0.01),
    "moffat": (X1, [2.0, 5.0, 0.8, 1.5], 0.02),
    "skewed_gaussian": (X1, [3.0, 4.0, 1.2, 2.0], 0.01),
    "step": (X1, [2.0, 4.5, 0.8], 0.02),
    "rectangle": (X1, [2.0, 3.0, 0.5, 7.0, 0.8], 0.02),
    "linear": (X1, [0.3, -1.0], 0.05),
    "constant": (X1, [1.3], 0.05),
}


def test_every_model_has_a_case():
    assert sorted(CASES) == models.names()


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_recovers_true_parameters_from_its_guess(name):
    model = models.get(name)
    x, true, noise = CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # str hash() changes per process
    clean = np.asarray(model(jnp.asarray(x), *[jnp.asarray(v) for v in true]))
    ys = clean + noise * rng.standard_normal((4, clean.size))
    res = jaxlm.fit(model, x, ys, sigma=np.full(clean.size, noise), absolute_sigma=True)
    assert np.all(np.asarray(res.success)), np.asarray(res.status)
    assert np.all(np.isfinite(np.asarray(res.perr)))
    # within 5 standard errors of the truth, every parameter of every curve
    z = np.abs(np.asarray(res.params) - np.asarray(true)) / np.asarray(res.perr)
    assert np.all(z < 5), (np.asarray(res.params), z)
    # and the fit is statistically sound: chi2/dof near 1 with 4·(m − n) points
    assert 0.7 < np.sum(np.asarray(res.chi2)) / np.sum(np.asarray(res.dof)) < 1.3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_guesses_baseline_is_numpys_nanpercentile(dtype):
    """``baseline`` (every peak's guess) reads the low percentile from ``lax.top_k``
    instead of sorting each curve, and ``percentile`` (the sigmoids' and steps' levels,
    the decays' and rates' medians) the high one and the median the same way:
    ``jnp.nanpercentile`` (which they replace) to an ulp and numpy's where that is
    finite, for curves with NaNs, all NaN, infinities, ties and a single point.
    (Infinite ranks interpolate as JAX does: numpy gives NaN there.)"""
    import jax

    from jaxlm.models._base import baseline, median, percentile

    rng = np.random.default_rng(1)
    for m in (1, 2, 3, 7, 64, 1000):
        for q in (2.0, 5.0, 10.0, 50.0, 95.0, 98.0):
            y = rng.standard_normal((60, m)).astype(dtype)
            y[rng.uniform(size=y.shape) < 0.3] = np.nan
            y[:3] = np.nan
            y[3] = np.inf
            y[4, 0] = -np.inf
            y[5] = np.round(y[5])
            got = np.asarray(jax.jit(lambda y, q=q: percentile(y, q))(y))
            if q <= 50:
                assert np.array_equal(got, jax.jit(lambda y, q=q: baseline(y, q))(y), equal_nan=True)
            if q == 50:  # the guesses' median
                assert np.array_equal(got, jax.jit(median)(y), equal_nan=True)
            want = np.asarray(jnp.nanpercentile(y, q, axis=-1))  # the sort it replaces
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN curves
                ref = np.nanpercentile(y.astype(np.float64), q, axis=-1)
            # rounding of the interpolation, relative to the values interpolated; at the
            # high end the weight is the fraction of the rank from the top,
            # (1 − q/100)·(count − 1), not of numpy's q/100·(count − 1): it differs by up
            # to eps times that rank (jnp's own sort-based answer differs by as much)
            rank = 1 if q < 50 else 1 + (100 - q) / 100 * (m - 1)
            tol = {
                "rtol": 4 * np.finfo(dtype).eps,
                "atol": 4 * np.finfo(dtype).eps * rank * np.max(np.abs(y[np.isfinite(y)])),
            }
            finite = np.isfinite(ref)
            np.testing.assert_allclose(got[finite], ref[finite], **tol)
            assert got.dtype == dtype
            assert np.array_equal(np.isnan(got), np.isnan(want)), (m, q)
            finite = np.isfinite(want)
            infinite = ~finite & ~np.isnan(want)
            assert np.array_equal(got[infinite], want[infinite].astype(dtype))
            np.testing.assert_allclose(got[finite], want[finite], **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_safe_power_is_numpys_power_with_finite_derivatives_at_zero(dtype):
    """The Hill, stretched-exponential and power-law models' ``b**β`` as ``exp(β·log b)``:
    numpy's power to ``|β·log b| + 2`` ulp over bases 1e-3…1e3 and exponents 0.3…4
    (the largest results near float32's range), 0 at b ≤ 0, and derivatives in b and β
    that are finite at b = 0 (``d/dβ 0^β`` would be 0·log 0)."""
    import jax

    from jaxlm.models._library import _safe_power

    rng = np.random.default_rng(3)
    base = (10.0 ** rng.uniform(-3, 3, 5000)).astype(dtype)
    beta = rng.uniform(0.3, 4.0, 5000).astype(dtype)
    got = np.asarray(jax.jit(_safe_power)(base, beta)).astype(np.float64)
    want = np.power(base.astype(np.float64), beta.astype(np.float64))
    ulps = np.abs(got - want) / (want * np.finfo(dtype).eps)
    bound = np.abs(beta.astype(np.float64) * np.log(base.astype(np.float64))) + 2
    assert np.all(ulps <= bound), float(np.max(ulps / bound))
    zero = np.asarray(jax.jit(_safe_power)(np.array([0.0, -1.0], dtype), np.array([1.5, 2.0], dtype)))
    assert np.array_equal(zero, np.zeros(2, dtype))
    d_base, d_beta = jax.grad(_safe_power, argnums=(0, 1))(dtype(0.0), dtype(1.5))
    assert np.isfinite(d_base) and np.isfinite(d_beta) and d_beta == 0
    # and away from 0 the derivatives are the power rule's
    db, de = jax.grad(_safe_power, argnums=(0, 1))(dtype(2.0), dtype(1.5))
    rule = [1.5 * 2.0**0.5, 2.0**1.5 * np.log(2.0)]
    np.testing.assert_allclose([db, de], rule, rtol=8 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_hill_guess_reads_exponent_and_ec50_from_the_hill_plot(dtype):
    """The Hill guess fits the line log(f/(1 − f)) = hill·(log x − log ec50) through the
    transition: on noise-free curves, rising and falling, on a linear grid and on doses
    over five decades, the exponent and ec50 come out within 20 % (the levels, from the
    2nd and 98th percentiles, are not quite the plateaus).  An exponent of 1 (the old
    start) would be 33-75 % off here.  A flat curve has no transition: exponent 1."""
    import jax

    model = models.get("hill")
    doses = np.logspace(-3, 2, 16)
    cases = [
        (X1, (0.2, 2.5, 3.0, 2.2)),
        (X1, (2.5, 0.2, 2.0, 4.0)),
        (doses, (0.1, 1.0, 0.05, 0.8)),
        (doses, (5.0, 1.0, 1.0, 1.5)),
    ]
    guess = jax.jit(model.guess)
    for x, true in cases:
        y = np.asarray(model(jnp.asarray(x), *true)).astype(dtype)
        got = np.asarray(guess(x.astype(dtype), y))
        assert got.dtype == dtype
        np.testing.assert_allclose(got[2:], true[2:], rtol=0.2, err_msg=str(true))
    flat = np.asarray(guess(X1.astype(dtype), np.full(X1.size, 3.0, dtype)))
    assert flat[3] == 1 and np.all(np.isfinite(flat)), flat


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_rectangle_guess_reads_each_edge_width(dtype):
    """Each edge's width from the points between a quarter and three quarters of the way
    up on its side: within 20 % of the true widths on noise-free rectangles with unequal
    edges (span/50, the old start, is 2.5-7.5× too narrow here), and with a NaN point."""
    import jax

    model = models.get("rectangle")
    guess = jax.jit(model.guess)
    for true in [(2.0, 3.0, 0.5, 7.0, 0.8), (1.0, 2.0, 0.6, 8.0, 1.5), (3.0, 1.5, 0.3, 5.0, 1.0)]:
        y = np.array(model(jnp.asarray(X1), *true), dtype)
        y[7] = np.nan
        got = np.asarray(guess(X1.astype(dtype), y))
        assert got.dtype == dtype
        want = np.asarray(true)[[2, 4]]
        np.testing.assert_allclose(got[[2, 4]], want, rtol=0.2, err_msg=str((true, got)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_damped_sine_guess_reads_the_decay_from_the_two_halves(dtype):
    """τ from the mean squares of the two halves of x, A from the mean square over x:
    within 10 % on noise-free damped sines (τ = span of x, the old start, is 2-7× off
    here), with a NaN point; a growing oscillation has no decay to read and starts at
    the span of x."""
    import jax

    model = models.get("damped_sine")
    guess = jax.jit(model.guess)
    for true in [(2.0, 4.0, 0.8, 0.6, 0.1), (1.0, 1.5, 1.2, -1.0, 0.0), (1.0, 20.0, 0.5, 2.0, 1.0)]:
        y = np.array(model(jnp.asarray(X1), *true), dtype)
        y[11] = np.nan
        got = np.asarray(guess(X1.astype(dtype), y))
        assert got.dtype == dtype
        np.testing.assert_allclose(got[:2], true[:2], rtol=0.1, err_msg=str((true, got)))
    growing = np.array(model(jnp.asarray(X1), 1.0, -30.0, 0.6, 0.5, 0.0), dtype)
    assert np.asarray(guess(X1.astype(dtype), growing))[1] == np.float32(X1[-1] - X1[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_stretched_exponential_guess_reads_beta_from_the_decay(dtype):
    """beta and tau from the line log(−log f) = beta·(log x − log tau) through the decay:
    within 15 % on noise-free compressed decays (beta > 1; beta = 1, the old start, is
    40-60 % off), with a NaN point.  A flat curve has no decay: beta starts at 1."""
    import jax

    model = models.get("stretched_exponential")
    guess = jax.jit(model.guess)
    for true in [(2.0, 3.0, 1.6, 0.5), (1.0, 2.0, 2.5, 0.1)]:
        y = np.array(model(jnp.asarray(X1), *true), dtype)
        y[5] = np.nan
        got = np.asarray(guess(X1.astype(dtype), y))
        assert got.dtype == dtype
        np.testing.assert_allclose(got[1:3], true[1:3], rtol=0.15, err_msg=str((true, got)))
    flat = np.asarray(guess(X1.astype(dtype), np.full(X1.size, 2.0, dtype)))
    assert flat[2] == 1 and np.all(np.isfinite(flat)), flat


def test_the_power_law_guess_is_the_log_log_line():
    """The power-law guess through the shared line fit (``models._base.line``): the exact
    exponent and amplitude of a noise-free power law, from two points too, and 1 where
    no line is determined (a single point)."""
    import jax

    guess = jax.jit(models.get("power_law").guess)
    x = np.linspace(0.5, 4.0, 9)
    np.testing.assert_allclose(np.asarray(guess(x, 1.5 * x**0.7)), [1.5, 0.7], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(guess(x[:2], -2.0 * x[:2] ** -1.3)), [-2.0, -1.3], rtol=1e-12)
    assert np.asarray(guess(x[:1], np.array([3.0])))[1] == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_moffat_guess_reads_beta_from_two_widths(dtype):
    """beta from the widths at ½ and ¼ of the height ((w¼/w½)² = 2^(1/beta) + 1, widths
    from y joined linearly between points): sigma and beta within 10 % on noise-free
    Moffat profiles from beta = 0.8 to 10 (beta = 1, the old start, is 25-90 % off for
    each), with a NaN point in the tail; a rectangle-like plateau (flatter than any
    Moffat) starts at beta = 1."""
    import jax

    model = models.get("moffat")
    guess = jax.jit(model.guess)
    for true in [(2.0, 5.0, 0.8, 1.5), (1.0, 4.0, 0.3, 0.8), (1.0, 4.0, 1.5, 4.0), (1.0, 4.0, 2.0, 10.0)]:
        y = np.array(model(jnp.asarray(X1), *true), dtype)
        y[-3] = np.nan
        got = np.asarray(guess(X1.astype(dtype), y))
        assert got.dtype == dtype
        np.testing.assert_allclose(got[2:], true[2:], rtol=0.1, err_msg=str((true, got)))
    plateau = np.where(np.abs(X1 - 5) < 2, 1.0, 0.0).astype(dtype)
    assert np.asarray(guess(X1.astype(dtype), plateau))[3] == 1
