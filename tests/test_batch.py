"""The many-problem driver (jaxlm._batch): compaction, chunks, devices, hosts, progress.

Every path must give the answer of the plain vmapped solver, member by member.  The
problems are zero-residual with tight tolerances, so that every compiled program (they
differ in batch size, hence in rounding) ends at the minimiser itself; see
``tests/_sharded_worker.py``.
"""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm
from jaxlm import _batch
from tests.helpers import Compiles

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _sharded_worker import TIGHT, T, decay, problems, reference  # noqa: E402

WORKER = pathlib.Path(__file__).parent / "_sharded_worker.py"


def assert_same(result, ref):
    np.testing.assert_allclose(np.asarray(result.params), np.asarray(ref.params), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(result.cost), np.asarray(ref.cost), rtol=1e-8, atol=1e-24)
    np.testing.assert_array_equal(np.asarray(result.status), np.asarray(ref.status))
    np.testing.assert_array_equal(np.asarray(result.n_steps), np.asarray(ref.n_steps))


def test_compaction_equals_vmap_and_follows_the_members_step_counts():
    p0, y = problems(600)
    ref = reference(p0, y)
    sol = jaxlm.least_squares_batch(decay, p0, (T, y), in_axes=(None, 0), **TIGHT)
    assert_same(sol, ref)

    solver = jaxlm.LevenbergMarquardt(**TIGHT)
    _, stats = _batch.run(solver, decay, jnp.asarray(p0), (T, jnp.asarray(y)), (None, 0))
    steps = np.asarray(ref.n_steps)
    assert stats.needed == steps.sum()
    # the whole batch while most of it runs, then blocks of running members
    assert stats.sizes[:2] == (600, _batch._block_size(600)) and stats.sizes[1] < 600, stats
    plain = steps.size * steps.max()  # what one vmapped while loop executes
    assert steps.max() > 2 * np.median(steps)  # there are stragglers to handle
    assert stats.executed < 0.6 * plain
    assert stats.ratio < 2.5  # each phase keeps ≥ 1/4 of its members busy


@pytest.mark.parametrize("patience", [0.0, 1e9])
def test_stragglers_finish_in_a_phase_of_their_own_or_in_the_blocks(monkeypatch, patience):
    """The last few running members go to a small active set once the blocks' empty
    slots outweigh the work (patience 0: at once; 1e9: never); the answer is the plain
    vmapped one, member by member, either way."""
    monkeypatch.setattr(_batch, "PATIENCE", patience)
    p0, y = problems(600, seed=2)
    ref = reference(p0, y)
    solver = jaxlm.LevenbergMarquardt(**TIGHT)
    state, stats = _batch.run(solver, decay, jnp.asarray(p0), (T, jnp.asarray(y)), (None, 0))
    assert_same(state, ref)
    assert stats.needed == np.asarray(ref.n_steps).sum()
    if patience == 0.0:
        assert stats.sizes[-1] == _batch.MIN_BUCKET and stats.phases == 2, stats
    else:
        assert stats.sizes == (600, _batch._block_size(600)) and stats.phases == 1, stats


def test_chunks_with_a_padded_last_chunk_equal_one_call():
    p0, y = problems(250)
    ref = reference(p0, y)
    sol = jaxlm.least_squares_batch(decay, p0, (T, y), in_axes=(None, 0), chunk_size=100, **TIGHT)
    assert isinstance(sol.params, np.ndarray) and sol.params.shape == (250, 3)
    assert_same(sol, ref)


def test_fit_through_the_driver_equals_the_single_program():
    p0, y = problems(300)
    y = y.copy()
    y[5, 3] = np.nan  # a failed member
    mask = np.ones(y.shape, bool)
    mask[7] = False  # a member without data

    def model(t, a, k, c):
        return a * jnp.exp(-k * t) + c

    kwargs = dict(mask=mask, bounds=([0, 0, -1], [10, 50, 1]), absolute_sigma=True, **TIGHT)
    plain = jaxlm.fit(model, T, y, p0, compact=False, **kwargs)
    for options in (dict(), dict(chunk_size=128)):
        res = jaxlm.fit(model, T, y, p0, **options, **kwargs)
        for name in ("params", "perr", "chi2", "status", "n_steps", "dof"):
            np.testing.assert_allclose(
                np.asarray(getattr(res, name)), np.asarray(getattr(plain, name)), rtol=1e-8, atol=1e-12
            )
    assert res.status[5] == jaxlm.Status.NONFINITE and res.status[7] == jaxlm.Status.NO_DATA


def test_a_second_call_with_the_same_shapes_compiles_nothing():
    p0, y = problems(600, seed=3)  # stragglers: several active-set sizes

    def residual(p, t, y):  # functions of this test's own, so the first calls compile
        return decay(p, t, y)

    def model(t, a, k, c):
        return a * jnp.exp(-k * t) + c

    calls = {
        "compaction": lambda: jaxlm.least_squares_batch(residual, p0, (T, y), in_axes=(None, 0), **TIGHT),
        "chunks": lambda: jaxlm.least_squares_batch(
            residual, p0, (T, y), in_axes=(None, 0), chunk_size=256, **TIGHT
        ),
        "fit": lambda: jaxlm.fit(model, T, y, p0, **TIGHT),
    }
    for name, call in calls.items():
        with Compiles() as first:
            jax.block_until_ready(call())
        assert first.lines, name  # the capture sees compilations
        with Compiles() as second:
            jax.block_until_ready(call())
        assert not second.lines, (name, second.lines)


def test_progress_bar_reports_fits_and_the_status_tally(capsys):
    p0, y = problems(120)
    y = y.copy()
    y[3, 0] = np.inf
    jaxlm.least_squares_batch(decay, p0, (T, y), in_axes=(None, 0), chunk_size=50, progress=True)
    err = capsys.readouterr().err
    assert "120/120" in err and "fit/s" in err
    assert "converged=119" in err and "nonfinite=1" in err


def _ctrl_c_at_chunk(monkeypatch, k):
    """Ctrl-C as the k-th chunk (0-based) finishes: the driver's own progress hook raises."""
    from jaxlm import _stream

    seen = []
    original = _stream.Progress.chunk_done

    def chunk_done(self, out, real):
        original(self, out, real)
        seen.append(real)
        if len(seen) == k + 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(_stream.Progress, "chunk_done", chunk_done)


def test_ctrl_c_in_a_chunked_run_keeps_the_finished_chunks(monkeypatch):
    """An interrupted chunked run raises jaxlm.Interrupted (a KeyboardInterrupt) whose
    result holds every finished chunk exactly as an uninterrupted run gives it, and marks
    the rest not fitted."""
    p0, y = problems(250)
    y = y.copy()
    y[3, 0] = np.nan  # a finished member that failed stays failed, not "not fitted"
    whole = jaxlm.least_squares_batch(decay, p0, (T, y), in_axes=(None, 0), chunk_size=60, **TIGHT)
    _ctrl_c_at_chunk(monkeypatch, 2)  # chunks 0 and 1 finished, chunk 2 cut short
    with pytest.raises(jaxlm.Interrupted) as caught:
        jaxlm.least_squares_batch(decay, p0, (T, y), in_axes=(None, 0), chunk_size=60, **TIGHT)
    assert isinstance(caught.value, KeyboardInterrupt) and caught.value.n_done == 120
    part = caught.value.result
    for name in ("params", "cost", "status", "success", "n_steps", "n_fev"):
        np.testing.assert_array_equal(getattr(part, name)[:120], getattr(whole, name)[:120])
    assert part.status[3] == jaxlm.Status.NONFINITE
    assert np.all(np.isnan(part.params[120:])) and np.all(np.isnan(part.cost[120:]))
    assert np.all(part.status[120:] == jaxlm.Status.RUNNING) and not np.any(part.success[120:])
    assert np.all(part.n_steps[120:] == 0)


def test_ctrl_c_in_a_chunked_fit_keeps_the_batch_shape_and_names(monkeypatch):
    p0, y = problems(240)

    def model(t, a, k, c):
        return a * jnp.exp(-k * t) + c

    shaped = lambda a: a.reshape((4, 60) + a.shape[1:])  # noqa: E731
    whole = jaxlm.fit(model, T, shaped(y), shaped(p0), chunk_size=50, **TIGHT)
    _ctrl_c_at_chunk(monkeypatch, 3)
    with pytest.raises(jaxlm.Interrupted) as caught:
        jaxlm.fit(model, T, shaped(y), shaped(p0), chunk_size=50, **TIGHT)
    part, done = caught.value.result, caught.value.n_done
    assert done == 150 and part.params.shape == (4, 60, 3) and part.param_names == ("a", "k", "c")
    finished = np.arange(240).reshape(4, 60) < done  # the first n_done in C order
    np.testing.assert_array_equal(part.params[finished], whole.params[finished])
    np.testing.assert_array_equal(part.perr[finished], whole.perr[finished])
    assert np.all(np.isnan(part.params[~finished])) and np.all(part.status[~finished] == 0)
    # interrupted before any chunk was stored: nothing to keep
    monkeypatch.undo()
    _ctrl_c_at_chunk(monkeypatch, 0)
    with pytest.raises(jaxlm.Interrupted) as caught:
        jaxlm.fit(model, T, y, p0, chunk_size=50, **TIGHT)
    assert caught.value.result is None and caught.value.n_done == 0


def test_traced_inputs_run_the_vmapped_loop_and_stay_differentiable():
    p0, y = problems(8)

    def total(y):
        return jnp.sum(jaxlm.least_squares_batch(decay, p0, (T, y), in_axes=(None, 0), **TIGHT).params)

    def per_member(y):
        return jnp.sum(jax.vmap(lambda p, yy: jaxlm.least_squares(decay, p, (T, yy), **TIGHT).params)(p0, y))

    g = jax.grad(total)(jnp.asarray(y))
    np.testing.assert_allclose(g, jax.grad(per_member)(jnp.asarray(y)), rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="chunk_size, progress and devices need concrete inputs"):
        jax.jit(lambda y: jaxlm.least_squares_batch(decay, p0, (T, y), in_axes=(None, 0), chunk_size=4))(y)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(in_axes=(0,)), ValueError, "in_axes must be 0, None or a tuple of 2"),
        (dict(in_axes=(None, 1)), ValueError, "in_axes entries must be 0"),
        (dict(chunk_size=0), ValueError, "chunk_size must be ≥ 1"),
        (dict(progress="yes"), TypeError, "progress must be True or False"),
        (dict(devices=["cpu"]), TypeError, "devices must be a non-empty sequence of jax.Device"),
        (dict(compact=1), TypeError, "compact must be True or False"),
        (dict(max_steps=-1), ValueError, "max_steps"),
    ],
)
def test_bad_driver_input_names_the_argument(kwargs, error, match):
    p0, y = problems(6)
    with pytest.raises(error, match=match):
        jaxlm.least_squares_batch(decay, p0, (T, y), **{"in_axes": (None, 0), **kwargs})


def test_batch_sizes_that_disagree_are_named():
    p0, y = problems(6)
    with pytest.raises(ValueError, match=r"batch sizes disagree.*args\[1\]: 5.*x0: 6"):
        jaxlm.least_squares_batch(decay, p0, (T, y[:5]), in_axes=(None, 0))


def _run_worker(*args):
    return subprocess.run(
        [sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=600, check=False
    )


def test_sharded_inputs_stay_sharded_on_four_devices_and_equal_one_device():
    out = _run_worker("devices")
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-3000:]


def test_two_processes_through_jax_distributed():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "host", str(i), port],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0 and stdout.strip().endswith("OK"), stderr[-3000:]
