"""``jaxlm fit``: a file of 10 000 curves round-trips, and bad input is one line, exit 2."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm
from jaxlm import _cli_fit, cli

TRUE = (2.0, 0.3, 0.7, 0.1)


@pytest.fixture(scope="module")
def curves(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    x = np.linspace(-3.0, 3.0, 32)
    clean = np.asarray(jaxlm.models.gaussian(jnp.asarray(x), *[jnp.asarray(v) for v in TRUE]))
    y = clean * rng.uniform(0.5, 1.5, (10_000, 1)) + 0.02 * rng.standard_normal((10_000, 32))
    y[7, :] = np.nan  # an all-NaN row: a status, not a crash
    np.save(d / "curves.npy", y)
    np.save(d / "x.npy", x)
    return d, x, y


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_fit_round_trips_ten_thousand_curves(curves, suffix, capsys):
    d, x, y = curves
    out = d / f"results{suffix}"
    rc = cli.main(
        [
            "fit",
            str(d / "curves.npy"),
            "--model",
            "gaussian",
            "--x",
            str(d / "x.npy"),
            "--out",
            str(out),
            "--chunk",
            "4096",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "10000 curves fitted" in capsys.readouterr().out
    res = _cli_fit.read_results(out)
    assert res["params"].shape == (10_000, 4) and res["perr"].shape == (10_000, 4)
    assert list(res["param_names"]) == list(jaxlm.models.gaussian.param_names)
    assert res["status"][7] == jaxlm.Status.NO_DATA  # NaN points are omitted: nothing left
    ok = np.delete(np.arange(10_000), 7)
    assert np.all(np.isin(res["status"][ok], [1, 2, 3]))
    # the same numbers as one direct call (to the file's precision for csv)
    direct = jaxlm.fit("gaussian", x, y[:500], nan_policy="omit")
    rtol = 0 if suffix == ".npz" else 1e-9
    np.testing.assert_allclose(res["params"][:500], direct.params, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(res["perr"][:500], direct.perr, rtol=max(rtol, 1e-12))
    np.testing.assert_allclose(res["params"][ok, 1], TRUE[1], atol=0.05)  # centres are right
    assert np.all(res["dof"][ok] == 32 - 4)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "gausian"], "--model: unknown model"),
        (["--model", "gaussian", "--x", "missing.npy"], "--x: no such file"),
        (["--model", "gaussian", "--x", "x.npy", "--sigma", "bad_sigma.npy"], "sigma"),
        (["--model", "gaussian", "--x", "short_x.npy"], "xdata"),
        (["--model", "gaussian_2d"], "--x is required"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(curves, argv, message, capsys):
    d, x, _ = curves
    np.save(d / "bad_sigma.npy", -np.ones(32))
    np.save(d / "short_x.npy", x[:-1])
    argv = [a if not a.endswith(".npy") else str(d / a) for a in argv]
    rc = cli.main(["fit", str(d / "curves.npy"), *argv, "--out", str(d / "r.npz"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and message in err, err
