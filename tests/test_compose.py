"""Composite models, parameters by name, and models evaluated on results."""

from __future__ import annotations

import jax.numpy as jnp
import lmfit
import numpy as np
import pytest
import scipy.special

import jaxlm
from jaxlm import models as M

X = np.linspace(0, 10, 201)
LMFIT_NAMES = ["g1_amplitude", "g1_center", "g1_sigma", "g2_amplitude", "g2_center", "g2_sigma"]
LMFIT_NAMES += ["l_slope", "l_intercept"]


def two_peaks_and_line(n, seed=3, noise=0.02):
    rng = np.random.default_rng(seed)
    true = np.column_stack(
        [
            rng.uniform(2, 4, n),
            rng.uniform(2.5, 3.5, n),
            rng.uniform(0.3, 0.5, n),
            rng.uniform(1, 2, n),
            rng.uniform(6.5, 7.5, n),
            rng.uniform(0.5, 0.7, n),
            rng.uniform(-0.05, 0.05, n),
            rng.uniform(0.2, 0.4, n),
        ]
    )
    model = M.gaussian_peak + M.gaussian_peak + M.linear
    ys = np.asarray(model.eval(X, true)) + noise * rng.standard_normal((n, X.size))
    return model, true, ys


def test_two_gaussians_and_a_line_on_1000_curves_agree_with_lmfit():
    model, true, ys = two_peaks_and_line(1000)
    res = jaxlm.fit(model, X, ys)
    assert model.param_names == (
        "gaussian_peak1_amplitude",
        "gaussian_peak1_center",
        "gaussian_peak1_sigma",
        "gaussian_peak2_amplitude",
        "gaussian_peak2_center",
        "gaussian_peak2_sigma",
        "linear_slope",
        "linear_intercept",
    )
    assert res.param_names == model.param_names
    assert np.all(res.success)
    # every fit within 5 standard errors of the truth, from the composite's own guess
    assert np.all(np.abs(res.params - true) < 5 * res.perr)
    ref_model = lmfit.models.GaussianModel(prefix="g1_") + lmfit.models.GaussianModel(prefix="g2_")
    ref_model += lmfit.models.LinearModel(prefix="l_")
    guess = np.asarray(model.guess(X, ys))
    for i in np.random.default_rng(0).choice(len(ys), 8, replace=False):
        ref = ref_model.fit(
            ys[i], ref_model.make_params(**dict(zip(LMFIT_NAMES, guess[i], strict=True))), x=X
        )
        want = [ref.params[k].value for k in LMFIT_NAMES]
        np.testing.assert_allclose(res.params[i], want, rtol=1e-5)
        s = res[i].summary()
        for ours, theirs in (("redchi", "redchi"), ("aic", "aic"), ("bic", "bic"), ("rsquared", "rsquared")):
            np.testing.assert_allclose(s[ours], getattr(ref, theirs), rtol=1e-9)
        report = res[i].report()
        assert f"reduced chi-square = {s['redchi']:.8g}" in report
        assert (
            f"Akaike info crit   = {s['aic']:.8g}" in report
            and f"Bayesian info crit = {s['bic']:.8g}" in report
        )


def test_names_prefixes_and_errors():
    assert (M.gaussian + M.linear).param_names == (
        "gaussian_amplitude",
        "gaussian_center",
        "gaussian_sigma",
        "gaussian_offset",
        "linear_slope",
        "linear_intercept",
    )
    mine = M.gaussian_peak.with_prefix("g1_") + M.gaussian_peak + M.constant
    assert mine.param_names[:4] == ("g1_amplitude", "g1_center", "g1_sigma", "gaussian_peak_amplitude")
    assert mine.param_names[-1] == "constant_c"
    # a prefixed composite is one part; re-prefixing replaces the prefix
    inner = (M.gaussian_peak + M.constant).with_prefix("a_")
    assert (inner + M.linear).param_names[:2] == ("a_gaussian_peak_amplitude", "a_gaussian_peak_center")
    assert M.step.with_prefix("s_").with_prefix("t_").param_names == ("t_amplitude", "t_center", "t_sigma")
    with pytest.raises(ValueError, match="repeated parameter names"):
        M.gaussian_peak.with_prefix("g_") + M.lorentzian_peak.with_prefix("g_")
    with pytest.raises(ValueError, match="same x"):
        M.gaussian + M.gaussian_2d
    with pytest.raises(TypeError, match="jaxlm Model"):
        M.gaussian + 1.0
    with pytest.raises(ValueError, match="prefix"):
        M.gaussian.with_prefix("1 bad")


def test_composites_built_twice_are_equal_and_names_read_left_to_right():
    a = M.gaussian_peak + M.gaussian_peak + M.linear
    b = M.gaussian_peak + M.gaussian_peak + M.linear
    assert a == b and hash(a) == hash(b)
    assert a.name == "gaussian_peak+gaussian_peak+linear"
    assert ((M.gaussian_peak + M.linear) * M.exponential).name == "(gaussian_peak+linear)*exponential"


def test_eval_of_sums_and_products_is_the_parts():
    p_g, p_l, p_e = np.array([2.0, 4.0, 0.7]), np.array([0.1, 0.5]), np.array([1.5, 3.0, 0.2])
    g, line, e = (
        np.asarray(m(X, *p)) for m, p in ((M.gaussian_peak, p_g), (M.linear, p_l), (M.exponential, p_e))
    )
    np.testing.assert_allclose((M.gaussian_peak + M.linear).eval(X, np.r_[p_g, p_l]), g + line, rtol=1e-14)
    np.testing.assert_allclose(
        ((M.gaussian_peak + M.linear) * M.exponential).eval(X, np.r_[p_g, p_l, p_e]),
        (g + line) * e,
        rtol=1e-14,
    )


def test_eval_on_one_fit_a_batch_a_result_and_names():
    model, true, ys = two_peaks_and_line(6)
    one = model.eval(X, true[0])
    assert one.shape == X.shape
    batch = model.eval(X, true.reshape(2, 3, 8))
    assert batch.shape == (2, 3, X.size)
    np.testing.assert_allclose(batch[0, 0], one, rtol=1e-14)
    per_row = model.eval(np.broadcast_to(X, (6, X.size)) + 1.0, true)
    np.testing.assert_allclose(per_row[2], model(X + 1.0, *true[2]), rtol=1e-14)
    res = jaxlm.fit(model, X, ys)
    np.testing.assert_allclose(model.eval(X, res), model.eval(X, res.params), rtol=0)
    named = dict(zip(model.param_names, true[1], strict=True))
    np.testing.assert_allclose(model.eval(X, named), model.eval(X, true[1]), rtol=1e-14)
    with pytest.raises(ValueError, match="missing"):
        model.eval(X, {"linear_slope": 1.0})
    with pytest.raises(ValueError, match="8 parameters"):
        model.eval(X, true[:, :3])
    with pytest.raises(ValueError, match="x has shape"):
        model.eval(np.ones((4, 201)), true)


def test_product_with_a_fixed_factor_by_name_recovers_its_parameters():
    """A product is scale-degenerate unless one amplitude is held: fixed by name."""
    model = M.gaussian_peak * M.step
    true = np.array([4.0, 5.0, 1.5, 1.0, 4.0, 0.6])
    rng = np.random.default_rng(5)
    ys = np.asarray(model.eval(X, true)) + 0.01 * rng.standard_normal((3, X.size))
    res = jaxlm.fit(model, X, ys, p0={"step_amplitude": 1.0}, fixed=["step_amplitude"])
    assert np.all(res.success) and np.all(res.params[:, 3] == 1.0)
    assert np.all(np.abs(np.asarray(res.params) - true) <= 5 * np.where(res.perr > 0, res.perr, 1e-12))


def test_p0_bounds_and_fixed_by_name():
    model, true, ys = two_peaks_and_line(4)
    # p0 by name: the named values, the others from the guess (per-fit arrays allowed)
    start = np.array([6.6, 6.7, 6.8, 6.9])
    held = jaxlm.fit(model, X, ys, p0={"gaussian_peak2_center": start}, fixed={"gaussian_peak2_center": True})
    np.testing.assert_array_equal(held.params[:, 4], start)
    guess = np.asarray(model.guess(X, ys))
    same = jaxlm.fit(
        model, X, ys, p0=np.where(np.arange(8) == 4, start[:, None], guess), fixed=np.arange(8) == 4
    )
    np.testing.assert_array_equal(held.params, same.params)
    # bounds by name keep a parameter inside, the others free; a guess beyond them is
    # moved inside (it is not the caller's p0, which must be inside)
    capped = jaxlm.fit(model, X, ys, bounds={"gaussian_peak1_sigma": (0.1, 0.3)})
    assert np.all(capped.params[:, 2] <= 0.3) and np.any(np.isclose(capped.params[:, 2], 0.3, rtol=1e-6))
    # curve_fit takes names too, for a function's own parameter names
    popt, _ = jaxlm.curve_fit(
        lambda t, a, rate: a * jnp.exp(-rate * t), X, 2 * np.exp(-0.3 * X), p0={"a": 1.0}
    )
    np.testing.assert_allclose(popt, [2.0, 0.3], rtol=1e-8)
    with pytest.raises(ValueError, match="unknown parameter 'center'"):
        jaxlm.fit(model, X, ys, p0={"center": 1.0})
    with pytest.raises(ValueError, match=r"bounds\['linear_slope'\] must be a pair"):
        jaxlm.fit(model, X, ys, bounds={"linear_slope": 1.0})
    with pytest.raises(ValueError, match="named parameters"):
        jaxlm.fit(lambda t, *p: p[0] * t, X, ys[0], p0={"a": 1.0})


def test_voigt_is_scipys_voigt_profile_times_the_area():
    for sigma, gamma in ((0.5, 0.4), (1.2, 0.01), (0.05, 2.0)):
        want = 2.5 * scipy.special.voigt_profile(X - 4.0, sigma, gamma)
        np.testing.assert_allclose(M.voigt(X, 2.5, 4.0, sigma, gamma), want, rtol=1e-10, atol=1e-14)
