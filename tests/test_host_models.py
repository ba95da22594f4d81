"""Models JAX cannot trace (numpy calls, Python control flow): fitted on the host with
scipy's finite-difference Jacobian or the caller's jac, checked against scipy itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import jaxlm

HOST = pytest.warns(UserWarning, match="cannot be traced by JAX")
TIGHT = dict(ftol=1e-15, xtol=1e-15, gtol=1e-15)


def decay(x, a, k, c):
    return a * np.exp(-k * x) + c


def decay_jac(x, a, k, c):
    e = np.exp(-k * x)
    return np.stack([e, -a * x * e, np.ones_like(x)], axis=1)


def branchy(x, a, k, c):
    """Python control flow on a parameter, as lmfit's lineshapes have."""
    if k < 0:
        return np.full_like(x, np.inf)
    return a * np.exp(-k * x) + c


def data(seed=0, n=1):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 4.0, 60)
    ys = np.stack([decay(x, 2.0 + i, 1.3, 0.2) for i in range(n)]) + 0.02 * rng.standard_normal((n, 60))
    return x, ys


@pytest.mark.parametrize("model", [decay, branchy])
def test_a_numpy_model_gives_scipys_answer(model):
    x, ys = data()
    with HOST:
        popt, pcov = jaxlm.curve_fit(model, x, ys[0], p0=[1.0, 1.0, 0.0], **TIGHT)
    ref, ref_cov = so.curve_fit(model, x, ys[0], p0=[1.0, 1.0, 0.0], **TIGHT)
    np.testing.assert_allclose(popt, ref, rtol=1e-7)
    # both Jacobians at the solution are the same forward difference
    np.testing.assert_allclose(pcov, ref_cov, rtol=1e-4)


def test_the_callers_jac_is_used_and_exact():
    x, ys = data(1)
    calls = []

    def jac(x, *p):
        calls.append(p)
        return decay_jac(x, *p)

    with HOST:
        popt, pcov = jaxlm.curve_fit(decay, x, ys[0], p0=[1.0, 1.0, 0.0], jac=jac, **TIGHT)
    assert calls
    ref, ref_cov = so.curve_fit(decay, x, ys[0], p0=[1.0, 1.0, 0.0], jac=decay_jac, **TIGHT)
    np.testing.assert_allclose(popt, ref, rtol=1e-9)
    np.testing.assert_allclose(pcov, ref_cov, rtol=1e-7)
    with HOST, pytest.raises(ValueError, match=r"jac\(xdata, \*p0\) returns shape \(60, 2\)"):
        jaxlm.curve_fit(decay, x, ys[0], p0=[1.0, 1.0, 0.0], jac=lambda x, *p: decay_jac(x, *p)[:, :2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_batch_with_bounds_sigma_and_mask_under_the_driver(dtype):
    """Every fit-layer feature still applies; each member equals its own scipy fit."""
    x, ys = data(2, n=3)
    sigma = np.full(60, 0.02)
    mask = np.ones((3, 60), bool)
    mask[1, ::7] = False
    bounds = ([0.0, 0.0, -1.0], [10.0, 5.0, 1.0])
    with HOST:
        res = jaxlm.fit(
            decay,
            x.astype(dtype),
            ys.astype(dtype),
            np.array([1.0, 1.0, 0.0], dtype),
            sigma=sigma.astype(dtype),
            mask=mask,
            bounds=bounds,
            chunk_size=2,  # through the driver: chunks, padding, compaction
        )
    assert res.params.dtype == dtype and np.all(np.asarray(res.success))
    for i in range(3):
        keep = mask[i]
        ref, _ = so.curve_fit(
            decay, x[keep], ys[i, keep], p0=[1.0, 1.0, 0.0], sigma=sigma[keep], bounds=bounds
        )
        np.testing.assert_allclose(res.params[i], ref, rtol=2e-3 if dtype == np.float32 else 1e-6)


def test_differentiating_a_fit_of_a_numpy_model_raises_a_clear_error():
    x, ys = data(3)
    with HOST, pytest.raises(TypeError, match="cannot be differentiated.*jax.numpy"):
        jax.grad(lambda y: jaxlm.fit(decay, x, y, jnp.array([1.0, 1.0, 0.0])).params[0])(jnp.asarray(ys[0]))


def test_a_jax_model_is_not_sent_to_the_host(recwarn):
    x, ys = data(4)
    res = jaxlm.fit(lambda x, a, k, c: a * jnp.exp(-k * x) + c, x, ys[0], [1.0, 1.0, 0.0])
    assert bool(res.success) and not [w for w in recwarn if "cannot be traced" in str(w.message)]


def test_a_numpy_model_of_the_wrong_length_or_complex_is_named():
    x, ys = data(5)
    with HOST, pytest.raises(ValueError, match=r"f\(xdata, \*p0\) returns shape \(4,\); expected \(60,\)"):
        jaxlm.fit(lambda x, a, k, c: decay(x, a, k, c)[:4], x, ys[0], [1.0, 1.0, 0.0])
    with HOST, pytest.raises(ValueError, match="complex values"):
        jaxlm.fit(lambda x, a, k, c: decay(x, a, k, c) * 1j, x, ys[0], [1.0, 1.0, 0.0])


def test_the_warnings_point_at_the_callers_line():
    """jaxlm's wrappers (data precision, explicit mesh axes, curve_fit over fit) sit
    between the caller and the warning: it must still name the caller's file and line."""
    x = np.linspace(0.0, 1.0, 10)
    y = 2.0 * np.exp(-x)
    calls = {
        "curve_fit": lambda: jaxlm.curve_fit(lambda x, a: a * np.exp(-x * a), x, y, p0=[1.0]),
        "fit": lambda: jaxlm.fit(lambda x, a: a * np.exp(-x * a), x, y, p0=[1.0]),
        # one point, one parameter: dof 0, pcov inf
        "covariance": lambda: jaxlm.fit(lambda x, a: a * jnp.exp(-x), x[:1], y[:1], p0=[1.0]),
    }
    for name, call in calls.items():
        with pytest.warns(Warning) as caught:
            line = call.__code__.co_firstlineno
            call()
        assert caught, name
        for w in caught:
            assert (w.filename, w.lineno) == (__file__, line), (name, w.filename, w.lineno, str(w.message))
