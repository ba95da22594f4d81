"""Length buckets (jaxlm._fitting._buckets): a fit padded to a power-of-two number of
points gives the unpadded fit's result, a new length within a bucket compiles nothing,
and only models proven pointwise in x are padded."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm
from jaxlm import models
from jaxlm._fitting import _buckets
from tests.helpers import Compiles

X = np.linspace(0.0, 1.0, 50)

POINTWISE = {
    "exponential": (lambda x, a, b: a * jnp.exp(-b * x), 2),
    "ones_like": (lambda x, a: a * jnp.ones_like(x), 1),
    "constant": (lambda x, a: a, 1),
    "double_where": (lambda x, a, b: jnp.where(x > 0, a * jnp.log(jnp.where(x > 0, x, 1.0)), b), 2),
    "polyval (a scan over the coefficients)": (lambda x, a, b, c: jnp.polyval(jnp.stack([a, b, c]), x), 3),
    "nested jit": (jax.jit(lambda x, a: a * jnp.sin(x)), 1),
    "erf": (lambda x, a, c, s: a * jax.scipy.special.erf((x - c) / s), 3),
    "logsumexp over terms": (lambda x, a, b: jax.nn.logsumexp(jnp.stack([a * x, b * x]), axis=0), 2),
    "matrix of features": (lambda x, a, b: jnp.stack([x, x * x], -1) @ jnp.stack([a, b]), 2),
    "cond on a parameter": (lambda x, a: jax.lax.cond(a > 0, lambda v: a * v, lambda v: -v, x), 1),
}
NOT_POINTWISE = {
    "first point": (lambda x, a: a * (x - x[0]), 1),
    "mean": (lambda x, a: a * (x - jnp.mean(x)), 1),
    "len(x)": (lambda x, a: a * x / len(x), 1),
    "x.shape in a jnp constant": (lambda x, a: a * x / jnp.asarray(x.shape[0], x.dtype), 1),
    "cumsum": (lambda x, a: a * jnp.cumsum(x), 1),
    "arange": (lambda x, a: a * jnp.arange(x.shape[0]), 1),
    "numpy arange of the length": (lambda x, a: a * x * np.arange(x.shape[0]), 1),
    "sum of ones_like": (lambda x, a: a * x * jnp.sum(jnp.ones_like(x)), 1),
    "numpy model": (lambda x, a: a * np.exp(-x), 1),
    "convolution": (lambda x, a: jnp.convolve(x, jnp.stack([1.0, a, 1.0]), mode="same"), 1),
    "sort": (lambda x, a: a * jnp.sort(x), 1),
    "pairs of points": (lambda x, a: a * jnp.sum(x[:, None] * x[None, :], 1), 1),
    "reversed": (lambda x, a: a * x[::-1], 1),
    "roll": (lambda x, a: a * jnp.roll(x, 1), 1),
    "scan along the points": (lambda x, a: jax.lax.scan(lambda c, xi: (c + xi, c * a), 0.0, x)[1], 1),
    "one value for all points": (lambda x, a: a * jnp.sum(x), 1),
}


@pytest.mark.parametrize("name", sorted(POINTWISE))
def test_pointwise_models_are_recognised(name):
    fn, n = POINTWISE[name]
    assert _buckets.pointwise(fn, X, n, np.float64)


@pytest.mark.parametrize("name", sorted(NOT_POINTWISE))
def test_models_that_mix_points_are_not_padded(name):
    fn, n = NOT_POINTWISE[name]
    assert not _buckets.pointwise(fn, X, n, np.float64)


def test_every_built_in_model_is_pointwise():
    for name in models.names():
        model = models.get(name)
        x = np.ones((2, 50)) if "2d" in name else X
        assert _buckets.pointwise(model.fn, x, model.n_params, np.float64), name


def test_buckets_are_powers_of_two():
    assert [_buckets.bucket(m) for m in (1, 8, 9, 50, 60, 64, 65, 70, 100)] == [
        8,
        8,
        16,
        64,
        64,
        64,
        128,
        128,
        128,
    ]


def _unpadded(monkeypatch, call):
    with monkeypatch.context() as m:
        m.setattr(_buckets, "BUCKET_MAX", 0)
        return call()


RESULT_FIELDS = ("params", "pcov", "perr", "chi2", "dof", "cost", "status", "n_points", "rsquared")


def _close(a, b, rtol, fields=RESULT_FIELDS):
    for field in fields:
        np.testing.assert_allclose(
            np.asarray(getattr(a, field)), np.asarray(getattr(b, field)), rtol=rtol, atol=0, err_msg=field
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["plain", "sigma", "mask", "omit", "batch", "bounds"])
def test_a_padded_fit_is_the_unpadded_fit(monkeypatch, dtype, case):
    rng = np.random.default_rng(3)
    m = 53
    x = np.linspace(0.0, 4.0, m).astype(dtype)
    y = (2.0 * np.exp(-1.3 * x) + 0.5 + 0.02 * rng.standard_normal(m)).astype(dtype)
    kwargs = {"p0": np.array([1.0, 1.0, 0.0], dtype)}
    if case == "sigma":
        kwargs["sigma"] = (0.02 + 0.01 * rng.uniform(size=m)).astype(dtype)
    elif case == "mask":
        kwargs["mask"] = rng.uniform(size=m) > 0.2
    elif case == "omit":
        y[[3, 17]] = np.nan
        kwargs["nan_policy"] = "omit"
    elif case == "batch":
        y = np.stack([y, 1.5 * y, y + 0.3])
        kwargs["p0"] = np.tile(kwargs["p0"], (3, 1))
    elif case == "bounds":
        kwargs["bounds"] = ([0.0, 0.0, -1.0], [5.0, 1.2, 1.0])  # the rate's bound is active
    model = "exponential"
    padded = jaxlm.fit(model, x, y, **kwargs)
    plain = _unpadded(monkeypatch, lambda: jaxlm.fit(model, x, y, **kwargs))
    assert np.all(np.asarray(padded.success)) and np.all(np.asarray(plain.success))
    assert np.asarray(padded.params).dtype == dtype
    np.testing.assert_array_equal(np.asarray(padded.n_points), np.asarray(plain.n_points))
    if dtype == np.float64:
        _close(padded, plain, rtol=1e-10)
    else:  # sums over 64 points, 11 of them zero, round differently from sums over 53:
        # the same minimum to float32's accuracy, possibly met by another stopping test
        _close(padded, plain, rtol=2e-4, fields=[f for f in RESULT_FIELDS if f != "status"])


def test_curve_fit_infodict_and_a_jitted_fit_see_the_callers_points(monkeypatch):
    x = np.linspace(0.0, 3.0, 37)
    y = 1.7 * np.sin(2.1 * x) + 0.05 * np.cos(13 * x)
    f = lambda x, a, w: a * jnp.sin(w * x)  # noqa: E731
    popt, pcov, info, _, _ = jaxlm.curve_fit(f, x, y, p0=[1.5, 2.0], full_output=True)
    ref = _unpadded(monkeypatch, lambda: jaxlm.curve_fit(f, x, y, p0=[1.5, 2.0], full_output=True))
    assert info["fvec"].shape == (37,) and info["fjac"].shape == (2, 37)
    # At its minimum the cost resolves the parameters only to ~sqrt(eps·dof) standard
    # errors (1e-7 here): FTOL accepts a last step of that size or its rejection, and
    # which one is decided by rounding (here one program accepts a step of 8e-10 in w,
    # 3e-7 standard errors, that the other rejects).  A millionth of a standard error.
    perr = np.sqrt(np.diag(ref[1]))
    np.testing.assert_array_less(np.abs(popt - ref[0]), 1e-6 * perr)
    np.testing.assert_allclose(pcov, ref[1], rtol=1e-8)
    # fvec: the residuals at the caller's 37 points, at each fit's own parameters
    for p, fvec in ((popt, info["fvec"]), (ref[0], ref[2]["fvec"])):
        np.testing.assert_allclose(fvec, np.asarray(f(x, *p)) - y, rtol=1e-10, atol=1e-14)
    # under jit the data are traced: padded the same way (jnp.pad), the same fit
    jitted = jax.jit(lambda y: jaxlm.fit(f, x, y, p0=[1.5, 2.0]).params)(y)
    np.testing.assert_array_less(np.abs(np.asarray(jitted) - popt), 1e-6 * perr)


def test_a_new_length_within_a_bucket_compiles_nothing():
    """The issue's sequence: lengths 50, 60 (bucket 64), 70, 100 (bucket 128)."""
    f = lambda x, a, b, c: a * jnp.exp(-b * x) + c  # noqa: E731  (a model only this test uses)
    rng = np.random.default_rng(0)
    lines = {}
    for m in (50, 60, 70, 100):
        x = np.linspace(0.0, 5.0, m)
        y = 2.0 * np.exp(-1.3 * x) + 0.1 + 0.01 * rng.standard_normal(m)
        with Compiles() as c:
            popt, _ = jaxlm.curve_fit(f, x, y, p0=[1.0, 1.0, 0.0])
        lines[m] = c.lines
        np.testing.assert_allclose(popt, [2.0, 1.3, 0.1], atol=0.05)
    assert lines[50] and lines[70], lines  # a new bucket compiles its fit
    assert lines[60] == [] and lines[100] == [], lines


def test_a_model_that_mixes_points_is_fitted_unpadded_and_right():
    """a·(x − mean x) + b: padding would move the mean.  Linear least squares has a closed
    form: numpy's lstsq on the same design."""
    rng = np.random.default_rng(1)
    x = np.linspace(0.0, 10.0, 45)
    y = 0.7 * (x - x.mean()) + 3.0 + 0.1 * rng.standard_normal(45)
    res = jaxlm.fit(lambda x, a, b: a * (x - jnp.mean(x)) + b, x, y, p0=[0.0, 0.0])
    design = np.stack([x - x.mean(), np.ones_like(x)], 1)
    want = np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose(np.asarray(res.params), want, rtol=1e-8)
    assert int(res.n_points) == 45 and int(res.dof) == 43


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vmap_and_grad_through_a_padded_fit(monkeypatch, dtype):
    """Under vmap the curves are padded with jnp.pad (traced): the same fits as unpadded,
    every member a success; the implicit gradient w.r.t. ydata has the caller's 45 points,
    equals the unpadded one and (float64) central differences."""
    x = np.linspace(0.0, 4.0, 45).astype(dtype)
    rng = np.random.default_rng(5)
    ys = np.stack([2.0 * np.exp(-r * x) + 0.5 for r in (0.8, 1.3, 2.0)])
    ys = (ys + 0.01 * rng.standard_normal(ys.shape)).astype(dtype)
    p0 = np.array([1.0, 1.0, 0.0], dtype)

    def one(y):
        res = jaxlm.fit("exponential", x, y, p0=p0)
        return res.params, res.success

    params, success = jax.vmap(one)(ys)
    ref_params, ref_success = _unpadded(monkeypatch, lambda: jax.vmap(one)(ys))
    assert np.all(np.asarray(success)) and np.all(np.asarray(ref_success))
    rtol = 1e-10 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(np.asarray(params), np.asarray(ref_params), rtol=rtol)

    rate = lambda y: one(y)[0][1]  # noqa: E731
    grad = np.asarray(jax.grad(rate)(ys[0]))
    ref_grad = np.asarray(_unpadded(monkeypatch, lambda: jax.grad(rate)(ys[0])))
    assert grad.shape == (45,) and grad.dtype == dtype
    scale = np.max(np.abs(ref_grad))
    np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=rtol * scale)
    if dtype == np.float64:  # differences of fits solved far below the step (h = 1e-4)
        tight = {"ftol": 1e-15, "xtol": 1e-15, "gtol": 1e-15}

        def tight_rate(y):
            return float(jaxlm.fit("exponential", x, y, p0=p0, **tight).params[1])

        h = 1e-4
        for i in (0, 10, 44):
            e = np.zeros_like(ys[0])
            e[i] = h
            fd = (tight_rate(ys[0] + e) - tight_rate(ys[0] - e)) / (2 * h)
            np.testing.assert_allclose(grad[i], fd, rtol=1e-5, atol=1e-6 * scale)
