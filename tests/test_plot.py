"""jaxlm.plot draws what the result says: the fitted curve, the residuals, the statuses."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

import jaxlm
from jaxlm import models as M

matplotlib.use("Agg")  # no display in the suite
import matplotlib.pyplot as plt  # noqa: E402

X = np.linspace(-3, 3, 50)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(2)
    ys = np.asarray(M.gaussian.eval(X, [2.0, 0.3, 0.7, 0.1])) + 0.05 * rng.standard_normal((7, X.size))
    ys[5] = np.nan  # no data: a failed member drawn as such
    return ys, jaxlm.fit("gaussian", X, ys, nan_policy="omit")


def test_one_fit_shows_data_curve_and_residuals(batch):
    ys, res = batch
    fig = jaxlm.plot(res[2], X, ys[2], M.gaussian, sigma=0.05)
    try:
        top, bottom, table = fig.axes
        (curve,) = [line for line in top.get_lines() if line.get_linestyle() == "-"]
        xf, yf = curve.get_data()
        assert xf.size == 400 and xf[0] == X[0] and xf[-1] == X[-1]
        np.testing.assert_allclose(yf, M.gaussian(xf, *np.asarray(res.params[2])), rtol=1e-12)
        _, resid = bottom.get_lines()[-1].get_data()
        want = (ys[2] - np.asarray(M.gaussian(X, *np.asarray(res.params[2])))) / 0.05
        np.testing.assert_allclose(resid, want, rtol=1e-10)
        text = table.texts[0].get_text()
        assert all(name in text for name in M.gaussian.param_names) and "CONVERGED" in text
        assert bottom.get_ylabel() == "(y − f)/σ"
    finally:
        plt.close(fig)


def test_a_batch_shows_chosen_fits_and_a_histogram_per_parameter(batch):
    ys, res = batch
    fig = jaxlm.plot(res, X, ys, "gaussian", which=[0, 5, 6])
    try:
        visible = [ax for ax in fig.axes if ax.get_visible()]
        fits, hists = visible[:3], visible[3:]
        assert [ax.get_title() for ax in fits] == [
            "fit 0: CONVERGED_FTOL",
            "fit 5: NO_DATA",
            "fit 6: CONVERGED_FTOL",
        ]
        assert fits[1].get_lines()[-1].get_color() == "C3"  # the failed member stands out
        assert [ax.get_title() for ax in hists] == list(M.gaussian.param_names)
        counts = sum(patch.get_height() for patch in hists[1].patches)
        assert counts == int(np.sum(res.success)) == 6
    finally:
        plt.close(fig)


def test_plot_refuses_mismatched_data(batch):
    ys, res = batch
    with pytest.raises(ValueError, match="batch of shape"):
        jaxlm.plot(res, X, ys[:3], "gaussian")
    with pytest.raises(TypeError, match="fitted model"):
        jaxlm.plot(res[0], X, ys[0], 3.0)
