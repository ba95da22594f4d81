"""Every bad input a clear error, nothing a user passed in lost or changed (the API).

A case table over ``least_squares``, ``least_squares_batch``, ``fit`` and ``curve_fit``:
each case ends in a ``TypeError``/``ValueError`` that names the argument and is raised by
the input checks (never from inside the solver), in a documented status, or in a correct
result; no input array is modified by any case.  Hypothesis then throws random values at
each option.  The command line has its own table in ``test_cli.py``.
"""

from __future__ import annotations

import copy
import sys
import traceback
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxlm

X = np.linspace(0.0, 3.0, 8)
TRUE = np.array([[2.0, 1.3], [1.0, 0.7], [3.0, 2.0]])
Y = TRUE[:, :1] * np.exp(-TRUE[:, 1:] * X)  # (3, 8), exact data
P0 = np.array([1.0, 1.0])


def decay(x, a, k):
    return a * jnp.exp(-k * x)


def residual(p, x, y):
    return decay(x, p[0], p[1]) - y


def decay_jac(x, a, k):
    e = jnp.exp(-k * x)
    return jnp.stack([e, -a * x * e], axis=-1)


# the solver's own functions: an input error must never come from inside them
_SOLVER_FRAMES = {
    "fit_one",
    "_solve",
    "_solve_vmapped",
    "run",
    "step",
    "prepare_one",
    "finish_one",
    "fit_batch",
}


def _assert_raised_by_the_checks(excinfo):
    frames = traceback.extract_tb(excinfo.tb)
    inside = [
        f"{f.name} ({f.filename})" for f in frames if "jaxlm" in f.filename and f.name in _SOLVER_FRAMES
    ]
    assert not inside, f"raised inside the solver: {inside}"


def _fit(**kw):
    args = dict(f=decay, xdata=X, ydata=Y, p0=P0)
    args.update(kw)
    return jaxlm.fit(args.pop("f"), args.pop("xdata"), args.pop("ydata"), args.pop("p0"), **args)


def _curve_fit(**kw):
    args = dict(f=decay, xdata=X, ydata=Y[0], p0=P0)
    args.update(kw)
    return jaxlm.curve_fit(args.pop("f"), args.pop("xdata"), args.pop("ydata"), args.pop("p0"), **args)


def _ls(**kw):
    return jaxlm.least_squares(residual, kw.pop("x0", P0), kw.pop("args", (X, Y[0])), **kw)


def _lsb(**kw):
    return jaxlm.least_squares_batch(
        residual,
        kw.pop("x0", np.tile(P0, (3, 1))),
        kw.pop("args", (X, Y)),
        in_axes=kw.pop("in_axes", (None, 0)),
        **kw,
    )


# (id, call, exception type, the argument its message must name)
ERRORS = [
    # options: kinds, ranges, strings never taken as truth values
    ("fit max_steps str", lambda: _fit(max_steps="10"), TypeError, "max_steps"),
    ("fit max_steps float", lambda: _fit(max_steps=1.5), TypeError, "max_steps"),
    ("fit max_steps negative", lambda: _fit(max_steps=-1), ValueError, "max_steps"),
    ("ls max_steps bool", lambda: _ls(max_steps=True), TypeError, "max_steps"),
    ("fit absolute_sigma str", lambda: _fit(absolute_sigma="no"), TypeError, "absolute_sigma"),
    ("fit absolute_sigma int", lambda: _fit(absolute_sigma=0), TypeError, "absolute_sigma"),
    ("fit geodesic str", lambda: _fit(geodesic="False"), TypeError, "geodesic"),
    ("ls geodesic str", lambda: _ls(geodesic="False"), TypeError, "geodesic"),
    ("lsb geodesic None", lambda: _lsb(geodesic=None), TypeError, "geodesic"),
    ("fit compact str", lambda: _fit(compact="yes"), TypeError, "compact"),
    ("fit progress int", lambda: _fit(progress=1), TypeError, "progress"),
    ("fit xdata_batched str", lambda: _fit(xdata_batched="True"), TypeError, "xdata_batched"),
    ("fit sigma_batched str", lambda: _fit(sigma=np.ones(8), sigma_batched="no"), TypeError, "sigma_batched"),
    ("curve_fit check_finite str", lambda: _curve_fit(check_finite="no"), TypeError, "check_finite"),
    ("curve_fit full_output str", lambda: _curve_fit(full_output="yes"), TypeError, "full_output"),
    ("fit ftol NaN", lambda: _fit(ftol=float("nan")), ValueError, "ftol"),
    ("fit xtol inf", lambda: _fit(xtol=np.inf), ValueError, "xtol"),
    ("fit gtol str", lambda: _fit(gtol="1e-8"), TypeError, "gtol"),
    ("ls tau zero", lambda: _ls(tau=0.0), ValueError, "tau"),
    ("fit f_scale zero", lambda: _fit(f_scale=0.0), ValueError, "f_scale"),
    ("fit f_scale str", lambda: _fit(f_scale="1"), TypeError, "f_scale"),
    ("fit geodesic_alpha negative", lambda: _fit(geodesic_alpha=-1.0), ValueError, "geodesic_alpha"),
    ("fit damping unknown", lambda: _fit(damping="identity"), ValueError, "damping"),
    ("fit loss unknown", lambda: _fit(loss="l2"), ValueError, "loss"),
    ("fit estimator unknown", lambda: _fit(estimator="mle"), ValueError, "estimator"),
    ("fit nan_policy unknown", lambda: _fit(nan_policy="drop"), ValueError, "nan_policy"),
    ("fit nan_policy list", lambda: _fit(nan_policy=["omit"]), ValueError, "nan_policy"),
    ("fit implicit_hessian unknown", lambda: _fit(implicit_hessian="bfgs"), ValueError, "implicit_hessian"),
    ("fit unknown keyword", lambda: _fit(max_stepz=3), TypeError, "max_stepz"),
    ("ls unknown keyword", lambda: _ls(max_stepz=3), TypeError, "max_stepz"),
    (
        "fit solver and keywords",
        lambda: _fit(solver=jaxlm.LevenbergMarquardt(), max_steps=5),
        TypeError,
        "solver",
    ),
    ("ls solver not a solver", lambda: _ls(solver={"damping": "more"}), TypeError, "solver must be"),
    (
        "lsb solver and keywords",
        lambda: _lsb(solver=jaxlm.LevenbergMarquardt(), damping="more"),
        TypeError,
        "solver",
    ),
    ("fit chunk_size zero", lambda: _fit(chunk_size=0), ValueError, "chunk_size"),
    ("fit chunk_size bool", lambda: _fit(chunk_size=True), TypeError, "chunk_size"),
    ("lsb chunk_size float", lambda: _lsb(chunk_size=2.5), TypeError, "chunk_size"),
    ("fit devices str", lambda: _fit(devices=["cpu"]), TypeError, "devices"),
    ("curve_fit maxfev negative", lambda: _curve_fit(maxfev=-1), ValueError, "maxfev"),
    ("curve_fit max_nfev zero", lambda: _curve_fit(max_nfev=0), ValueError, "max_nfev"),
    ("curve_fit method unknown", lambda: _curve_fit(method="bfgs"), ValueError, "method"),
    ("curve_fit lm with bounds", lambda: _curve_fit(method="lm", bounds=(0, 5)), ValueError, "lm"),
    # the model
    ("fit f not callable", lambda: _fit(f=3), TypeError, "f must be callable"),
    ("fit unknown model", lambda: _fit(f="gaussain"), ValueError, "unknown model"),
    (
        "fit complex model",
        lambda: _fit(f=lambda x, a, k: jax.lax.complex(a * x, k * x)),
        TypeError,
        "f returns complex",
    ),
    ("fit model wrong length", lambda: _fit(f=lambda x, a, k: a * x[:4] + k), ValueError, "f\\(xdata"),
    (
        "curve_fit jac wrong shape",
        lambda: _curve_fit(jac=lambda x, a, k: jnp.ones((3, 2))),
        ValueError,
        "jac",
    ),
    (
        "curve_fit jac transposed",
        lambda: _curve_fit(jac=lambda x, a, k: decay_jac(x, a, k).T),
        ValueError,
        "jac",
    ),
    ("curve_fit jac not callable", lambda: _curve_fit(jac=5), TypeError, "jac"),
    ("curve_fit jac unknown name", lambda: _curve_fit(jac="5-point"), ValueError, "jac"),
    ("curve_fit jac raises", lambda: _curve_fit(jac=lambda x, a: x), TypeError, "jac"),
    # data: kinds, dtypes, shapes
    ("fit ydata complex", lambda: _fit(ydata=Y + 1j), TypeError, "ydata must be real"),
    ("fit p0 complex", lambda: _fit(p0=P0 + 0j), TypeError, "p0 must be real"),
    ("fit sigma complex", lambda: _fit(sigma=np.ones(8) + 0j), TypeError, "sigma must be real"),
    ("fit xdata complex", lambda: _fit(xdata=X + 0j), TypeError, "xdata must be real"),
    ("fit ydata float16", lambda: _fit(ydata=Y.astype(np.float16)), TypeError, "ydata has dtype float16"),
    (
        "fit p0 float16",
        lambda: _fit(p0=P0.astype(np.float16), ydata=Y.astype(np.float16)),
        TypeError,
        "float16",
    ),
    (
        "fit xdata bfloat16",
        lambda: _fit(xdata=jnp.asarray(X, jnp.bfloat16)),
        TypeError,
        "xdata has dtype bfloat16",
    ),
    (
        "fit ydata object",
        lambda: _fit(ydata=np.array([1, "a", None, 2] * 2, dtype=object)),
        TypeError,
        "ydata",
    ),
    ("fit ydata strings", lambda: _fit(ydata=["a"] * 8), TypeError, "ydata must hold numbers"),
    (
        "fit ydata ragged",
        lambda: _fit(ydata=[[1.0, 2.0], [1.0, 2.0, 3.0]]),
        TypeError,
        "ydata must be a rectangular",
    ),
    ("fit p0 ragged", lambda: _fit(p0=[[1.0], [1.0, 2.0]]), TypeError, "p0 must be a rectangular"),
    ("fit xdata strings", lambda: _fit(xdata=[str(v) for v in X]), TypeError, "xdata must hold numbers"),
    ("fit ydata empty", lambda: _fit(ydata=np.zeros(0)), ValueError, "ydata"),
    ("fit ydata scalar", lambda: _fit(ydata=1.0), ValueError, "ydata"),
    ("fit xdata None", lambda: _fit(xdata=None), ValueError, "xdata"),
    ("fit xdata short", lambda: _fit(xdata=X[:7]), ValueError, "xdata"),
    ("fit p0 short", lambda: _fit(p0=[1.0]), ValueError, "f\\(xdata|p0"),
    ("fit p0 batch mismatch", lambda: _fit(p0=np.ones((2, 2))), ValueError, "p0"),
    (
        "curve_fit p0 none and varargs",
        lambda: _curve_fit(f=lambda x, *p: p[0] * x, p0=None),
        ValueError,
        "p0",
    ),
    # bounds
    ("fit bounds NaN", lambda: _fit(bounds=([0.0, np.nan], [10.0, 10.0])), ValueError, "bounds"),
    ("fit bounds NaN scalar", lambda: _fit(bounds=(np.nan, np.inf)), ValueError, "bounds"),
    ("fit bounds crossed", lambda: _fit(bounds=([1.0, 1.0], [0.0, 2.0])), ValueError, "bounds"),
    ("fit bounds equal", lambda: _fit(bounds=([1.0, 0.0], [1.0, 2.0]), p0=[1.0, 1.0]), ValueError, "bounds"),
    ("fit bounds not a pair", lambda: _fit(bounds=[0.0, 1.0, 2.0]), ValueError, "bounds"),
    ("fit bounds wrong length", lambda: _fit(bounds=([0.0] * 3, [9.0] * 3)), ValueError, "bounds"),
    ("fit bounds strings", lambda: _fit(bounds=("0", "9")), TypeError, "bounds"),
    ("fit p0 outside bounds", lambda: _fit(bounds=([2.0, 2.0], [3.0, 3.0])), ValueError, "p0"),
    # sigma
    ("fit sigma negative", lambda: _fit(sigma=-np.ones(8)), ValueError, "sigma"),
    ("fit sigma zero", lambda: _fit(sigma=np.zeros(8)), ValueError, "sigma"),
    ("fit sigma NaN", lambda: _fit(sigma=np.full(8, np.nan)), ValueError, "sigma"),
    ("fit sigma inf", lambda: _fit(sigma=np.full(8, np.inf)), ValueError, "sigma"),
    ("fit sigma wrong shape", lambda: _fit(sigma=np.ones(7)), ValueError, "sigma"),
    ("fit sigma too many rows", lambda: _fit(sigma=np.ones((4, 8))), ValueError, "sigma"),
    ("fit cov NaN diagonal", lambda: _fit(sigma=np.diag([1.0] * 7 + [np.nan])), ValueError, "sigma .*finite"),
    (
        "fit cov not symmetric",
        lambda: _fit(sigma=np.eye(8) + np.triu(np.ones((8, 8)), 1) * 0.1),
        ValueError,
        "symmetric",
    ),
    ("fit cov not positive", lambda: _fit(sigma=-np.eye(8)), ValueError, "positive definite"),
    (
        "fit sigma (m, m) for m curves",
        lambda: _fit(ydata=np.tile(Y[0], (8, 1)), sigma=np.eye(8)),
        ValueError,
        "sigma_batched",
    ),
    (
        "fit sigma_batched contradicts",
        lambda: _fit(sigma=np.ones(8), sigma_batched=True),
        ValueError,
        "sigma_batched",
    ),
    ("fit poisson with sigma", lambda: _fit(estimator="poisson", sigma=np.ones(8)), ValueError, "sigma"),
    ("fit poisson negative counts", lambda: _fit(estimator="poisson", ydata=-Y), ValueError, "ydata"),
    # mask, fixed
    ("fit mask not bool", lambda: _fit(mask=np.ones(8)), TypeError, "mask"),
    ("fit mask wrong shape", lambda: _fit(mask=np.ones(7, bool)), ValueError, "mask"),
    ("fit fixed not bool", lambda: _fit(fixed=[1, 0]), TypeError, "fixed"),
    ("fit fixed wrong length", lambda: _fit(fixed=[True]), ValueError, "fixed"),
    (
        "fit nan_policy raise",
        lambda: _fit(ydata=np.where(X > 2, np.nan, Y), nan_policy="raise"),
        ValueError,
        "NaN",
    ),
    ("curve_fit check_finite", lambda: _curve_fit(ydata=np.where(X > 2, np.nan, Y[0])), ValueError, "ydata"),
    # scipy's rule: more parameters than points, without bounds, is a TypeError
    (
        "curve_fit more parameters than points",
        lambda: _curve_fit(
            f=lambda x, a, b, c, d, e: a + b * x + c * x**2 + d * x**3 + e * x**4,
            xdata=X[:4],
            ydata=Y[0, :4],
            p0=None,
        ),
        TypeError,
        "func parameters=5 must not exceed the number of data points=4",
    ),
    # least_squares / least_squares_batch
    ("ls fun not callable", lambda: jaxlm.least_squares("f", P0), TypeError, "fun"),
    ("ls args list", lambda: _ls(args=[X, Y[0]]), TypeError, "args"),
    ("ls x0 strings", lambda: _ls(x0=np.array(["a", "b"])), TypeError, "x0"),
    ("ls x0 empty", lambda: _ls(x0=np.zeros(0)), ValueError, "x0"),
    ("ls x0 float16", lambda: _ls(x0=P0.astype(np.float16)), TypeError, "x0 has dtype float16"),
    ("ls x0 objects", lambda: _ls(x0=np.array([1.0, "a"], dtype=object)), TypeError, "x0 must hold numeric"),
    ("lsb x0 bfloat16", lambda: _lsb(x0=jnp.ones((3, 2), jnp.bfloat16)), TypeError, "x0 has dtype bfloat16"),
    (
        "curve_fit bounds strings",
        lambda: _curve_fit(bounds=("0", "9")),
        TypeError,
        "bounds must hold numbers",
    ),
    (
        "ls complex residual",
        lambda: jaxlm.least_squares(lambda p: jax.lax.complex(p, p), P0),
        ValueError,
        "residual",
    ),
    (
        "lsb empty batch",
        lambda: _lsb(x0=np.zeros((0, 2)), args=(X, np.zeros((0, 8)))),
        ValueError,
        "x0 has an empty batch",
    ),
    ("lsb in_axes bad", lambda: _lsb(in_axes=(1, 0)), ValueError, "in_axes"),
    ("lsb sizes disagree", lambda: _lsb(args=(X, Y[:2])), ValueError, "batch sizes disagree"),
]


@pytest.mark.parametrize("call, error, word", [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_bad_input_is_a_clear_error_from_the_checks(call, error, word):
    with pytest.raises(error, match=word) as excinfo:
        call()
    _assert_raised_by_the_checks(excinfo)


# --------------------------------------------------------------------------- statuses
def test_more_parameters_than_points_is_underdetermined_not_success():
    poly = lambda x, a, b, c: a + b * x + c * x**2  # noqa: E731
    mask = np.ones((3, 8), bool)
    mask[1, 2:] = False  # 2 points for 3 parameters
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the status says it: no covariance warning
        res = jaxlm.fit(poly, X, Y, [1.0, 0.0, 0.0], mask=mask)
    assert int(res.status[1]) == jaxlm.Status.UNDERDETERMINED and not bool(res.success[1])
    assert np.all(np.isposinf(np.asarray(res.pcov[1])))
    assert bool(res.success[0]) and bool(res.success[2])
    # the other members are exactly what they are without the short one
    full = jaxlm.fit(poly, X, Y, [1.0, 0.0, 0.0], mask=np.ones((3, 8), bool))
    for i in (0, 2):
        np.testing.assert_array_equal(res.params[i], full.params[i])
        np.testing.assert_array_equal(res.pcov[i], full.pcov[i])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_degrees_of_freedom_gives_an_all_inf_pcov_and_scipys_warning(dtype):
    import scipy.optimize as so

    x, y = X[:2].astype(dtype), Y[0, :2].astype(dtype)  # 2 points, 2 parameters: dof = 0
    with pytest.warns(so.OptimizeWarning, match="Covariance of the parameters could not be estimated"):
        popt, pcov = jaxlm.curve_fit(decay, x, y, P0.astype(dtype))
    with pytest.warns(so.OptimizeWarning):
        ref_popt, ref_pcov = so.curve_fit(lambda x, a, k: a * np.exp(-k * x), x, y, P0)
    np.testing.assert_allclose(popt, ref_popt, rtol=1e-4)
    assert np.all(np.isposinf(np.asarray(pcov))) and np.all(np.isposinf(ref_pcov))


def test_a_batch_warns_once_counting_the_converged_fits_without_a_covariance():
    mask = np.ones((3, 8), bool)
    mask[2, 2:] = False  # 2 points, 2 parameters: converges exactly, dof = 0
    with pytest.warns(Warning, match="could not be estimated for 1 of 3 fits") as record:
        res = _fit(mask=mask)
    assert len(record) == 1 and bool(res.success[2]) and np.all(np.isposinf(np.asarray(res.pcov[2])))
    assert np.all(np.isfinite(np.asarray(res.pcov[:2])))


def test_an_empty_batch_of_curves_returns_empty_results_with_and_without_chunks():
    empty = np.zeros((0, 8))
    for kw in ({}, {"chunk_size": 4}):
        res = _fit(ydata=empty, **kw)
        assert res.params.shape == (0, 2) and res.pcov.shape == (0, 2, 2) and res.status.shape == (0,)


# --------------------------------------------------------------------------- correct results
def test_numpy_scalars_are_accepted_as_options_and_mean_the_same():
    plain = _fit(max_steps=50, xtol=1e-6, f_scale=0.5, loss="huber", tau=1e-3)
    numpy = _fit(
        max_steps=np.int64(50),
        xtol=np.float32(1e-6),
        f_scale=np.float32(0.5),
        loss="huber",
        tau=np.float64(1e-3),
    )
    np.testing.assert_array_equal(numpy.params, plain.params)
    assert jaxlm.LevenbergMarquardt(max_steps=np.int64(50)) == jaxlm.LevenbergMarquardt(max_steps=50)
    sol = _lsb(chunk_size=np.int32(2), compact=np.bool_(False), geodesic=np.bool_(True))
    np.testing.assert_allclose(sol.params, TRUE, rtol=1e-8)


def test_solver_options_as_one_object_or_as_keywords_are_the_same_fit():
    kw = dict(damping="levenberg", geodesic_alpha=0.5, max_steps=80, tau=1e-2)
    solver = jaxlm.LevenbergMarquardt(**kw)
    for a, b in (
        (_fit(solver=solver), _fit(**kw)),
        (_ls(solver=solver), _ls(**kw)),
        (_lsb(solver=solver), _lsb(**kw)),
    ):
        np.testing.assert_array_equal(a.params, b.params)
        np.testing.assert_array_equal(a.n_steps, b.n_steps)


@pytest.mark.parametrize("limit", [2**31, 2**63 - 1, sys.maxsize])
def test_a_huge_max_steps_means_no_limit_not_a_wrapped_one(limit):
    assert jaxlm.LevenbergMarquardt(max_steps=limit).max_steps == 2**31 - 1
    sol = _ls(max_steps=limit)
    assert bool(sol.success) and int(sol.n_steps) > 1
    np.testing.assert_allclose(sol.params, TRUE[0], rtol=1e-8)


def test_a_callable_jac_is_used_with_scipys_meaning():
    import scipy.optimize as so

    rng = np.random.default_rng(3)
    y = Y[0] + 0.01 * rng.standard_normal(8)
    popt, pcov = jaxlm.curve_fit(decay, X, y, P0, jac=decay_jac)
    ref, ref_pcov = so.curve_fit(
        lambda x, a, k: a * np.exp(-k * x),
        X,
        y,
        P0,
        jac=lambda x, a, k: np.asarray(decay_jac(x, a, k)),
        ftol=1e-15,
        xtol=1e-15,
        gtol=1e-15,
    )
    np.testing.assert_allclose(popt, ref, rtol=1e-7)
    np.testing.assert_allclose(pcov, ref_pcov, rtol=1e-6)
    # it really is the caller's Jacobian: twice it gives a quarter of the covariance
    _, pcov2 = jaxlm.curve_fit(decay, X, y, P0, jac=lambda x, a, k: 2 * decay_jac(x, a, k))
    np.testing.assert_allclose(pcov2, np.asarray(pcov) / 4, rtol=1e-6)
    # and through bounds (the transform's chain rule) and a batch
    res = jaxlm.fit(decay, X, Y, P0, jac=decay_jac, bounds=([0.0, 0.0], [10.0, 10.0]))
    np.testing.assert_allclose(res.params, TRUE, rtol=1e-7)


def test_no_input_array_is_modified_by_any_case():
    arrays = {"X": X, "Y": Y, "P0": P0, "TRUE": TRUE}
    before = copy.deepcopy(arrays)
    sigma, mask, fixed = np.full((3, 8), 0.1), np.ones((3, 8), bool), np.array([False, False])
    y_nan = Y.copy()
    y_nan[1, 3] = np.nan
    kept = [sigma.copy(), mask.copy(), fixed.copy(), y_nan.copy()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _, call, _, _ in ERRORS:
            with pytest.raises((TypeError, ValueError)):
                call()
        _fit(sigma=sigma, mask=mask, fixed=fixed, bounds=(0.0, 10.0))
        _fit(ydata=y_nan, nan_policy="omit", p0=np.tile(P0, (3, 1)))
    for name, value in arrays.items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    for got, want in zip([sigma, mask, fixed, y_nan], kept, strict=True):
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- isolation
ISOLATION_OPTIONS = [
    {},
    {"loss": "cauchy"},
    {"sigma": np.full((4, 8), 0.1)},
    {"sigma": 0.1 * np.eye(8)},
    {"mask": np.ones((4, 8), bool)},
    {"nan_policy": "omit"},
    {"bounds": ([0.0, 0.0], [10.0, 10.0])},
    {"fixed": [False, True], "p0": np.array([[1.0, 1.3], [1.0, 0.7], [1.0, 1.0], [1.0, 2.0]])},
    {"estimator": "poisson"},
    {"compact": False, "chunk_size": 2},
    {"absolute_sigma": True, "geodesic": False},
]


@pytest.mark.parametrize("options", ISOLATION_OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_a_bad_member_never_changes_the_others(options):
    """Members 0, 2, 3 are bit-for-bit the same whether member 1 holds good data or NaN."""
    y = np.concatenate([Y, Y[:1] * 1.1]) + 0.5  # offset: positive counts for Poisson too
    f = lambda x, a, k: decay(x, a, k) + 0.5  # noqa: E731
    bad = y.copy()
    bad[1, 2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        good_res = jaxlm.fit(f, X, y, **{"p0": P0, **options})
        bad_res = jaxlm.fit(f, X, bad, **{"p0": P0, **options})
    if options.get("nan_policy") == "omit":
        assert bool(bad_res.success[1]) and int(bad_res.dof[1]) == int(good_res.dof[1]) - 1
    else:
        assert int(bad_res.status[1]) == jaxlm.Status.NONFINITE
    for i in (0, 2, 3):
        for field in ("params", "pcov", "chi2", "status", "n_steps"):
            np.testing.assert_array_equal(
                np.asarray(getattr(bad_res, field))[i], np.asarray(getattr(good_res, field))[i], err_msg=field
            )
        assert bool(good_res.success[i])


# --------------------------------------------------------------------------- fuzzing the options
# what each option may legitimately be; anything else must be an error naming it
_KINDS = {
    "max_steps": lambda v: (
        isinstance(v, int | np.integer)
        and not isinstance(v, bool | np.bool_)
        and v >= 0
        or isinstance(v, float)
        and v.is_integer()
        and v >= 0
    ),
    "ftol": lambda v: v is None or _real(v) and 0 <= v < np.inf,
    "tau": lambda v: _real(v) and 0 < v < np.inf,
    "f_scale": lambda v: _real(v) and 0 < v < np.inf,
    "absolute_sigma": lambda v: isinstance(v, bool | np.bool_),
    "geodesic": lambda v: isinstance(v, bool | np.bool_),
    "compact": lambda v: isinstance(v, bool | np.bool_),
    "loss": lambda v: isinstance(v, str) and v in ("linear", "soft_l1", "huber", "cauchy", "arctan"),
    "nan_policy": lambda v: v is None or isinstance(v, str) and v in ("omit", "raise"),
    "damping": lambda v: isinstance(v, str) and v in ("more", "levenberg", "marquardt"),
}
_JUNK = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["no", "False", "0", "more", "omit", "huber", "1e-3", ""]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.sampled_from(
        [np.float32(-1), np.float32(0.5), np.int8(-3), np.int64(7), np.bool_(True), np.array([1.0, 2.0])]
    ),
    st.builds(object),
)


def _real(v):
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(_KINDS)), value=_JUNK)
def test_any_value_of_any_option_is_an_error_naming_it_or_accepted_only_if_legitimate(name, value):
    """Traced abstractly (``jax.eval_shape``: every check runs, nothing compiles)."""
    legitimate = _KINDS[name](value)
    try:
        jax.eval_shape(lambda y: _fit(ydata=y, **{name: value}), jnp.asarray(Y))
    except (TypeError, ValueError) as err:
        assert name in str(err), f"{name}={value!r} raised without naming it: {err}"
        assert not legitimate, f"{name}={value!r} is legitimate but raised: {err}"
        return
    assert legitimate, f"{name}={value!r} was accepted"


@pytest.mark.parametrize(
    "options",
    [
        dict(max_steps=np.int64(200), ftol=np.float32(1e-10), tau=np.float64(1e-2)),
        dict(
            absolute_sigma=np.bool_(True),
            geodesic=np.bool_(False),
            f_scale=np.float32(2.0),
            loss="soft_l1",
            nan_policy="omit",
            damping="levenberg",
        ),
    ],
)
def test_legitimate_unusual_option_values_give_the_right_fit(options):
    res = _fit(**options)
    assert np.asarray(res.success).all()
    np.testing.assert_allclose(res.params, TRUE, rtol=1e-6)


# --------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_result_keeps_the_inputs_float_dtype_and_ints_are_promoted(dtype):
    res = _fit(xdata=X.astype(dtype), ydata=Y.astype(dtype), p0=P0.astype(dtype))
    assert res.params.dtype == dtype and res.pcov.dtype == dtype
    ints = _fit(xdata=np.arange(8), ydata=np.round(10 * Y[0]).astype(np.int64), p0=np.array([10, 1]))
    assert ints.params.dtype == jnp.result_type(float)


def test_data_traced_under_jit_still_get_their_checks():
    @jax.jit
    def f(y):
        return _fit(ydata=y, p0=P0[:1])

    with pytest.raises(ValueError, match="p0|f\\(xdata"):
        f(jnp.asarray(Y))
