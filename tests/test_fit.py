"""jaxlm.fit / jaxlm.curve_fit against scipy on the same problems, and their contracts."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import jaxlm

RTOL = 1e-5  # popt/perr vs scipy's curve_fit
# scipy's default ftol = xtol = 1.5e-8 leaves ~2e-5 in its own perr; the reference runs
# with tight tolerances so that the comparison measures jaxlm, not scipy's stopping.
TIGHT = dict(ftol=1e-15, xtol=1e-15, gtol=1e-15)


def decay(x, a, k, c):
    return a * jnp.exp(-k * x) + c


def decay_np(x, a, k, c):
    return a * np.exp(-k * x) + c


def peak(x, a, c, s, b):
    return a * jnp.exp(-0.5 * ((x - c) / s) ** 2) + b


def peak_np(x, a, c, s, b):
    return a * np.exp(-0.5 * ((x - c) / s) ** 2) + b


def noisy_decays(n_curves=4, m=50, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 4.0, m)
    true = np.stack(
        [rng.uniform(1, 3, n_curves), rng.uniform(0.5, 2, n_curves), rng.uniform(-0.5, 0.5, n_curves)], 1
    )
    y = decay_np(x, *true.T[:, :, None]) + 0.05 * rng.standard_normal((n_curves, m))
    sigma = 0.05 * (1 + rng.random(m))
    return x, y, sigma


def perr(pcov):
    return np.sqrt(np.diagonal(np.asarray(pcov), axis1=-2, axis2=-1))


# --------------------------------------------------------------------------- scipy parity
@pytest.mark.parametrize("weights", ["none", "sigma", "absolute_sigma", "covariance"])
def test_curve_fit_matches_scipy_popt_and_perr(weights):
    x, ys, sigma = noisy_decays()
    kw = {}
    if weights == "sigma":
        kw = dict(sigma=sigma)
    elif weights == "absolute_sigma":
        kw = dict(sigma=sigma, absolute_sigma=True)
    elif weights == "covariance":
        idx = np.arange(x.size)
        kw = dict(sigma=np.outer(sigma, sigma) * 0.3 ** np.abs(idx[:, None] - idx[None, :]))
    p0 = [1.0, 1.0, 0.0]
    batch_popt, batch_pcov = jaxlm.curve_fit(decay, x, ys, p0, **kw)
    for i, y in enumerate(ys):
        ref_popt, ref_pcov = so.curve_fit(decay_np, x, y, p0, **kw, **TIGHT)
        popt, pcov = jaxlm.curve_fit(decay, x, y, p0, **kw)
        np.testing.assert_allclose(popt, ref_popt, rtol=RTOL)
        np.testing.assert_allclose(perr(pcov), perr(ref_pcov), rtol=RTOL)
        np.testing.assert_allclose(pcov, ref_pcov, rtol=1e-4, atol=1e-4 * np.abs(ref_pcov).max())
        np.testing.assert_allclose(batch_popt[i], ref_popt, rtol=RTOL)
        np.testing.assert_allclose(perr(batch_pcov[i]), perr(ref_pcov), rtol=RTOL)


def test_scipy_published_pcov_reference_values():
    """scipy's own test_pcov: a line with sigma, 3·sigma, absolute_sigma; singular cases."""
    xdata = np.array([0, 1, 2, 3, 4, 5], float)
    ydata = np.array([1, 1, 5, 7, 8, 12], float)
    sigma = np.array([1, 2, 1, 2, 1, 2], float)

    def line(x, a, b):
        return a * x + b

    scaled, absolute = [0.20659803, 0.57204404], [0.30714756, 0.85045308]
    for factor in (1, 3):
        _, pcov = jaxlm.curve_fit(line, xdata, ydata, p0=[2, 0], sigma=factor * sigma)
        np.testing.assert_allclose(perr(pcov), scaled, rtol=1e-7)
        _, pcov = jaxlm.curve_fit(line, xdata, ydata, p0=[2, 0], sigma=factor * sigma, absolute_sigma=True)
        np.testing.assert_allclose(perr(pcov), factor * np.array(absolute), rtol=1e-7)
    # the same four fits inside one batch (sigma per fit)
    ys = np.stack([ydata] * 2)
    sig = np.stack([sigma, 3 * sigma])
    _, pcov = jaxlm.curve_fit(line, xdata, ys, p0=[2, 0], sigma=sig)
    np.testing.assert_allclose(perr(pcov), [scaled, scaled], rtol=1e-7)
    _, pcov = jaxlm.curve_fit(line, xdata, ys, p0=[2, 0], sigma=sig, absolute_sigma=True)
    np.testing.assert_allclose(perr(pcov), [absolute, 3 * np.array(absolute)], rtol=1e-7)

    def flat(x, a, b):  # b does not act: pcov all inf, as scipy
        return a * x

    with pytest.warns(so.OptimizeWarning, match="Covariance of the parameters could not be estimated"):
        _, pcov = jaxlm.curve_fit(flat, xdata, ydata, p0=[2, 0], sigma=sigma)
    assert np.all(np.isposinf(pcov))
    with pytest.warns(so.OptimizeWarning, match="Covariance of the parameters could not be estimated"):
        _, pcov = jaxlm.curve_fit(line, xdata[:2], ydata[:2], p0=[2, 0])  # dof = 0
    assert np.all(np.isposinf(pcov))


def test_p0_none_uses_ones_like_scipy_and_the_guess_for_models():
    x, ys, _ = noisy_decays(1)
    ref, _ = so.curve_fit(decay_np, x, ys[0], **TIGHT)
    popt, _ = jaxlm.curve_fit(decay, x, ys[0])
    np.testing.assert_allclose(popt, ref, rtol=RTOL)
    xg = np.linspace(-3, 3, 60)
    y = peak_np(xg, 2.0, 0.4, 0.6, 0.2) + 0.02 * np.random.default_rng(3).standard_normal(60)
    ref, _ = so.curve_fit(peak_np, xg, y, p0=[1, 0, 1, 0], **TIGHT)
    res = jaxlm.fit("gaussian", xg, y)
    np.testing.assert_allclose(res.params, ref, rtol=RTOL)


# --------------------------------------------------------------------------- bounds, losses
def test_bounded_fit_reaches_scipy_trf_cost_and_stays_inside():
    x, ys, _ = noisy_decays(3, seed=4)
    lower, upper = np.array([0.0, 0.0, -1.0]), np.array([5.0, 5.0, 0.0])  # offset bound is active for some
    res = jaxlm.fit(decay, x, ys, np.array([1.0, 1.0, -0.5]), bounds=(lower, upper))
    assert np.all(res.success)
    params = np.asarray(res.params)
    assert np.all(params >= lower) and np.all(params <= upper)
    for i, y in enumerate(ys):
        ref = so.least_squares(
            lambda p, y=y: decay_np(x, *p) - y,
            [1.0, 1.0, -0.5],
            bounds=(lower, upper),
            method="trf",
            ftol=1e-15,
            xtol=1e-15,
            gtol=1e-15,
        )
        assert float(res.cost[i]) <= ref.cost * (1 + 1e-9)
        np.testing.assert_allclose(res.params[i], ref.x, rtol=1e-5, atol=1e-7)
    assert np.any(np.isclose(params[:, 2], 0.0))  # the active bound was reached


def test_per_fit_bounds_and_starts_outside_are_errors():
    x, ys, _ = noisy_decays(2)
    lower = np.array([[0.0, 0.0, -1.0], [0.0, 1.5, -1.0]])
    res = jaxlm.fit(decay, x, ys, np.array([1.0, 2.0, 0.0]), bounds=(lower, np.inf))
    assert np.all(res.params[1, 1] >= 1.5)
    with pytest.raises(ValueError, match="p0 is outside the bounds"):
        jaxlm.fit(decay, x, ys, np.array([1.0, 1.0, 0.0]), bounds=(lower, np.inf))
    with pytest.raises(ValueError, match="bounds"):
        jaxlm.fit(decay, x, ys, [1.0, 1.0, 0.0], bounds=([0, 2, 0], [1, 1, 1]))
    with pytest.raises(ValueError, match="Method 'lm'"):
        jaxlm.curve_fit(decay, x, ys[0], [1.0, 1.0, 0.0], bounds=(0, 10), method="lm")


@pytest.mark.parametrize("loss", ["soft_l1", "huber", "cauchy", "arctan"])
def test_robust_losses_match_scipy_least_squares(loss):
    x, ys, _ = noisy_decays(1, seed=5)
    y = ys[0].copy()
    y[[5, 17, 30]] += [2.0, -1.5, 3.0]  # outliers
    ref = so.least_squares(
        lambda p: decay_np(x, *p) - y,
        [1.0, 1.0, 0.0],
        loss=loss,
        f_scale=0.1,
        method="trf",
        ftol=1e-15,
        xtol=1e-15,
        gtol=1e-15,
    )
    res = jaxlm.fit(decay, x, y, [1.0, 1.0, 0.0], loss=loss, f_scale=0.1)
    assert bool(res.success)
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-8)
    # the robust cost is flat: compare parameters on the scale of the largest one
    np.testing.assert_allclose(res.params, ref.x, rtol=1e-5, atol=1e-5 * np.max(np.abs(ref.x)))
    # and curve_fit with the loss gives scipy's curve_fit pcov (from the rescaled Jacobian)
    ref_popt, ref_pcov = so.curve_fit(decay_np, x, y, [1.0, 1.0, 0.0], loss=loss, f_scale=0.1, method="trf")
    popt, pcov = jaxlm.curve_fit(decay, x, y, [1.0, 1.0, 0.0], loss=loss, f_scale=0.1)
    np.testing.assert_allclose(perr(pcov), perr(ref_pcov), rtol=1e-3)


# --------------------------------------------------------------------------- Poisson
def test_poisson_lands_on_the_deviance_minimiser_of_an_independent_optimiser():
    rng = np.random.default_rng(6)
    x = np.linspace(0.0, 4.0, 40)
    counts = rng.poisson(decay_np(x, 20.0, 1.3, 2.0)).astype(float)
    res = jaxlm.fit(decay, x, counts, [10.0, 1.0, 1.0], estimator="poisson")
    assert bool(res.success)

    def half_deviance(p):
        mu = decay_np(x, *p)
        if np.any(mu <= 0):
            return np.inf
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(counts > 0, counts * np.log(counts / mu), 0.0)
        return np.sum(mu - counts + term)

    ref = so.minimize(
        half_deviance,
        [10.0, 1.0, 1.0],
        method="Nelder-Mead",
        options=dict(xatol=1e-12, fatol=1e-14, maxiter=40000, maxfev=80000),
    )
    np.testing.assert_allclose(res.params, ref.x, rtol=1e-6)
    np.testing.assert_allclose(res.chi2, 2 * half_deviance(ref.x), rtol=1e-9)
    # pcov is the inverse Fisher information Σ ∂μ∂μᵀ/μ at the solution
    p = np.asarray(res.params)
    mu = decay_np(x, *p)
    grad = np.stack([np.exp(-p[1] * x), -p[0] * x * np.exp(-p[1] * x), np.ones_like(x)], 1)
    fisher = grad.T @ (grad / mu[:, None])
    np.testing.assert_allclose(res.pcov, np.linalg.inv(fisher), rtol=1e-6)


def test_poisson_nonpositive_model_gets_its_own_status_without_disturbing_others():
    rng = np.random.default_rng(7)
    x = np.linspace(0.0, 4.0, 40)
    counts = rng.poisson(decay_np(x, 20.0, 1.3, 2.0), size=(3, 40)).astype(float)
    p0 = np.array([[10.0, 1.0, 1.0], [-10.0, 1.0, 1.0], [10.0, 1.0, 1.0]])  # member 1: μ < 0
    res = jaxlm.fit(decay, x, counts, p0, estimator="poisson")
    assert int(res.status[1]) == jaxlm.Status.NONPOSITIVE_MODEL
    alone = jaxlm.fit(decay, x, counts[[0, 0, 2]], p0[[0, 0, 2]], estimator="poisson")
    np.testing.assert_array_equal(np.asarray(res.params)[[0, 2]], np.asarray(alone.params)[[0, 2]])
    with pytest.raises(ValueError, match="ydata"):
        jaxlm.fit(decay, x, -counts, p0, estimator="poisson")
    with pytest.raises(ValueError, match="sigma"):
        jaxlm.fit(decay, x, counts, p0, estimator="poisson", sigma=np.ones(40))


# --------------------------------------------------------------------------- masks, NaN, fixed
def test_mask_equals_dropping_the_points_and_counts_in_dof():
    x, ys, sigma = noisy_decays(3, seed=8)
    rng = np.random.default_rng(9)
    mask = rng.random(ys.shape) > 0.3
    res = jaxlm.fit(decay, x, ys, [1.0, 1.0, 0.0], sigma=sigma, mask=mask)
    for i in range(3):
        keep = mask[i]
        ref_popt, ref_pcov = so.curve_fit(
            decay_np, x[keep], ys[i, keep], [1.0, 1.0, 0.0], sigma=sigma[keep], **TIGHT
        )
        np.testing.assert_allclose(res.params[i], ref_popt, rtol=RTOL)
        np.testing.assert_allclose(res.perr[i], perr(ref_pcov), rtol=RTOL)
        assert int(res.dof[i]) == keep.sum() - 3


def test_masked_covariance_uses_the_unmasked_block():
    x, ys, sigma = noisy_decays(1, seed=10)
    idx = np.arange(x.size)
    cov = np.outer(sigma, sigma) * 0.5 ** np.abs(idx[:, None] - idx[None, :])
    keep = idx % 3 != 0
    ref_popt, ref_pcov = so.curve_fit(
        decay_np, x[keep], ys[0, keep], [1.0, 1.0, 0.0], sigma=cov[np.ix_(keep, keep)], **TIGHT
    )
    res = jaxlm.fit(decay, x, ys[0], [1.0, 1.0, 0.0], sigma=cov, mask=keep)
    np.testing.assert_allclose(res.params, ref_popt, rtol=RTOL)
    np.testing.assert_allclose(res.perr, perr(ref_pcov), rtol=RTOL)


def test_bad_members_get_a_status_and_others_are_bit_for_bit_untouched():
    x, ys, _ = noisy_decays(4, seed=11)
    mask = np.ones(ys.shape, bool)
    bad = ys.copy()
    bad[1] = np.nan  # all NaN
    mask[2] = False  # all masked
    res = jaxlm.fit(decay, x, bad, [1.0, 1.0, 0.0], mask=mask)
    clean = jaxlm.fit(decay, x, ys, [1.0, 1.0, 0.0], mask=np.ones(ys.shape, bool))
    assert int(res.status[1]) == jaxlm.Status.NONFINITE
    assert int(res.status[2]) == jaxlm.Status.NO_DATA
    np.testing.assert_array_equal(res.params[2], [1.0, 1.0, 0.0])
    for i in (0, 3):
        np.testing.assert_array_equal(res.params[i], clean.params[i])
        np.testing.assert_array_equal(res.pcov[i], clean.pcov[i])


def test_nan_policy_omit_matches_scipy_and_raise_raises():
    x, ys, _ = noisy_decays(2, seed=12)
    y = ys.copy()
    y[0, [3, 9]] = np.nan
    ref, ref_pcov = so.curve_fit(decay_np, x, y[0], [1.0, 1.0, 0.0], nan_policy="omit", **TIGHT)
    popt, pcov = jaxlm.curve_fit(decay, x, y, [1.0, 1.0, 0.0], nan_policy="omit")
    np.testing.assert_allclose(popt[0], ref, rtol=RTOL)
    np.testing.assert_allclose(perr(pcov[0]), perr(ref_pcov), rtol=RTOL)
    with pytest.raises(ValueError, match="NaN"):
        jaxlm.curve_fit(decay, x, y, [1.0, 1.0, 0.0], nan_policy="raise")
    with pytest.raises(ValueError, match="ydata"):
        jaxlm.curve_fit(decay, x, y[0], [1.0, 1.0, 0.0])  # check_finite, as scipy


def test_fixed_parameters_equal_a_fit_of_the_reduced_model():
    x, ys, _ = noisy_decays(2, seed=13)
    fixed = np.array([[False, False, True], [True, False, False]])
    p0 = np.array([[1.0, 1.0, 0.25], [2.0, 1.0, 0.0]])
    res = jaxlm.fit(decay, x, ys, p0, fixed=fixed)
    ref0, cov0 = so.curve_fit(lambda x, a, k: decay_np(x, a, k, 0.25), x, ys[0], [1.0, 1.0], **TIGHT)
    ref1, cov1 = so.curve_fit(lambda x, k, c: decay_np(x, 2.0, k, c), x, ys[1], [1.0, 0.0], **TIGHT)
    np.testing.assert_allclose(res.params[0], [*ref0, 0.25], rtol=RTOL)
    np.testing.assert_allclose(res.params[1], [2.0, *ref1], rtol=RTOL)
    np.testing.assert_allclose(res.perr[0, :2], perr(cov0), rtol=RTOL)
    np.testing.assert_allclose(res.perr[1, 1:], perr(cov1), rtol=RTOL)
    assert res.perr[0, 2] == 0 and res.perr[1, 0] == 0
    assert list(np.asarray(res.dof)) == [x.size - 2, x.size - 2]


def test_fixed_parameters_shared_by_a_batch_equal_scipys_reduced_fits():
    """Shared ``fixed`` and bounds take the static change of variables (no branch per
    member at run time): the same answers as scipy on the reduced model."""
    x, ys, _ = noisy_decays(3, seed=15)
    bounds = ([0, 0, -1], [10, 5, 1])
    res = jaxlm.fit(decay, x, ys, [1.0, 1.0, 0.25], fixed=[False, False, True], bounds=bounds)
    for i in range(3):
        ref, cov = so.curve_fit(lambda x, a, k: decay_np(x, a, k, 0.25), x, ys[i], [1.0, 1.0], **TIGHT)
        np.testing.assert_allclose(res.params[i], [*ref, 0.25], rtol=RTOL)
        np.testing.assert_allclose(res.perr[i, :2], perr(cov), rtol=RTOL)
        assert res.perr[i, 2] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shared_and_per_fit_bounds_and_fixed_reach_the_same_fits(dtype):
    """Bounds and ``fixed`` shared by the batch are static (a parameter without bounds
    costs nothing); the same values given per fit select per member at run time.  The
    two programs differ, so the paths agree to rounding: the same statuses' verdict and
    the same minimum to well within the parameters' errors, through the driver."""
    rng = np.random.default_rng(16)
    b, m = 300, 40
    x = np.linspace(-4, 4, m)
    ranges = [(1, 2), (-1, 1), (0.5, 1), (0, 0.3)]
    true = np.stack([rng.uniform(lo, hi, b) for lo, hi in ranges], 1)
    ys = peak_np(x, *true.T[:, :, None]) + 0.02 * rng.standard_normal((b, m))
    x, ys, p0 = x.astype(dtype), ys.astype(dtype), (true * 1.1).astype(dtype)
    lo, hi = np.array([0, -np.inf, 0.1, -np.inf]), np.array([np.inf, np.inf, 3, np.inf])
    fixed = np.array([False, False, False, True])
    tol = 0.05 if dtype == np.float32 else 1e-6  # in units of the parameters' errors
    for shared in (dict(), dict(bounds=(lo, hi)), dict(bounds=(lo, hi), fixed=fixed)):
        per_fit = {
            "bounds": tuple(np.broadcast_to(v, (b, 4)) for v in shared.get("bounds", (-np.inf, np.inf))),
            "fixed": np.broadcast_to(shared.get("fixed", np.zeros(4, bool)), (b, 4)),
        }
        a = jaxlm.fit(peak, x, ys, p0, **shared)
        d = jaxlm.fit(peak, x, ys, p0, **per_fit)
        assert np.all(np.asarray(a.success)) and np.all(np.asarray(d.success))
        scale = np.where(np.asarray(a.perr) > 0, np.asarray(a.perr, float), 1)
        assert np.max(np.abs(np.asarray(a.params, float) - np.asarray(d.params, float)) / scale) <= tol
        np.testing.assert_allclose(a.cost, d.cost, rtol=10 * np.sqrt(np.finfo(dtype).eps))


def test_parameters_without_bounds_are_not_transformed():
    """The static change of variables is the identity for a parameter without bounds (no
    sin, sqrt or per-member branch in the residual the solver differentiates), and the
    bound formulas only where a bound is."""
    from jaxlm._fitting._transform import Transform, to_params

    u = jnp.array([0.3, -0.2, 0.5])
    p0, fixed = jnp.array([1.0, 2.0, 3.0]), jnp.zeros(3, bool)
    lo, hi = jnp.array([-jnp.inf, 0.0, -1.0]), jnp.array([jnp.inf, jnp.inf, 1.0])
    free = Transform.read(jnp.full(3, -jnp.inf), jnp.full(3, jnp.inf), fixed)
    text = str(jax.make_jaxpr(lambda u: to_params(u, p0, lo, hi, fixed, free))(u))
    assert "sin" not in text and "sqrt" not in text and "select" not in text
    mixed = Transform.read(lo, hi, jnp.array([False, False, True]))
    assert mixed.kinds == ("free", "lower", "both") and mixed.fixed == (False, False, True)
    got = to_params(u, p0, lo, hi, jnp.array([False, False, True]), mixed)
    want = to_params(u, p0, lo, hi, jnp.array([False, False, True]))  # per member at run time
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- batching rule
def test_per_fit_xdata_and_a_shared_pixel_grid():
    rng = np.random.default_rng(14)
    xs = np.sort(rng.uniform(0, 4, (3, 30)), axis=1)
    ys = decay_np(xs, 2.0, 1.2, 0.3) + 0.01 * rng.standard_normal((3, 30))
    res = jaxlm.fit(decay, xs, ys, [1.0, 1.0, 0.0])
    for i in range(3):
        ref, _ = so.curve_fit(decay_np, xs[i], ys[i], [1.0, 1.0, 0.0], **TIGHT)
        np.testing.assert_allclose(res.params[i], ref, rtol=RTOL)
    # a shared (2, 25) grid with a batch of 2 spots: only the shared reading gives 25 values
    gx, gy = np.meshgrid(np.arange(5.0), np.arange(5.0))
    grid = np.stack([gx.ravel(), gy.ravel()])
    spots = np.stack(
        [
            jaxlm.models.gaussian_2d(grid, 10.0, 2.1, 1.8, 1.1, 1.0),
            jaxlm.models.gaussian_2d(grid, 8.0, 1.7, 2.4, 0.9, 2.0),
        ]
    )
    res = jaxlm.fit(jaxlm.models.gaussian_2d, grid, spots)
    np.testing.assert_allclose(res.params, [[10.0, 2.1, 1.8, 1.1, 1.0], [8.0, 1.7, 2.4, 0.9, 2.0]], rtol=1e-7)


def test_ambiguous_xdata_asks_for_xdata_batched():
    def either(x, a, b):  # accepts (m,) and (2, m) alike: sums over leading axes
        return a * jnp.sum(jnp.atleast_2d(x), 0) + b

    x = np.stack([np.linspace(0, 1, 10), np.linspace(1, 2, 10)])
    ys = np.stack([2 * x[0] + 1, 2 * x[1] + 1])
    with pytest.raises(ValueError, match="xdata_batched"):
        jaxlm.fit(either, x, ys, [1.0, 0.0])
    per_fit = jaxlm.fit(either, x, ys, [1.0, 0.0], xdata_batched=True)
    np.testing.assert_allclose(per_fit.params, [[2.0, 1.0], [2.0, 1.0]], atol=1e-9)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(xdata=np.linspace(0, 1, 49)), ValueError, "xdata"),
        (dict(p0=[1.0, 1.0]), ValueError, "p0"),
        (dict(p0=np.ones((3, 3))), ValueError, "p0"),
        (dict(sigma=-np.ones(50)), ValueError, "sigma"),
        (dict(sigma=np.ones(49)), ValueError, "sigma"),
        (dict(sigma=np.zeros((50, 50))), ValueError, "sigma"),
        (dict(bounds=([1, 1, 1], [0, 2, 2])), ValueError, "bounds"),
        (dict(f=3), TypeError, "f must be callable"),
        (dict(f="gaussain"), ValueError, "unknown model"),
        (dict(loss="l1"), ValueError, "loss"),
        (dict(estimator="mle"), ValueError, "estimator"),
        (dict(mask=np.ones(50)), TypeError, "mask"),
        (dict(mask=np.ones(49, bool)), ValueError, "mask"),
        (dict(fixed=[True, False]), ValueError, "fixed"),
        (dict(fixed=[1, 0, 0]), TypeError, "fixed"),
        (dict(f_scale=0.0), ValueError, "f_scale"),
        (dict(nan_policy="propagate"), ValueError, "nan_policy"),
        (dict(max_stepz=3), TypeError, "max_stepz"),
    ],
)
def test_bad_input_is_rejected_naming_the_argument(kwargs, error, match):
    x, ys, _ = noisy_decays(2)
    args = dict(f=decay, xdata=x, ydata=ys, p0=[1.0, 1.0, 0.0])
    args.update(kwargs)
    with pytest.raises(error, match=match):
        jaxlm.fit(args.pop("f"), args.pop("xdata"), args.pop("ydata"), args.pop("p0"), **args)


def test_single_failed_curve_fit_raises_like_scipy():
    x, ys, _ = noisy_decays(1)
    with pytest.raises(RuntimeError, match="Optimal parameters not found"):
        jaxlm.curve_fit(decay, x, ys[0], [1.0, 1.0, 0.0], maxfev=2)


# --------------------------------------------------------------------------- differentiable
def _polished_params_and_perr(x, y, sigma, p):
    """scipy's popt and perr for the weighted decay fit, refined from ``p`` by Newton
    steps on ∇χ² = 0.  A fit stops where rounding in χ² hides further progress, which
    leaves ~1e-9 of noise in the parameters: ~1e-5 in a finite difference with h = 1e-4.
    Newton on the gradient pins the root to ~1e-14, a clean reference."""

    def resid(q):
        return (decay(x, *q) - y) / sigma

    def chi2(q):
        return jnp.sum(resid(q) ** 2)

    for _ in range(3):
        p = p - jnp.linalg.solve(jax.hessian(chi2)(p), jax.grad(chi2)(p))
    jac = jax.jacfwd(resid)(p)
    pcov = jnp.linalg.inv(jac.T @ jac) * chi2(p) / (x.shape[0] - p.shape[0])
    return jnp.concatenate([p, jnp.sqrt(jnp.diagonal(pcov))])


@pytest.mark.parametrize("wrt", ["ydata", "xdata", "sigma"])
def test_gradients_through_fit_match_finite_differences(wrt):
    x, ys, sigma = noisy_decays(1, seed=15)
    y = ys[0]
    tight = dict(ftol=0.0, xtol=1e-15, gtol=1e-15)
    base = {"ydata": y, "xdata": x, "sigma": sigma}[wrt]

    def inputs(v):
        kw = {"ydata": y, "xdata": x, "sigma": sigma, wrt: v}
        return jnp.asarray(kw["xdata"]), jnp.asarray(kw["ydata"]), jnp.asarray(kw["sigma"])

    def out(v):
        xx, yy, ss = inputs(v)
        res = jaxlm.fit(decay, xx, yy, jnp.array([1.0, 1.0, 0.0]), sigma=ss, **tight)
        return jnp.concatenate([res.params, res.perr])

    def reference(v):
        xx, yy, ss = inputs(v)
        return _polished_params_and_perr(xx, yy, ss, out(v)[:3])

    direction = jnp.asarray(np.random.default_rng(16).standard_normal(base.shape))
    base = jnp.asarray(base)
    _, jvp = jax.jvp(out, (base,), (direction,))
    h = 1e-4 * (0.01 if wrt == "sigma" else 1.0)
    fd = (reference(base + h * direction) - reference(base - h * direction)) / (2 * h)
    scale = np.max(np.abs(fd))
    np.testing.assert_allclose(jvp, fd, rtol=0, atol=1e-6 * scale)
    grad = jax.grad(lambda v: out(v)[0])(base)
    np.testing.assert_allclose(jnp.vdot(grad, direction), jvp[0], rtol=1e-9)


def test_no_xdata_calls_f_with_none_as_scipy_does():
    """scipy's curve_fit takes xdata=None and calls f(None, *p); fit does too, for a batch,
    keeping f's parameter names, reusing the programs for the same f, and refusing a built-in
    model (which needs x)."""
    t = np.arange(20.0)
    calls = []

    def decay(x, amp, rate):
        calls.append(x)
        return amp * jnp.exp(-rate * t)

    y = np.stack([3.0 * np.exp(-0.5 * t), 1.0 * np.exp(-0.2 * t)])
    res = jaxlm.fit(decay, None, y, p0=[1.0, 1.0])
    np.testing.assert_allclose(np.asarray(res.params), [[3.0, 0.5], [1.0, 0.2]], rtol=1e-9)
    assert res.param_names == ("amp", "rate") and all(x is None for x in calls)
    from jaxlm._fitting._api import without_x

    # the same f gets the same wrapper, hence the same compiled programs
    assert without_x(decay, None, y)[0] is without_x(decay, None, 2 * y)[0]
    again = jaxlm.fit(decay, None, 2 * y, p0=[1.0, 1.0])
    np.testing.assert_allclose(np.asarray(again.params), [[6.0, 0.5], [2.0, 0.2]], rtol=1e-9)
    popt, _ = so.curve_fit(lambda _, a, k: a * np.exp(-k * t), None, y[0], p0=[1.0, 1.0])
    np.testing.assert_allclose(jaxlm.curve_fit(decay, None, y[0], p0=[1.0, 1.0])[0], popt, rtol=1e-6)
    with pytest.raises(ValueError, match="xdata"):
        jaxlm.fit("gaussian", None, y)
    with pytest.raises(ValueError, match="ydata"):
        jaxlm.curve_fit(decay, None, 1.0)


@pytest.mark.parametrize("kind", ["jax", "numpy", "jac"])
def test_curve_fit_full_output_has_leastsqs_pivoted_qr(kind):
    """infodict's fjac/ipvt/qtf as scipy's leastsq lays them out: (J P)ᵀ(J P) = RᵀR for
    the weighted Jacobian J at popt, |diag R| non-increasing, qtf = Qᵀ fvec, and R and
    ipvt as scipy's (scipy's R is from its last Jacobian, one step before its end)."""
    x = np.linspace(0, 1, 11)
    y = 2.0 * np.exp(-2.0 * x) + 0.01 * np.sin(7 * x)
    sigma = np.linspace(0.5, 1.5, 11)
    model = {
        "jax": lambda x, a, b: a * jnp.exp(-b * x),
        "numpy": lambda x, a, b: a * np.exp(-b * x),
        "jac": lambda x, a, b: a * jnp.exp(-b * x),
    }[kind]
    extra = (
        {"jac": lambda x, a, b: jnp.stack([jnp.exp(-b * x), -a * x * jnp.exp(-b * x)], 1)}
        if kind == "jac"
        else {}
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "f cannot be traced by JAX")
        popt, _, info, _, ier = jaxlm.curve_fit(
            model, x, y, [1.0, 1.0], sigma=sigma, full_output=True, **extra
        )
    assert ier in (1, 2, 3)
    a, b = popt
    jac = np.stack([np.exp(-b * x), -a * x * np.exp(-b * x)], 1) / sigma[:, None]
    n, m = 2, x.size
    assert info["fjac"].shape == (n, m) and info["qtf"].shape == (n,)
    r = np.triu(info["fjac"][:, :n].T)
    permuted = jac[:, info["ipvt"]]
    rtol = 1e-6 if kind == "numpy" else 1e-12  # a difference Jacobian: √eps-accurate
    np.testing.assert_allclose(r.T @ r, permuted.T @ permuted, rtol=rtol)
    assert abs(r[0, 0]) >= abs(r[1, 1])
    q = permuted @ np.linalg.inv(r)  # J P = Q R
    # Q of a difference Jacobian is √eps-accurate, and qtf ~ the gradient is tiny here
    atol = 1e-7 * np.linalg.norm(info["fvec"]) if kind == "numpy" else 1e-14
    np.testing.assert_allclose(info["qtf"], q.T @ info["fvec"], rtol=1e-6, atol=atol)
    ref = so.leastsq(lambda p: (p[0] * np.exp(-p[1] * x) - y) / sigma, [1.0, 1.0], full_output=True)[2]
    np.testing.assert_array_equal(info["ipvt"], ref["ipvt"])
    np.testing.assert_allclose(np.abs(r), np.abs(np.triu(ref["fjac"][:, :n].T)), rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_single_curve_runs_the_restart_from_the_host_with_the_whole_programs_answer(dtype, monkeypatch):
    """One concrete curve compiles the first attempt's program, and the program with both
    attempts only after a failed first attempt (here: a step limit of 3).  Either way
    the result is the whole program's: the same status and counts, and the same numbers
    to rounding (the two programs are fused differently); the same curve as a batch of
    one (the vmapped program, with the restart inside) agrees to rounding."""
    from jaxlm import _programs, _restart

    x = np.linspace(-5, 5, 64).astype(dtype)
    y = (2 * np.exp(-0.5 * ((x - 0.3) / 1.1) ** 2) + 0.2).astype(dtype)
    y = (y + 0.05 * np.random.default_rng(3).standard_normal(64)).astype(dtype)
    p0 = np.array([1.0, 0.0, 2.0, 0.0], dtype)
    for options, retried in (({}, False), ({"max_steps": 3}, True)):
        _programs._cache.clear()
        res = jaxlm.fit(peak, x, y, p0, **options)
        solvers = [s for key in _programs._cache for s in key[1] if isinstance(s, jaxlm.LevenbergMarquardt)]
        assert sorted(s.restart is None for s in solvers) == ([False, True] if retried else [True])
        assert bool(res.success) != retried
        with monkeypatch.context() as patch:  # the whole program, as before the split
            patch.setattr(_restart, "one_problem", lambda solver, solve, hiding=(): solve(solver))
            whole = jaxlm.fit(peak, x, y, p0, **options)
        for name in ("status", "n_steps", "n_fev"):  # the same path
            np.testing.assert_array_equal(np.asarray(getattr(res, name)), np.asarray(getattr(whole, name)))
        # in another program, fused otherwise: the same numbers to the last bit or two
        for name in ("params", "cost", "pcov", "chi2", "rsquared"):
            a, b = np.asarray(getattr(res, name)), np.asarray(getattr(whole, name))
            tol = 8 * np.finfo(dtype).eps  # relative to the largest entry (pcov's ~0 ones)
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())
        if retried:
            assert int(res.n_steps) == 6  # both attempts, counted together
        # a batch of one: the batched program's rounding (FMAs), which may end on another
        # stopping test at the same minimum (float32 here: FTOL alone, GTOL in the batch)
        one = jaxlm.fit(peak, x, y[None], p0, **options)
        assert bool(one.success[0]) == bool(res.success)
        assert int(one.n_steps[0]) == int(res.n_steps) or not retried
        rtol = 1e-4 if dtype == np.float32 else 1e-9
        np.testing.assert_allclose(np.asarray(one.params[0]), np.asarray(res.params), rtol=rtol)


def test_a_single_curve_whose_status_the_fit_layer_replaces_gets_the_whole_programs_answer(monkeypatch):
    """UNDERDETERMINED (3 points for 4 parameters) and NO_DATA replace the solver's own
    status, which may be a failure the restart would have run again: such a curve gets
    the program with both attempts, the same answer as before the restart moved to the
    host, bit for bit."""
    from jaxlm import _programs, _restart

    x = np.linspace(-5, 5, 64)
    y = 2 * np.exp(-0.5 * ((x - 0.3) / 1.1) ** 2) + 0.2
    for mask, status in (
        (np.arange(64) < 3, jaxlm.Status.UNDERDETERMINED),
        (np.zeros(64, bool), jaxlm.Status.NO_DATA),
    ):
        _programs._cache.clear()
        res = jaxlm.fit(peak, x, y, [1.0, 0.0, 2.0, 0.0], mask=mask)
        assert int(res.status) == status
        solvers = [s for key in _programs._cache for s in key[1] if isinstance(s, jaxlm.LevenbergMarquardt)]
        assert any(s.restart is not None for s in solvers)
        with monkeypatch.context() as patch:
            patch.setattr(_restart, "one_problem", lambda solver, solve, hiding=(): solve(solver))
            whole = jaxlm.fit(peak, x, y, [1.0, 0.0, 2.0, 0.0], mask=mask)
        for name in ("params", "status", "n_steps", "n_fev"):
            np.testing.assert_array_equal(np.asarray(getattr(res, name)), np.asarray(getattr(whole, name)))
