"""``jaxlm fit``: a file of 10 000 curves round-trips, and bad input is one line, exit 2."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

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
    # the same numbers as the same call made directly (to the file's precision for csv)
    direct = jaxlm.fit("gaussian", x, y, nan_policy="omit", chunk_size=4096)
    rtol = 0 if suffix == ".npz" else 1e-9
    np.testing.assert_allclose(res["params"], direct.params, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(res["perr"], direct.perr, rtol=max(rtol, 1e-12))
    # ... and the minimum of a direct fit of fewer curves (other programs: to rounding)
    few = jaxlm.fit("gaussian", x, y[:500], nan_policy="omit")
    np.testing.assert_allclose(res["params"][:500], few.params, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(res["params"][ok, 1], TRUE[1], atol=0.05)  # centres are right
    assert np.all(res["dof"][ok] == 32 - 4)
    # statuses in words and a success column, as the results say
    assert res["status_name"][7] == "NO_DATA" and not res["success"][7]
    assert list(res["status_name"]) == [jaxlm.Status(int(c)).name for c in np.asarray(direct.status)]
    np.testing.assert_array_equal(res["success"], np.asarray(direct.success))
    if suffix == ".npz":  # and the covariance of every fit
        got, want = res["pcov"], np.asarray(direct.pcov)
        finite = np.isfinite(want)  # row 7 has no data: inf, as scipy
        np.testing.assert_array_equal(got[~finite], want[~finite])
        scale = np.asarray(direct.perr)[:, :, None] * np.asarray(direct.perr)[:, None, :]
        assert np.all(np.abs(got[finite] - want[finite]) <= 1e-10 * scale[finite])


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


# --------------------------------------------------------------------------- what people's files hold
@pytest.fixture(scope="module")
def files(curves):
    d, x, y = curves
    f = d / "files"
    f.mkdir()
    few = y[:20]
    np.savez(f / "xy.npz", y=few, x=x)  # x and y in one file, each found by its role
    np.savez(f / "two.npz", a=x, b=few)  # two arrays, no role names: ambiguous
    np.save(f / "complex.npy", few.astype(complex))
    np.save(f / "huge.npy", few * 1e39)
    np.save(f / "zero_rows.npy", np.zeros((0, 32)))
    (f / "zero_bytes.npy").write_bytes(b"")
    (f / "empty.csv").write_text("")
    np.save(f / "sigma_1row.npy", np.ones((1, 32)))
    np.save(f / "sigma_more_rows.npy", np.ones((21, 32)))
    np.save(f / "sigma_fewer_rows.npy", np.ones((19, 32)))
    np.save(f / "few.npy", few)
    with open(f / "table.csv", "w") as fh:  # the spreadsheet layout: x, then one curve per column
        fh.write("t," + ",".join(f"cell{i}" for i in range(3)) + "\n")
        for i, xi in enumerate(x):
            fh.write(f"{float(xi)!r}," + ",".join(repr(float(v)) for v in few[:3, i]) + "\n")
    return f, x, few


ERROR_CASES = [
    (["xy.npz", "--x", "two.npz"], "--x: .*two.npz holds 2 arrays \\(a, b\\); name one as"),
    (["xy.npz", "--x", "two.npz:c"], "--x: .*has no array 'c'"),
    (["few.npy", "--x", "few.npy:x"], "only an .npz file holds named arrays"),
    (["complex.npy"], "CURVES: .*complex"),
    (["huge.npy", "--precision", "32"], "CURVES: values up to 2.*e\\+39 do not fit in float32"),
    (["zero_rows.npy"], "CURVES: .*holds no values"),
    (["zero_bytes.npy"], "CURVES: cannot read"),
    (["empty.csv"], "empty"),
    (["few.npy", "--sigma", "sigma_1row.npy"], "--sigma has shape \\(1, 32\\); expected \\(32,\\)"),
    (["few.npy", "--sigma", "sigma_more_rows.npy"], "--sigma has shape \\(21, 32\\)"),
    (["few.npy", "--sigma", "sigma_fewer_rows.npy"], "--sigma has shape \\(19, 32\\)"),
    (["few.npy", "--out", "results.txt"], "--out must end in .npz or .csv"),
    (["few.npy", "--out", "/proc/no/results.csv"], "--out: cannot write"),
    (["few.npy", "--max-steps", "-1"], "max_steps"),
    (["table.csv", "--x-column", "time"], "--x-column: no column 'time' \\(the header names t, cell0"),
    (["table.csv", "--x-column", "9"], "--x-column: index 9 is outside"),
    (["few.npy", "--model", "gaussian_2d"], "--x is required"),
]


@pytest.mark.parametrize("argv, message", ERROR_CASES, ids=[" ".join(a) for a, _ in ERROR_CASES])
def test_each_bad_file_or_option_is_one_line_and_exit_2(files, argv, message, capsys):
    f, _, _ = files
    argv = [str(f / a) if (f / a.split(":")[0]).exists() else a for a in argv]
    out = [] if "--out" in argv else ["--out", str(f / "r.npz")]
    model = [] if "--model" in argv else ["--model", "gaussian"]
    rc = cli.main(["fit", *argv, *model, *out, "--no-progress", "--no-compile-cache"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_arrays_are_taken_by_name_and_role_and_the_out_name_is_kept(files, capsys):
    """``--x xy.npz`` reads the x array (not y, the file's first), ``xy.npz:y`` names the
    array, and ``--out R.NPZ`` writes exactly R.NPZ."""
    f, x, few = files
    out = f / "R.NPZ"
    argv = ["fit", f"{f / 'xy.npz'}:y", "--x", str(f / "xy.npz"), "--model", "gaussian", "--out", str(out)]
    assert cli.main([*argv, "--no-progress", "--no-compile-cache"]) == 0
    assert out.exists() and not (f / "R.NPZ.npz").exists()
    assert str(out) in capsys.readouterr().out
    res = _cli_fit.read_results(out)
    direct = jaxlm.fit("gaussian", x, few, nan_policy="omit", chunk_size=10_000)  # the CLI's call
    np.testing.assert_array_equal(res["params"], direct.params)


def test_models_and_version_are_listed(capsys):
    assert cli.main(["models"]) == 0
    listing = capsys.readouterr().out
    for name in jaxlm.models.names():
        model = jaxlm.models.get(name)
        assert f"{name}({'points' if model.x_dims == 2 else 'x'}, {', '.join(model.param_names)})" in listing
        assert model.formula in listing
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"jaxlm {jaxlm.__version__}"


def test_a_spreadsheet_with_a_header_and_x_as_a_column(files):
    f, x, few = files
    out = f / "table_results.csv"
    argv = ["fit", str(f / "table.csv"), "--x-column", "t", "--model", "gaussian", "--out", str(out)]
    assert cli.main([*argv, "--no-progress", "--no-compile-cache"]) == 0
    res = _cli_fit.read_results(out)
    direct = jaxlm.fit("gaussian", x, few[:3], nan_policy="omit")
    # the CSV holds the inputs to 17 digits and the results too: the same fit
    np.testing.assert_allclose(res["params"], direct.params, rtol=1e-12)
    assert list(res["status"]) == [int(s) for s in np.asarray(direct.status)]


# As from an interactive shell: the test process may ignore SIGINT (under pytest-xdist in
# CI it did), and a child that inherits SIG_IGN gets no KeyboardInterrupt at all (Python
# installs its handler only over SIG_DFL), so the Ctrl-C tests saw a run that never stopped.
_WITH_SIGINT = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('jaxlm.cli', run_name='__main__', alter_sys=True)"
)


def _spawn(args, tmp_path, **kw):
    cmd = [sys.executable, "-c", _WITH_SIGINT, "fit", *map(str, args), "--no-compile-cache"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _bar_count(text: bytes) -> float:
    """The largest count a tqdm bar with ``unit_scale`` shows in ``text`` ("950/40.0k", "1.2k/40.0k")."""
    counts = [float(v) * (1000 if k else 1) for v, k in re.findall(rb"(\d+(?:\.\d+)?)(k?)/40\.0k", text)]
    return max(counts, default=0)


def test_ctrl_c_while_fitting_keeps_the_finished_curves(curves, tmp_path):
    """SIGINT after the first chunks: exit 130, one line, and the file holds every
    finished row (equal to a direct fit) with the others NaN and status RUNNING."""
    d, x, y = curves
    many = np.tile(y[:100], (400, 1))  # 40 000 curves in chunks of 100: many seconds of work
    np.save(tmp_path / "many.npy", many)
    out = tmp_path / "partial.npz"
    proc = _spawn(
        [
            tmp_path / "many.npy",
            "--model",
            "gaussian",
            "--x",
            d / "x.npy",
            "--out",
            out,
            "--chunk",
            100,
            "--progress",
        ],
        tmp_path,
    )
    seen = b""
    deadline = time.monotonic() + 240
    # the bar counts finished curves, in the chunk being fitted too: at 200 the first
    # chunk of 100 is finished whole
    while _bar_count(seen) < 200:
        assert proc.poll() is None and time.monotonic() < deadline, seen[-500:]
        seen += proc.stderr.read1(4096)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    err = (seen + rest).decode()
    assert proc.returncode == 130, err[-2000:]
    last = [line for line in err.replace("\r", "\n").splitlines() if line.strip()][-1]
    assert last.startswith("jaxlm fit: interrupted:") and "Traceback" not in err, err[-2000:]
    done = int(re.search(r"interrupted: (\d+) of 40000", last).group(1))
    assert 0 < done < 40_000
    res = _cli_fit.read_results(out)
    assert res["params"].shape == (40_000, 4)
    assert np.all(res["status"][done:] == jaxlm.Status.RUNNING) and np.all(np.isnan(res["params"][done:]))
    assert np.all(res["status"][:done] != jaxlm.Status.RUNNING)
    # the command's own call, uninterrupted (the guesses come from one program over the
    # whole batch, so a smaller batch would differ in rounding)
    direct = jaxlm.fit("gaussian", x, many, nan_policy="omit", chunk_size=100)
    np.testing.assert_array_equal(res["params"][:done], direct.params[:done])
    np.testing.assert_array_equal(res["status"][:done], direct.status[:done])


def test_ctrl_c_while_writing_leaves_the_whole_file_and_never_a_truncated_one(curves, tmp_path):
    """SIGINT as soon as the temporary file appears: the write completes (exit 130), the
    result is complete, and until then the previous result at that path stays intact."""
    d, _, y = curves
    rows = 200_000
    np.save(tmp_path / "big.npy", np.tile(y[:8, :8], (rows // 8, 1)))
    out = tmp_path / "r.csv"
    out.write_text("previous result\n")
    proc = _spawn([tmp_path / "big.npy", "--model", "poly1", "--out", out, "--no-progress"], tmp_path)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(".r.csv.*.tmp")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
        assert out.read_text() == "previous result\n"  # untouched while the fit runs
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr.decode()[-2000:]
    assert "interrupted while writing; the results were written whole" in stderr.decode()
    res = _cli_fit.read_results(out)
    assert res["params"].shape == (rows, 2) and np.all(res["status"] != jaxlm.Status.RUNNING)
    assert not list(tmp_path.glob(".r.csv.*"))  # no temporary file left behind
