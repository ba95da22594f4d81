"""``jaxlm fit``: a file of 10 000 curves round-trips, and bad input is one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

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
            "--no-compile-cache",  # in-process: the test process's JAX config stays as it is
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
    rc = cli.main(
        [
            "fit",
            str(d / "curves.npy"),
            *argv,
            "--out",
            str(d / "r.npz"),
            "--no-progress",
            "--no-compile-cache",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and message in err, err


def test_the_command_keeps_its_compilations_for_the_next_run(curves, tmp_path):
    """As typed on the command line (a new process each run): the first run fills the
    persistent compilation cache under $XDG_CACHE_HOME/jaxlm/xla, the second reads it,
    and both write the same numbers; --no-compile-cache writes nothing."""
    d, _, y = curves
    np.save(tmp_path / "few.npy", y[:1000])
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")

    def run(out, *extra):
        cmd = [sys.executable, "-m", "jaxlm.cli", "fit", str(tmp_path / "few.npy"), "--model", "gaussian"]
        cmd += ["--x", str(d / "x.npy"), "--out", str(tmp_path / out), "--no-progress", *extra]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return _cli_fit.read_results(tmp_path / out)

    cache = tmp_path / "cache" / "jaxlm" / "xla"
    assert cli.compile_cache_dir() != str(cache)  # the test process's own is untouched
    run("none.npz", "--no-compile-cache")
    assert not cache.exists()
    cold = run("cold.npz")
    entries = sorted(p.name for p in cache.iterdir())
    assert entries  # the run's programs are kept
    warm = run("warm.npz")
    assert sorted(p.name for p in cache.iterdir()) == entries  # nothing new to compile
    for name in ("params", "perr", "chi2", "status"):
        np.testing.assert_array_equal(warm[name], cold[name])
