"""Confidence intervals by profile likelihood: lmfit's conf_interval, batched."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import lmfit
import numpy as np
import pytest

import jaxlm
from jaxlm._fitting._profile import BEYOND_BOUND, FOUND


def _gauss(x, amplitude, center, sigma, offset):
    return amplitude * jnp.exp(-0.5 * ((x - center) / sigma) ** 2) + offset


def _gauss_np(x, amplitude, center, sigma, offset):
    return amplitude * np.exp(-0.5 * ((x - center) / sigma) ** 2) + offset


X = np.linspace(-3, 3, 30)


@pytest.fixture(scope="module")
def noisy():
    rng = np.random.default_rng(7)
    y = _gauss_np(X, 2.0, 0.3, 0.7, 0.1) + 0.2 * rng.standard_normal((3, X.size))
    res = jaxlm.fit(_gauss, X, y, p0=[1.5, 0.0, 1.0, 0.0])
    return y, res, jaxlm.conf_interval(_gauss, X, y, res, sigmas=(1, 2))


def test_every_member_of_a_batch_matches_lmfit(noisy):
    y, res, ci = noisy
    assert ci.lower.shape == (3, 4, 2) and ci.status.shape == (3, 4, 2, 2) and np.all(ci.status == FOUND)
    model = lmfit.Model(_gauss_np)
    for i in range(3):
        ref = model.fit(y[i], x=X, amplitude=1.5, center=0.0, sigma=1.0, offset=0.0).conf_interval(
            sigmas=[1, 2]
        )
        for j, name in enumerate(res.param_names):
            (_, lo2), (_, lo1), _, (_, up1), (_, up2) = ref[name]
            width = up2 - lo2
            # lmfit solves to rtol 5e-5 around the best fit it found (itself ~1e-7 from ours)
            np.testing.assert_allclose(ci.lower[i, j], [lo1, lo2], atol=1e-5 * width)
            np.testing.assert_allclose(ci.upper[i, j], [up1, up2], atol=1e-5 * width)
    text = ci.report(1)
    assert "68.27%" in text and "_BEST_" in text and "amplitude:" in text


def test_a_linear_model_with_known_sigma_gives_the_exact_quadratic_interval():
    """For a model linear in its parameters the profile is exactly quadratic: with σ
    known, the s-level interval is p̂ ± s·perr."""
    rng = np.random.default_rng(3)
    y = 0.5 + 1.5 * X + 0.3 * rng.standard_normal(X.size)
    res = jaxlm.fit("poly1", X, y, sigma=np.full(X.size, 0.3), absolute_sigma=True)
    ci = jaxlm.conf_interval(
        "poly1", X, y, res, sigmas=(1, 2, 3), sigma=np.full(X.size, 0.3), absolute_sigma=True
    )
    s = np.array([1.0, 2.0, 3.0])
    perr, best = np.asarray(res.perr), np.asarray(res.params)
    np.testing.assert_allclose(ci.upper, best[:, None] + s * perr[:, None], rtol=1e-7)
    np.testing.assert_allclose(ci.lower, best[:, None] - s * perr[:, None], rtol=1e-7)


def test_an_end_beyond_a_bound_is_infinite_and_said(noisy):
    y, res, _ = noisy
    best_sigma = float(res.params[0, 2])
    bounds = ([-np.inf, -np.inf, best_sigma - 0.06, -np.inf], np.inf)  # the 2σ lower end is ~0.08 below
    bounded = jaxlm.fit(_gauss, X, y[0], p0=[1.5, 0.0, 1.0, 0.0], bounds=bounds)
    ci = jaxlm.conf_interval(
        _gauss, X, y[0], bounded, sigmas=(1, 2), params=["sigma"], bounds=bounds, p0=[1.5, 0.0, 1.0, 0.0]
    )  # the fit's own arguments, p0 included
    assert ci.status[2, 1, 0] == BEYOND_BOUND and ci.lower[2, 1] == -np.inf
    assert ci.status[2, 0, 0] == FOUND and bounds[0][2] < ci.lower[2, 0] < best_sigma
    assert np.all(np.isnan(ci.lower[[0, 1, 3]]))  # only the parameter asked for


def test_the_interval_does_not_depend_on_x64(noisy):
    y, res, ci = noisy
    with jax.enable_x64(False):
        res32 = jaxlm.fit(_gauss, X, y[0], p0=[1.5, 0.0, 1.0, 0.0])
        ci32 = jaxlm.conf_interval(_gauss, X, y[0], res32, sigmas=(1, 2))
    np.testing.assert_allclose(ci32.upper, ci.upper[0], rtol=1e-9)


def test_bad_arguments_are_named(noisy):
    y, res, _ = noisy
    with pytest.raises(TypeError, match="FitResult"):
        jaxlm.conf_interval(_gauss, X, y, res.params)
    with pytest.raises(ValueError, match="sigmas"):
        jaxlm.conf_interval(_gauss, X, y, res, sigmas=(0, 1))
    with pytest.raises(ValueError, match="unknown parameter 'width'"):
        jaxlm.conf_interval(_gauss, X, y, res, params=["width"])
