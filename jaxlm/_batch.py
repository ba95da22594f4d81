"""The many-problem driver: straggler-free batches, chunked streaming, sharding, progress.

Under ``jax.vmap`` a ``lax.while_loop`` runs every member of a batch until the slowest
one stops: a few members that need hundreds of steps (or never meet their tolerance)
hold the whole batch to the step limit.  This module runs a batch of independent LM
problems so that the work follows the members' own step counts instead:

**Compaction, in one program.**  A *blocked loop* (:func:`_blocked`) advances only the
running members: each iteration lists them (``jnp.nonzero``), gathers them in blocks of
:data:`BLOCK` (per device), steps each block with the vmapped
:meth:`LevenbergMarquardt.step` and scatters it back; the number of blocks is dynamic,
so the work of an iteration follows the number of members still running, and one
compiled program serves the whole run, whatever the batch does.  (Stepping blocks that
fit in the CPU's caches is also faster than stepping the whole batch at once: 10⁵
decays in float64 run in 0.6 s instead of 1.0 s.)  A shard of at most
:data:`WHOLE_MAX` members is stepped whole, in place, while at least half of it runs —
the first iterations, where most member-steps are — and in small blocks
(:data:`TAIL_SHARE`) after.  Once no more than
:data:`MIN_BUCKET` members have been running for :data:`PATIENCE` iterations — the
stragglers that a plain vmapped loop would make the whole batch wait for — they are
gathered into an active set of ``MIN_BUCKET`` (a *phase*, compiled only when a run has
such stragglers) and run to the end there.  A stopped member is frozen by ``step``
itself, so padding a block or a bucket with copies of a member changes nothing, and
every member's result is the one it would have had alone.

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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlm import _check, _programs, _restart
from jaxlm._solver import LevenbergMarquardt, LMState, Status

MIN_BUCKET = 64
"""Size of the stragglers' active set per device: once this few are running (for
:data:`PATIENCE` iterations), a phase of this size runs them to the end."""
GROWTH = 4
"""Bucket sizes are ``MIN_BUCKET · GROWTH**k`` (per device); a batch smaller than
``MIN_BUCKET · GROWTH`` runs as one vmapped program."""
BLOCK = 2048
"""Most members one step of the blocked loop advances at once, per CPU device (see
:func:`_block_size`)."""
ACCELERATOR_BLOCK = 2**17
"""The same on a GPU or TPU, where a vmapped step's ~140 kernel launches cost several µs
each: a block should be as large as memory allows (not measured here: no accelerator)."""
PATIENCE = 1.0
"""How long the blocked loop keeps stepping at most ``MIN_BUCKET`` running members (each
iteration costs a whole block) before handing them to a phase of that size: until the
block slots so wasted exceed this fraction of the member-steps done so far.  The last
few members of an easy batch finish within it, so the phase — another compiled program,
~1 s to build — is only built for real stragglers, and at most doubles the work."""
WHOLE_MAX = 2**14
"""Up to this many members per CPU device, the blocked loop steps the whole shard in
place (no gather, no scatter) while at least :data:`WHOLE_FRACTION` of it runs: a
member-step in a block of a few hundred costs 1.5–2 times one in a batch of 10⁴, and
the first iterations of a batch run nearly all of it.  Larger shards only run in blocks,
which fit in the CPU's caches."""
WHOLE_FRACTION = (1, 2)
TAIL_SHARE = 16
"""With whole-shard steps, blocks are about this fraction of a shard (they only carry
the tail; blocks of 2048 for the last few hundred of 10⁴ Gaussians made a call 1.7×
slower than stepping them in buckets)."""
"""(numerator, denominator): the running fraction from which the whole shard is stepped."""
PROGRESS_ITERATIONS = 8
"""With a progress callback, the blocked loop returns to the host after this many
iterations to report."""


class RunStats(NamedTuple):
    """What a driver call did (for benchmarks and tests).

    Attributes:
      executed: member-steps executed, counting every slot of every active set at
        every iteration (what the hardware did).
      needed: the sum of the members' own step counts (what the problems needed).
      phases: calls of a compiled loop (the blocked loop, and a phase for stragglers).
      sizes: the distinct block and active-set sizes used (one compilation each).
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


@_programs.program(4, hot=True)
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


class _Rows(NamedTuple):
    """How to lay a batched pytree out as one 2-D array per dtype, a row per member, so
    that the blocked loop gathers and scatters a block with a handful of operations
    instead of two per leaf (the state has ~15 leaves; each gather and scatter is a
    kernel with a fixed cost, per block)."""

    treedef: Any
    shapes: tuple  # per leaf, without the batch axis
    dtypes: tuple
    groups: tuple  # the distinct dtypes, in order

    @classmethod
    def of(cls, tree) -> _Rows:
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        dtypes = tuple(jnp.dtype(a.dtype) for a in leaves)
        return cls(treedef, tuple(a.shape[1:] for a in leaves), dtypes, tuple(dict.fromkeys(dtypes)))

    def pack(self, tree) -> tuple:
        leaves = jax.tree_util.tree_leaves(tree)
        rows = lambda a: jnp.reshape(a, (a.shape[0], -1))  # noqa: E731
        return tuple(
            jnp.concatenate([rows(a) for a, d in zip(leaves, self.dtypes, strict=True) if d == g], axis=1)
            for g in self.groups
        )

    def unpack(self, packed: tuple):
        at = dict.fromkeys(self.groups, 0)
        leaves = []
        for shape, dtype in zip(self.shapes, self.dtypes, strict=True):
            width, block = math.prod(shape), packed[self.groups.index(dtype)]
            leaves.append(jnp.reshape(block[:, at[dtype] : at[dtype] + width], (block.shape[0], *shape)))
            at[dtype] += width
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


@_programs.program(5, hot=True)
def _blocked(
    solver: LevenbergMarquardt, fun: Callable, axes, sharding, block: int, state, args, cap, patience, ledger
):
    """The blocked loop (module docstring), on each shard: every iteration steps the
    running members once, ``block`` at a time, until none runs, ``cap`` iterations have
    run, or at most :data:`MIN_BUCKET` are running and the block slots wasted on so few
    exceed ``patience`` times the member-steps done.  ``ledger`` (per shard: useful
    and wasted slots) is carried over calls.  Returns the state and, per shard, the
    iterations run, the member-steps taken, the block slots executed, the status tally
    and the ledger."""
    step = jax.vmap(lambda s, *a: solver.step(fun, s, *a), in_axes=(0, *axes))

    def local(state, args, cap, patience, ledger):
        size = jax.tree_util.tree_leaves(state)[0].shape[0]
        layout, arg_layout = _Rows.of(state), _Rows.of(batched(axes, args))
        arg_rows = arg_layout.pack(batched(axes, args))

        def advance(b, carry):
            rows, status, idx = carry
            chosen = jax.lax.dynamic_slice(idx, (b * block,), (block,))
            real = chosen < size  # the last block is padded with `size` (dropped below)
            take = jnp.where(real, chosen, 0)
            sub = layout.unpack(tuple(r[take] for r in rows))
            sub = sub._replace(status=jnp.where(real, sub.status, Status.MAX_STEPS))  # frozen pads
            part = arg_layout.unpack(tuple(r[take] for r in arg_rows))
            new = step(sub, *merge(axes, part, args))
            rows = tuple(
                r.at[chosen].set(v, mode="drop") for r, v in zip(rows, layout.pack(new), strict=True)
            )
            return rows, status.at[chosen].set(new.status, mode="drop"), idx

        def patient(status, ledger):
            few = jnp.sum(status == Status.RUNNING) <= MIN_BUCKET
            return ~few | (ledger[1] <= patience * ledger[0])

        def cond(carry):
            _, status, it, ledger, _ = carry
            return jnp.any(status == Status.RUNNING) & (it < cap) & patient(status, ledger)

        def blocks(rows, status, n_running):
            running = status == Status.RUNNING
            (idx,) = jnp.nonzero(running, size=size + block, fill_value=size)
            n_blocks = (n_running + block - 1) // block
            rows, status, _ = jax.lax.fori_loop(0, n_blocks, advance, (rows, status, idx))
            return rows, status, n_blocks * block

        def whole(rows, status, n_running):
            new = step(layout.unpack(rows), *args)  # stopped members are frozen by step
            return layout.pack(new), new.status, jnp.asarray(size, jnp.int32)

        def body(carry):
            rows, status, it, ledger, executed = carry
            n_running = jnp.sum(status == Status.RUNNING, dtype=jnp.int32)
            if _whole(size, block):
                wide = n_running * WHOLE_FRACTION[1] >= size * WHOLE_FRACTION[0]
                rows, status, slots = jax.lax.cond(wide, whole, blocks, rows, status, n_running)
            else:
                rows, status, slots = blocks(rows, status, n_running)
            wasted = jnp.where(n_running <= MIN_BUCKET, slots - n_running, 0)
            ledger = ledger + jnp.stack([n_running, wasted]).astype(ledger.dtype)
            return rows, status, it + 1, ledger, executed + slots

        zero = jnp.asarray(0, jnp.int32)
        carry = (layout.pack(state), state.status, zero, ledger[0], zero)
        rows, _, iters, ledger, executed = jax.lax.while_loop(cond, body, carry)
        new = layout.unpack(rows)
        taken = jnp.sum(new.n_steps - state.n_steps)
        return new, iters[None], taken[None], executed[None], _tally(new.status)[None], ledger[None]

    return _per_shard(local, sharding, axes, "barrb", "bbbbbb")(state, args, cap, patience, ledger)


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


def _block_size(size: int, platform: str = "cpu") -> int:
    """The blocked loop's block for ``size`` members per shard: about a quarter of them
    (a power of two), within ``[MIN_BUCKET, BLOCK]`` on a CPU — a sixteenth where the
    whole shard is also stepped (:func:`_whole`).  A smaller block follows
    the number of running members more closely (a partly filled block wastes its empty
    slots, which cost as much as full ones); a larger one keeps both of a CPU's cores busy
    (XLA splits only large kernels across threads: from about 1024 members a member-step
    costs 20–30 % less) — measured on 2 cores: 600 members with stragglers run best in
    blocks of 64–128, 5000 in 1024, 10⁴ decays in 2048, 10⁵ decays in float64 in 2048
    (4096: +10 %).  On an accelerator a step's fixed cost (its kernel
    launches) is larger, so blocks are as large as the shard, up to
    :data:`ACCELERATOR_BLOCK`."""
    if platform != "cpu":
        return int(min(size, ACCELERATOR_BLOCK))
    share = TAIL_SHARE if size <= WHOLE_MAX else 4
    part = 2 ** math.floor(math.log2(max(size // share, 1)))
    return int(min(max(part, MIN_BUCKET), BLOCK))


def _whole(size: int, block: int) -> bool:
    """Whether the blocked loop on shards of ``size`` also steps the whole shard in
    place (:data:`WHOLE_MAX`): a second compiled copy of the step, worth its compile
    time (about 1 s) on a CPU where most of a batch's member-steps come in its first
    iterations."""
    return block < size <= WHOLE_MAX


def _platform(x0, sharding) -> str:
    if sharding is not None:
        return sharding.mesh.devices.flat[0].platform
    devices = getattr(jax.tree_util.tree_leaves(x0)[0], "devices", None)
    return next(iter(devices())).platform if devices is not None else jax.default_backend()


def _more_blocked(running, ledger) -> bool:
    """Whether a shard's blocked loop has more to do: more than :data:`MIN_BUCKET` of its
    members run, or some do and the slots wasted on them are within :data:`PATIENCE`
    (``running``: one entry per shard, ``ledger``: useful and wasted slots per shard)."""
    patient = ledger[:, 1] <= PATIENCE * ledger[:, 0]
    return bool(np.any((running > MIN_BUCKET) | ((running > 0) & patient)))


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
    (counts per :class:`Status` code) after each compiled loop returns (with a callback
    the blocked loop returns every :data:`PROGRESS_ITERATIONS` iterations).  With a
    ``sharding`` (whose shard count divides the batch) every shard runs its own loops
    on its own members; block and bucket sizes are per shard, the same on every shard.
    With ``restart``, the members whose first attempt failed run a second pass of the
    same programs from their start (:mod:`jaxlm._restart`).
    """
    n_shards = shard_count(sharding)
    size = jax.tree_util.tree_leaves(x0)[0].shape[0] // n_shards  # per shard
    start, counts = _init(solver, fun, axes, sharding, x0, args)
    attempt = _Attempt(solver, fun, axes, sharding, args, size, compact, on_phase)
    state = attempt.run(start, host_value(counts))
    failed = sum(int(attempt.counts[:, code].sum()) for code in _restart.RESTART_ON)
    if solver.restart is not None and solver.max_steps > 0 and failed:
        second, again, counts = _second(solver, sharding, start, state)
        counts = host_value(counts)
        if counts[:, Status.RUNNING].sum() > 0:
            second = attempt.run(second, counts)
            state, counts = _keep_better(sharding, state, second, again)
    sizes = tuple(s * n_shards for s in sorted(attempt.sizes, reverse=True))
    return state, RunStats(attempt.executed, attempt.needed, attempt.phases, sizes)


class _Attempt:
    """Runs one attempt of a batch's running members to the end: the blocked loop, then
    a phase for its stragglers (or, without compaction, one phase), and keeps count."""

    def __init__(self, solver, fun, axes, sharding, args, size, compact, on_phase):
        self.solver, self.fun, self.axes, self.sharding, self.args = solver, fun, axes, sharding, args
        self.size, self.compact, self.on_phase = size, compact, on_phase
        self.executed = self.needed = self.phases = 0
        self.sizes: set[int] = set()

    def _report(self, iters, taken, executed, counts, width=None):
        self.executed += (
            int(host_value(executed).sum()) if width is None else width * int(host_value(iters).sum())
        )
        self.needed += int(host_value(taken).sum())
        self.phases += 1
        counts = host_value(counts)
        if self.on_phase is not None:
            self.on_phase(counts.sum(0))
        return counts

    def run(self, state, counts):
        """The attempt run to its end; ``self.counts`` is then the status tally per shard."""
        solver, fun, axes, sharding, args = self.solver, self.fun, self.axes, self.sharding, self.args
        self.counts = counts
        if counts[:, Status.RUNNING].sum() == 0:
            return state
        if not (self.compact and self.size >= MIN_BUCKET * GROWTH):
            self.sizes.add(self.size)
            state, iters, taken, counts = _phase(solver, fun, axes, sharding, state, args, 0)
            self.counts = self._report(iters, taken, None, counts, width=self.size)
            return state
        block = _block_size(self.size, _platform(state.params, sharding))
        self.sizes.update({block, self.size} if _whole(self.size, block) else {block})
        # host values, every call alike (a device array on the second call only would be
        # a differently committed argument: a second compilation)
        cap = np.int32(PROGRESS_ITERATIONS if self.on_phase is not None else _check.INT32_MAX)
        patience = np.float32(PATIENCE)
        ledger = np.zeros((counts.shape[0], 2), np.float32)  # per shard: useful, wasted slots
        while _more_blocked(counts[:, Status.RUNNING], ledger):
            state, iters, taken, executed, counts, ledger = _blocked(
                solver, fun, axes, sharding, block, state, args, cap, patience, ledger
            )
            ledger = host_value(ledger)
            counts = self.counts = self._report(iters, taken, executed, counts)
        most_running = int(counts[:, Status.RUNNING].max())
        if most_running:  # the stragglers: gathered into one active set, run to the end
            bucket = _bucket(most_running)
            self.sizes.add(bucket)
            idx, active, active_args = _compact(bucket, axes, sharding, state, args)
            active, iters, taken, counts = _phase(solver, fun, axes, sharding, active, active_args, 0)
            self._report(iters, taken, None, counts, width=bucket)
            state, counts = _scatter(sharding, state, active, idx)
            self.counts = host_value(counts)
        return state


@_programs.program(2)
def _second(solver: LevenbergMarquardt, sharding, start, first):
    """Each shard's second attempts (:func:`jaxlm._restart.second_start` where the first
    attempt failed, the first attempt's final state elsewhere), who tries again, and the
    status tally."""

    def one(start, first):
        again = _restart.needs_second(first)
        return _restart.select(again, _restart.second_start(solver, start), first), again

    def local(start, first):
        second, again = jax.vmap(one)(start, first)
        return second, again, _tally(second.status)[None]

    return _per_shard(local, sharding, (), "bb", "bbb")(start, first)


@_programs.program(1)
def _keep_better(sharding, first, second, again):
    def local(first, second, again):
        state = jax.vmap(_restart.keep_better)(first, second, again)
        return state, _tally(state.status)[None]

    return _per_shard(local, sharding, (), "bbb", "bb")(first, second, again)
