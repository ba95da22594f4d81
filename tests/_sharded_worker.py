"""Run by tests/test_batch.py in fresh processes (device flags must precede JAX's start).

``python _sharded_worker.py devices``: 4 simulated CPU devices in one process.
``python _sharded_worker.py host ID PORT``: one of two processes of a multi-host run.
Prints ``OK`` after every check passed; an assertion error otherwise.
"""

from __future__ import annotations

import os
import re
import sys
import warnings

mode = sys.argv[1] if __name__ == "__main__" else None  # imported by the tests: helpers only
if mode == "devices":
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
if mode == "host":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"localhost:{sys.argv[3]}", num_processes=2, process_id=int(sys.argv[2])
    )

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

import jaxlm  # noqa: E402
from jaxlm import _batch  # noqa: E402

T = np.linspace(0.0, 4.0, 30)


# Different programs (batch sizes, shardings, compaction) round differently, and a noisy
# minimum is only pinned to ~√eps along its flat directions (the cost cannot see finer
# changes).  Zero-residual data and tight tolerances make every program end at the
# minimiser itself, to rounding, so the results can be compared at 1e-10.
# Identity damping: on these decays its members' step counts spread widely (the slowest
# take > 2× the median), which the compaction test needs; the driver is damping-agnostic.
TIGHT = dict(ftol=0.0, xtol=1e-13, gtol=1e-13, damping="levenberg")


def decay(p, t, y):
    return p[0] * jnp.exp(-p[1] * t) + p[2] - y


def problems(n, seed=0):
    rng = np.random.default_rng(seed)
    true = np.stack([rng.uniform(1, 3, n), rng.uniform(0.5, 2, n), rng.uniform(-0.2, 0.2, n)], 1)
    y = true[:, :1] * np.exp(-true[:, 1:2] * T) + true[:, 2:]
    p0 = np.tile([1.0, 1.0, 0.0], (n, 1))
    p0[::17, 1] = 30.0  # stragglers: starts far from the solution
    return p0, y


def reference(p0, y):
    solve = jax.vmap(lambda p, yy: jaxlm.least_squares(decay, p, (T, yy), **TIGHT))
    return jax.jit(solve)(jnp.asarray(p0), jnp.asarray(y))


def check_equal(result, ref):
    np.testing.assert_allclose(np.asarray(result.params), np.asarray(ref.params), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(result.status), np.asarray(ref.status))


def main_devices():
    devices = jax.devices()
    assert len(devices) == 4, devices
    mesh = Mesh(np.asarray(devices), ("batch",))
    p0, y = problems(400)
    ref = reference(p0, y)
    rows = NamedSharding(mesh, PartitionSpec("batch"))
    p0_s, y_s = jax.device_put(p0, rows), jax.device_put(y, rows)
    sol = jaxlm.least_squares_batch(decay, p0_s, (T, y_s), in_axes=(None, 0), **TIGHT)
    assert sol.params.sharding.spec[0] == "batch", sol.params.sharding
    assert len(sol.params.sharding.device_set) == 4
    check_equal(sol, ref)
    # the devices option shards unsharded input (402 is padded to a multiple of 4 inside)
    sol = jaxlm.least_squares_batch(
        decay, p0[:402], (T, y[:402]), in_axes=(None, 0), devices=devices, **TIGHT
    )
    assert len(sol.params.sharding.device_set) == 4
    check_equal(sol, jax.tree_util.tree_map(lambda a: a[:402], ref))
    # the fitting layer keeps the sharding too and matches its single-device answer
    model = lambda t, a, k, c: a * jnp.exp(-k * t) + c  # noqa: E731
    plain = jaxlm.fit(model, T, y, p0, absolute_sigma=True, compact=False, **TIGHT)
    res = jaxlm.fit(model, T, y_s, jax.device_put(p0, rows), absolute_sigma=True, **TIGHT)
    assert len(res.params.sharding.device_set) == 4 and res.params.sharding.spec[0] == "batch"
    np.testing.assert_allclose(np.asarray(res.params), np.asarray(plain.params), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(res.pcov), np.asarray(plain.pcov), rtol=1e-8)
    np.testing.assert_array_equal(np.asarray(res.status), np.asarray(plain.status))
    # the covariance warning reads each device's part on the host (no program on the
    # result's devices, where notebook 5 hung) and counts every fit once
    from jaxlm._fitting._result import _host_parts

    parts = _host_parts(res.pcov)
    assert len(parts) == 4 and all(isinstance(part, np.ndarray) for part in parts)
    assert sum(len(part) for part in parts) == 400
    mask = np.ones(y.shape, bool)
    mask[7, 3:] = False  # 3 points, 3 parameters: dof = 0, pcov inf
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jaxlm.fit(model, T, y_s, jax.device_put(p0, rows), mask=jax.device_put(mask, rows), **TIGHT)
    messages = [str(w.message) for w in caught if "Covariance" in str(w.message)]
    assert len(messages) == 1 and "for 1 of 400 fits" in messages[0], messages
    check_sharded_compaction(rows)
    check_make_mesh(model, p0, y, plain)


def check_make_mesh(model, p0, y, plain):
    """Data sharded on meshes from ``jax.make_mesh`` (JAX's recommended constructor; its
    axes are Explicit by default), with and without ``jax.set_mesh``, beside unsharded x
    and sigma: every entry point equals the one-device answer and returns its results
    on the caller's mesh, sharded along the batch axis.  400 fits run through the
    driver; 40 as one vmapped program.  Explicit axes used to fail to trace ("Mapped away
    dimension of inputs passed to vmap should be sharded the same", ShardingTypeError)."""
    import contextlib

    x = np.linspace(-3.0, 3.0, 32)
    centres = np.linspace(-1.0, 1.0, 400)[:, None]
    peaks = 2.0 * np.exp(-0.5 * ((x - centres) / 0.7) ** 2) + 0.1  # exact: pinned to rounding
    sigma = np.full(x.shape, 0.1)
    want = {
        "fit": plain.params,
        "curve_fit": plain.params,
        "gaussian": jaxlm.fit("gaussian", x, peaks, sigma=sigma, compact=False, **TIGHT).params,
        "least_squares_batch": reference(p0, y).params,
    }
    # the Auto axes of a plain Mesh are checked above
    for in_context, n in [(False, 400), (True, 400), (False, 40)]:
        mesh = jax.make_mesh((4,), ("fits",), axis_types=(jax.sharding.AxisType.Explicit,))
        rows = NamedSharding(mesh, PartitionSpec("fits"))
        y_s, p0_s, peaks_s = (jax.device_put(a[:n], rows) for a in (y, p0, peaks))
        with jax.set_mesh(mesh) if in_context else contextlib.nullcontext():
            got = {
                "fit": jaxlm.fit(model, T, y_s, p0_s, **TIGHT).params,
                "curve_fit": jaxlm.curve_fit(model, T, y_s, p0=p0_s, **TIGHT)[0],
                "gaussian": jaxlm.fit("gaussian", x, peaks_s, sigma=sigma, **TIGHT).params,
                "least_squares_batch": jaxlm.least_squares_batch(
                    decay, p0_s, (T, y_s), in_axes=(None, 0), **TIGHT
                ).params,
            }
        for name, params in got.items():
            where = f"{name}, set_mesh={in_context}, {n} fits"
            sharding = params.sharding
            assert sharding.mesh == mesh and sharding.spec[0] == "fits", (where, sharding)
            expected = np.asarray(want[name])[:n]
            np.testing.assert_allclose(np.asarray(params), expected, rtol=1e-9, atol=1e-12, err_msg=where)


COLLECTIVE = re.compile(r"all-reduce|all-gather|all-to-all|collective-(permute|broadcast)|reduce-scatter")


def check_sharded_compaction(rows):
    """With 300 members per device each shard runs its own blocked loop (blocks per
    shard) and compacts its own stragglers into a phase of its own, the answer is the
    one-device one, and no driver program holds a collective: every device runs its part
    alone."""
    p0, y = problems(1200, seed=1)
    ref = reference(p0, y)
    solver = jaxlm.LevenbergMarquardt(**TIGHT)
    x0, args = jax.device_put(p0, rows), (T, jax.device_put(y, rows))
    state, stats = _batch.run(solver, decay, x0, args, (None, 0), sharding=rows)
    # per shard: the whole shard (300 members) while most run, then blocks
    assert stats.sizes[:2] == (4 * 300, 4 * _batch._block_size(300)), stats
    assert stats.ratio < 2.5, stats
    assert len(state.params.sharding.device_set) == 4
    check_equal(state, ref)
    patience, _batch.PATIENCE = _batch.PATIENCE, 0.0  # stragglers to a phase at once
    try:
        state, stats = _batch.run(solver, decay, x0, args, (None, 0), sharding=rows)
    finally:
        _batch.PATIENCE = patience
    assert stats.sizes[-1] == 4 * _batch.MIN_BUCKET and stats.phases == 2, stats  # compacted per shard
    check_equal(state, ref)
    init, counts = _batch._init(solver, decay, (None, 0), rows, x0, args)
    idx, active, active_args = _batch._compact(_batch.MIN_BUCKET, (None, 0), rows, init, args)
    ledger = jax.device_put(jnp.zeros((4, 2), jnp.float32), rows)
    loop = (jnp.asarray(100, jnp.int32), jnp.asarray(1.0, jnp.float32), ledger)
    programs = {
        "init": _batch._init.lower(solver, decay, (None, 0), rows, x0, args),
        "blocked": _batch._blocked.lower(solver, decay, (None, 0), rows, 64, init, args, *loop),
        "phase": _batch._phase.lower(solver, decay, (None, 0), rows, init, args, 64),
        "compact": _batch._compact.lower(_batch.MIN_BUCKET, (None, 0), rows, init, args),
        "scatter": _batch._scatter.lower(rows, init, active, idx),
    }
    for name, lowered in programs.items():
        hlo = lowered.compile().as_text()
        assert not COLLECTIVE.search(hlo), f"{name}: {COLLECTIVE.search(hlo).group()}"


def main_host():
    me = jax.process_index()
    assert jax.process_count() == 2 and len(jax.devices()) == 2, jax.devices()
    mesh = Mesh(np.asarray(jax.devices()), ("batch",))
    rows = NamedSharding(mesh, PartitionSpec("batch"))
    p0, y = problems(512)  # the same global data on both processes; each holds its half
    local = slice(256 * me, 256 * (me + 1))
    p0_g = jax.make_array_from_process_local_data(rows, p0[local])
    y_g = jax.make_array_from_process_local_data(rows, y[local])
    sol = jaxlm.least_squares_batch(decay, p0_g, (T, y_g), in_axes=(None, 0), **TIGHT)
    assert not sol.params.is_fully_addressable and sol.params.shape == (512, 3)
    (shard,) = sol.params.addressable_shards
    ref = reference(p0[local], y[local])
    np.testing.assert_allclose(np.asarray(shard.data), np.asarray(ref.params), rtol=1e-10, atol=1e-12)
    (status,) = sol.status.addressable_shards
    np.testing.assert_array_equal(np.asarray(status.data), np.asarray(ref.status))


if mode == "devices":
    main_devices()
    print("OK")
elif mode == "host":
    main_host()
    print("OK")
