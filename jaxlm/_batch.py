"""The many-problem driver: straggler-free batches, chunked streaming, sharding, progress.

Under ``jax.vmap`` a ``lax.while_loop`` runs every member of a batch until the slowest
one stops: a few members that need hundreds of steps (or never meet their tolerance)
hold the whole batch to the step limit.  This module runs a batch of independent LM
problems so that the work follows the members' own step counts instead:

**Compaction.**  The batch is stepped in *phases*.  A phase is one compiled
``while_loop`` over the vmapped :meth:`LevenbergMarquardt.step` on the *active set*; it
stops as soon as no more members are running than the largest *bucket* — a size
``MIN_BUCKET · 4ᵏ`` (per device) — that is at most a quarter of the active
set.  The host then gathers the running members (their states and per-member data) into
an active set of that bucket's size, scatters the finished ones back, and starts the
next phase.  Every compaction shrinks the active set at least 4×, and each size compiles
once, so a call compiles at most ``log₄(batch / MIN_BUCKET) + 1`` phase programs, all
reused by later calls with the same batch size.  A stopped
member is frozen by ``step`` itself, so padding a bucket with copies of a stopped member
changes nothing, and every member's result is the one it would have had alone.

**Chunks.**  ``chunk_size`` streams a batch larger than device memory in chunks, with
a progress bar (:mod:`jaxlm._stream`).

**Devices.**  Inputs sharded along the batch axis with :mod:`jax.sharding` (a
``NamedSharding`` whose spec partitions axis 0) are solved where they lie: every phase,
gather and scatter runs under :func:`jax.shard_map`, each device on its own members
only, so results come back sharded the same way and no program holds a collective
(devices never wait for each other inside a phase; each compacts its own stragglers).
Only the per-device status tallies meet, on the host, between phases.
``devices=[...]`` shards unsharded input over the given devices.  Because the programs
are ordinary ``jax.jit`` programs over global arrays, the same code runs multi-host
after ``jax.distributed.initialize`` (see the README); there the tallies are gathered
across processes (``process_allgather``) so that every process takes the same steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlm import _check, _programs
from jaxlm._solver import LevenbergMarquardt, LMState, Status

MIN_BUCKET = 64
"""Smallest active-set size per device: below it a phase runs to the end."""
GROWTH = 4
"""Bucket sizes are ``MIN_BUCKET · GROWTH**k`` (per device); each compaction shrinks
the active set at least ``GROWTH`` times."""


class RunStats(NamedTuple):
    """What a driver call did (for benchmarks and tests).

    Attributes:
      executed: member-steps executed, counting every slot of every active set at
        every iteration (what the hardware did).
      needed: the sum of the members' own step counts (what the problems needed).
      phases: compiled phases run (each a ``while_loop`` on one active set).
      sizes: the distinct active-set sizes used (one compilation each).
    """

    executed: int
    needed: int
    phases: int
    sizes: tuple

    @property
    def ratio(self) -> float:
        """executed / needed (1 is ideal; a plain vmapped while loop has ≈ max/mean)."""
        return self.executed / max(self.needed, 1)


class Options(NamedTuple):
    """The driver options shared by :func:`jaxlm.least_squares_batch` and ``jaxlm.fit``."""

    compact: bool = True
    chunk_size: int | None = None
    progress: bool = False
    devices: Sequence | None = None

    def validate(self) -> Options:
        """The options checked and normalised to plain Python values."""
        devices = self.devices
        if devices is not None:
            devices = list(devices) if not isinstance(devices, jax.Device) else None
            if not devices or not all(isinstance(d, jax.Device) for d in devices):
                raise TypeError("devices must be a non-empty sequence of jax.Device (e.g. jax.devices())")
        return Options(
            compact=_check.boolean("compact", self.compact),
            chunk_size=None
            if self.chunk_size is None
            else _check.integer("chunk_size", self.chunk_size, minimum=1),
            progress=_check.boolean("progress", self.progress),
            devices=devices,
        )

    def pays(self, size: int) -> bool:
        """Whether the driver is worth its extra programs for a batch of ``size``: it is
        needed for the streaming options, and compaction only starts at
        ``MIN_BUCKET · GROWTH`` members (smaller batches run as one vmapped program)."""
        return self.streaming or (self.compact and size >= MIN_BUCKET * GROWTH)

    @property
    def streaming(self) -> bool:
        """Options that need concrete input (a host loop), not just a faster path."""
        return self.chunk_size is not None or self.progress or self.devices is not None


# --------------------------------------------------------------------------- placement
def batch_sharding(leaves, devices) -> NamedSharding | None:
    """The sharding of the batch axis: over ``devices`` if given, else the one the
    inputs already carry (a ``NamedSharding`` partitioning axis 0), else None."""
    if devices is not None:
        return NamedSharding(Mesh(np.asarray(list(devices)), ("batch",)), PartitionSpec("batch"))
    for leaf in leaves:
        sharding = getattr(leaf, "sharding", None)
        if (
            isinstance(sharding, NamedSharding)
            and getattr(leaf, "ndim", 0) >= 1
            and len(sharding.spec) >= 1
            and sharding.spec[0] is not None
            and sharding.mesh.size > 1
        ):
            return NamedSharding(sharding.mesh, PartitionSpec(sharding.spec[0]))
    return None


def shard_count(sharding) -> int:
    if sharding is None:
        return 1
    axes = sharding.spec[0]
    axes = axes if isinstance(axes, tuple) else (axes,)
    return math.prod(sharding.mesh.shape[a] for a in axes)


def host_value(a) -> np.ndarray:
    """A device result as numpy, also when its shards live in other processes."""
    if getattr(a, "is_fully_addressable", True):
        return np.asarray(a)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(a, tiled=True))


# --------------------------------------------------------------------------- compiled pieces
def batched(axes, tree):
    return tuple(t for t, ax in zip(tree, axes, strict=True) if ax == 0)


def merge(axes, batched_part, shared):
    it, out = iter(batched_part), []
    for ax, s in zip(axes, shared, strict=True):
        out.append(next(it) if ax == 0 else s)
    return tuple(out)


def _per_shard(local, sharding, axes, in_specs, out_specs):
    """``local`` (written for one device's part of the batch) over every shard.

    Without a sharding it is ``local`` itself.  With one it runs under
    :func:`jax.shard_map`: each device steps, gathers and scatters only its own members,
    so the programs hold no collective at all — no per-iteration all-reduce for the loop
    condition, no all-gather for the compaction (with jit's automatic partitioning they
    held dozens; a notebook run on 4 host devices sharing 2 cores once hung in such a
    program, cause not established).  Per-shard outputs
    (tallies, iteration counts) get a leading axis of one per shard.  The specs name
    ``"b"`` (the batch axis), ``"a"`` (the args, per ``axes``) and ``"r"`` (replicated).
    """
    if sharding is None:
        return local
    b = PartitionSpec(sharding.spec[0])
    spec = {"b": b, "r": PartitionSpec(), "a": tuple(b if ax == 0 else PartitionSpec() for ax in axes)}
    return jax.shard_map(
        local,
        mesh=sharding.mesh,
        in_specs=tuple(spec[s] for s in in_specs),
        out_specs=tuple(spec[s] for s in out_specs),
        check_vma=False,  # no collectives to check; the solver's own linearize trips it
    )


@_programs.program(4)
def _init(solver: LevenbergMarquardt, fun: Callable, axes, sharding, x0, args):
    def local(x0, args):
        state = jax.vmap(lambda x, *a: solver.init(fun, x, *a), in_axes=(0, *axes))(x0, *args)
        return state, _tally(state.status)[None]

    return _per_shard(local, sharding, axes, "ba", "bb")(x0, args)


@_programs.program(4)
def _phase(solver: LevenbergMarquardt, fun: Callable, axes, sharding, state, args, threshold):
    """Step the active set until at most ``threshold`` members run (on each shard).
    Returns the state and, per shard, the iterations run, the member-steps taken
    (padding members take none: they are stopped) and the status tally."""
    step = jax.vmap(lambda s, *a: solver.step(fun, s, *a), in_axes=(0, *axes))

    def local(state, args, threshold):
        def cond(carry):
            st, _ = carry
            return jnp.sum(st.status == Status.RUNNING) > threshold

        def body(carry):
            st, i = carry
            return step(st, *args), i + 1

        new, iters = jax.lax.while_loop(cond, body, (state, jnp.asarray(0, jnp.int32)))
        taken = jnp.sum(new.n_steps - state.n_steps)
        return new, iters[None], taken[None], _tally(new.status)[None]

    return _per_shard(local, sharding, axes, "bar", "bbbb")(state, args, threshold)


def _tally(status):
    return jnp.bincount(jnp.clip(status, 0, len(Status) - 1), length=len(Status))


@_programs.program(3)
def _compact(bucket: int, axes, sharding, state, args):
    """Each shard's running members (padded with a stopped one) as its part of a new
    active set of ``bucket`` members per shard; ``idx`` are indices within the shard."""

    def local(state, args):
        running = state.status == Status.RUNNING
        fill = jnp.argmin(running)  # first stopped member: frozen, so a harmless pad
        (idx,) = jnp.nonzero(running, size=bucket, fill_value=fill)
        take = lambda a: a[idx]  # noqa: E731
        active = jax.tree_util.tree_map(take, state)
        part = jax.tree_util.tree_map(take, batched(axes, args))
        return idx, active, merge(axes, part, args)

    return _per_shard(local, sharding, axes, "ba", "bba")(state, args)


@_programs.program(1, donate_argnums=(1,))
def _scatter(sharding, state, active, idx):
    def local(state, active, idx):
        state = jax.tree_util.tree_map(lambda full, part: full.at[idx].set(part), state, active)
        return state, _tally(state.status)[None]

    return _per_shard(local, sharding, (), "bbb", "bb")(state, active, idx)


def _target(size: int) -> int | None:
    """The largest bucket at most ``size / GROWTH`` (None if there is none): a phase on
    ``size`` members (per shard) runs until no more than that many are still running."""
    bucket = MIN_BUCKET
    if bucket * GROWTH > size:
        return None
    while bucket * GROWTH * GROWTH <= size:
        bucket *= GROWTH
    return bucket


def _bucket(n_running: int) -> int:
    size = MIN_BUCKET
    while size < n_running:
        size *= GROWTH
    return size


def run(
    solver: LevenbergMarquardt,
    fun: Callable,
    x0,
    args: tuple,
    axes: tuple,
    *,
    compact: bool = True,
    sharding: NamedSharding | None = None,
    on_phase: Callable[[np.ndarray], None] | None = None,
) -> tuple[LMState, RunStats]:
    """Solve a batch (leading axis of ``x0`` and of the ``args`` whose axis is 0).

    Returns the final batched :class:`LMState` (equal, member by member, to
    ``vmap(solver.run)``) and :class:`RunStats`.  ``on_phase`` receives the status tally
    (counts per :class:`Status` code) after each phase.  With a ``sharding`` (whose
    shard count divides the batch) every shard runs its own phases and compactions on
    its own members; the bucket sizes are per shard, the same on every shard.
    """
    n_shards = shard_count(sharding)
    size = jax.tree_util.tree_leaves(x0)[0].shape[0] // n_shards  # per shard
    state, counts = _init(solver, fun, axes, sharding, x0, args)
    counts = host_value(counts)
    active, active_args, idx = state, args, None
    executed, needed, phases, sizes = 0, 0, 0, {size}
    while counts[:, Status.RUNNING].sum() > 0:
        target = _target(size) if compact else None
        active, iters, taken, counts = _phase(solver, fun, axes, sharding, active, active_args, target or 0)
        phases += 1
        executed += size * int(host_value(iters).sum())
        needed += int(host_value(taken).sum())
        if idx is None:
            state = active
        else:
            state, counts = _scatter(sharding, state, active, idx)
        counts = host_value(counts)
        if on_phase is not None:
            on_phase(counts.sum(0))
        most_running = int(counts[:, Status.RUNNING].max())
        if most_running and target:
            size = _bucket(most_running)
            sizes.add(size)
            idx, active, active_args = _compact(size, axes, sharding, state, args)
    sizes = tuple(s * n_shards for s in sorted(sizes, reverse=True))
    return state, RunStats(executed, needed, phases, sizes)
