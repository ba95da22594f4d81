"""What a FitResult tells people: names, statistics as lmfit computes them, reports, tables."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import lmfit
import numpy as np
import pytest

import jaxlm
from jaxlm import Status


def _gauss(x, amplitude, center, sigma, offset):
    return amplitude * jnp.exp(-0.5 * ((x - center) / sigma) ** 2) + offset


def _gauss_np(x, amplitude, center, sigma, offset):
    return amplitude * np.exp(-0.5 * ((x - center) / sigma) ** 2) + offset


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = np.linspace(-3, 3, 80)
    y = _gauss_np(x, 2.0, 0.3, 0.7, 0.1) + 0.05 * rng.standard_normal((6, 80))
    return x, y


def test_statistics_equal_lmfit_on_the_same_fit(data):
    x, y = data
    res = jaxlm.fit(_gauss, x, y[0], p0=[1.5, 0.0, 1.0, 0.0])
    ref = lmfit.Model(_gauss_np).fit(y[0], x=x, amplitude=1.5, center=0.0, sigma=1.0, offset=0.0)
    assert res.param_names == ("amplitude", "center", "sigma", "offset")
    s = res.summary()
    for name in res.param_names:
        np.testing.assert_allclose(s["params"][name], ref.params[name].value, rtol=1e-6)
        np.testing.assert_allclose(s["errors"][name], ref.params[name].stderr, rtol=1e-4)
    np.testing.assert_allclose(s["chi2"], ref.chisqr, rtol=1e-9)
    np.testing.assert_allclose(s["redchi"], ref.redchi, rtol=1e-9)
    np.testing.assert_allclose(s["aic"], ref.aic, rtol=1e-9)
    np.testing.assert_allclose(s["bic"], ref.bic, rtol=1e-9)
    np.testing.assert_allclose(s["rsquared"], ref.rsquared, rtol=1e-9)
    assert (s["n_points"], s["n_varys"], s["dof"]) == (ref.ndata, ref.nvarys, ref.nfree)
    for (a, b), c in s["correlations"].items():  # lmfit's from MINPACK's difference Jacobian
        np.testing.assert_allclose(c, ref.params[a].correl[b], rtol=1e-4, atol=1e-5)


def test_batch_statistics_are_those_of_each_member(data):
    x, y = data
    batch = jaxlm.fit("gaussian", x, y)
    for i in (0, 3):
        one = jaxlm.fit("gaussian", x, y[i])
        for field in ("params", "perr", "chi2", "rsquared"):
            np.testing.assert_allclose(getattr(batch[i], field), getattr(one, field), rtol=1e-10)
        np.testing.assert_allclose(batch.aic[i], one.aic, rtol=1e-12)
        assert batch[i].report().startswith("[[Fit Statistics]]")  # a member reads like a single fit


def test_mask_and_fixed_count_in_points_and_varys(data):
    x, y = data
    mask = np.arange(80) % 4 != 0
    fixed = np.array([False, False, False, True])
    res = jaxlm.fit("gaussian", x, y[1], p0=[1.5, 0.0, 1.0, 0.1], mask=mask, fixed=fixed)
    assert int(res.n_points) == 60 and int(res.n_varys) == 3 and int(res.dof) == 57
    ref = lmfit.Model(_gauss_np)
    params = ref.make_params(amplitude=1.5, center=0.0, sigma=1.0, offset=0.1)
    params["offset"].vary = False
    ref = ref.fit(y[1][mask], params, x=x[mask])
    np.testing.assert_allclose(float(res.aic), ref.aic, rtol=1e-8)
    np.testing.assert_allclose(float(res.bic), ref.bic, rtol=1e-8)
    np.testing.assert_allclose(float(res.rsquared), ref.rsquared, rtol=1e-8)
    assert "offset:" in res.report() and "C(sigma, offset)" not in res.report()  # fixed: no correlation


def test_names_from_the_signature_or_positions():
    x = np.linspace(0, 1, 20)
    res = jaxlm.fit(lambda t, rate, level: level * jnp.exp(-rate * t), x, np.exp(-2 * x))
    assert res.param_names == ("rate", "level")
    res = jaxlm.fit(lambda t, *c: c[0] + c[1] * t, x, 1 + 3 * x, p0=[0.0, 0.0])
    assert res.param_names == ("p0", "p1")
    np.testing.assert_allclose(res.params, [1, 3], atol=1e-10)
    assert jaxlm.fit("poly2", x, x**2).param_names == ("c0", "c1", "c2")


def test_report_of_a_batch_counts_statuses_and_spreads(data):
    x, y = data
    y = y.copy()
    y[2] = np.nan  # one member without data
    res = jaxlm.fit("gaussian", x, y, nan_policy="omit")
    s = res.summary()
    assert s["n_fits"] == 6 and s["n_success"] == 5
    assert s["status_counts"]["NO_DATA"] == 1
    good = np.asarray(res.params)[np.asarray(res.success)]
    assert s["params"]["center"]["median"] == pytest.approx(float(np.median(good[:, 1])))
    text = res.report()
    assert "NO_DATA 1" in text and "5 (83.3%)" in text and "amplitude:" in text
    assert "5 converged" in repr(res) and "NO_DATA 1" in repr(res)


def test_table_has_one_row_per_fit_and_names_statuses(data):
    x, y = data
    res = jaxlm.fit("gaussian", x, y.reshape(2, 3, 80))
    table = res.to_dict()
    assert all(len(col) == 6 for col in table.values())
    np.testing.assert_array_equal(table["sigma"], np.asarray(res.params)[..., 2].ravel())
    np.testing.assert_array_equal(table["sigma_err"], np.asarray(res.perr)[..., 2].ravel())
    assert list(table["status"]) == [Status(int(c)).name for c in np.asarray(res.status).ravel()]
    np.testing.assert_array_equal(table["aic"], np.asarray(res.aic).ravel())
    pandas = pytest.importorskip("pandas")
    frame = res.to_dataframe()
    assert isinstance(frame, pandas.DataFrame) and frame.shape == (6, len(table))
    assert res[1, 2].summary()["params"]["sigma"] == table["sigma"][5]


def test_a_parameter_named_like_a_statistic_keeps_its_column():
    x = np.linspace(0, 1, 10)
    res = jaxlm.fit(lambda x, chi2, status: chi2 + status * x, x, 2 + 3 * x)
    table = res.to_dict()
    np.testing.assert_allclose([table["param_chi2"][0], table["param_status"][0]], [2, 3], rtol=1e-10)
    assert table["status"][0].startswith("CONVERGED")


def test_results_stay_pytrees_under_jit_and_vmap(data):
    x, y = data
    fitted = jax.jit(lambda y: jaxlm.fit("gaussian", x, y))(jnp.asarray(y))
    assert fitted.param_names == jaxlm.models.gaussian.param_names
    np.testing.assert_allclose(fitted.params, jaxlm.fit("gaussian", x, y).params, rtol=1e-10)

    def inside(y):
        res = jaxlm.fit("gaussian", x, y)
        assert "traced" in repr(res)
        with pytest.raises(TypeError, match="concrete"):
            res.summary()
        return res.params

    jax.vmap(inside)(jnp.asarray(y))


def test_host_results_keep_float64_in_the_statistics(data):
    """float64 numpy data with x64 off come back as numpy float64; the statistics must not
    be narrowed to float32 by a JAX operation."""
    x, y = data
    with jax.enable_x64(False):
        res = jaxlm.fit("gaussian", x, y[0])
        assert isinstance(res.chi2, np.ndarray) and res.aic.dtype == np.float64
        assert isinstance(res.aic, np.ndarray | np.floating)
