"""Chunks and progress for the many-problem driver (:mod:`jaxlm._batch`).

**Chunks.**  ``chunk_size`` splits a batch that does not fit in device memory into
chunks of equal size (the last one padded, so nothing recompiles); chunk ``i + 1`` is
transferred to the device while chunk ``i`` is solved, results are copied back
asynchronously and returned as host (numpy) arrays.

**Progress.**  ``progress=True`` shows a tqdm bar counting finished fits, with fits/s
and the running status tally.

**Ctrl-C.**  A chunked run that is interrupted raises :class:`Interrupted`, a
``KeyboardInterrupt`` that carries the results of the chunks already finished: a long
run stopped by hand keeps its work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxlm import _batch
from jaxlm._batch import shard_count
from jaxlm._status import Status


class Interrupted(KeyboardInterrupt):
    """A chunked run (``chunk_size=``) stopped by Ctrl-C, with what it finished.

    It is a ``KeyboardInterrupt``, so code that does not look for it stops as before.

    Attributes:
      result: the result the call would have returned (host arrays, the batch's shape),
        holding the members of every finished chunk.  The other members are not
        fitted: NaN in floating-point fields, ``Status.RUNNING`` (0) in ``status``, 0 in
        the other integer fields, False in boolean ones.  None when no chunk had
        finished.
      n_done: how many members are finished: the first ``n_done`` in the batch's
        C (row-major) order.
    """

    def __init__(self, result, n_done: int):
        super().__init__(f"interrupted: {n_done} members finished")
        self.result = result
        self.n_done = n_done


class Progress:
    """A tqdm bar over finished fits with fits/s and the status tally (no-op when off)."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        self.done_before = 0
        self.tally = np.zeros(len(Status), np.int64)
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError as err:  # pragma: no cover - tqdm is in every extra that needs it
            raise ImportError("progress=True needs tqdm: pip install tqdm") from err
        self.bar = tqdm(total=total, unit="fit", unit_scale=True, desc="jaxlm", smoothing=0.1)

    def phase(self, counts, real: int, pad: int):
        """Counts of the current chunk after a phase (padding members excluded)."""
        if self.bar is None:
            return
        finished = min(int(np.sum(counts)) - int(counts[Status.RUNNING]) - pad, real)
        self.bar.n = self.done_before + max(finished, 0)  # the tally waits for the chunk's end
        self.bar.refresh()

    def chunk_done(self, out, real: int):
        """A chunk's ``real`` members finished: count their statuses (a host sync, so
        only when the bar is shown)."""
        if self.bar is None:
            return
        status = _status_of(out)[:real]
        self.tally += np.bincount(np.clip(status.ravel(), 0, len(Status) - 1), minlength=len(Status))
        self.done_before += status.size
        self.bar.n = self.done_before
        self._postfix(self.tally)

    def _postfix(self, tally):
        parts = {"converged": int(tally[Status.CONVERGED_FTOL : Status.CONVERGED_GTOL + 1].sum())}
        for code in Status:
            if code > Status.CONVERGED_GTOL and tally[code]:
                parts[code.name.lower()] = int(tally[code])
        self.bar.set_postfix({k: f"{v:,}" for k, v in parts.items()}, refresh=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def solve_many(solver, fun, inputs: tuple, axes: tuple, size: int, driver, prepare, finish):
    """The driver's one entry, used by ``least_squares_batch`` and ``fit`` (and through
    ``fit`` by the ``jaxlm fit`` command): solve a batch of ``size`` problems with
    compaction (:func:`jaxlm._batch.run`), chunks, devices and progress as
    ``driver`` (:class:`jaxlm._batch.Options`) says.

    ``inputs`` is a tuple of per-problem inputs, each batched along axis 0 (``axes``
    entry 0) or shared (None).  For each chunk, ``prepare(merged)`` turns the chunk's
    inputs (the same tuple, batched entries cut to the chunk) into
    ``(x0, args, arg_axes, extra)`` for the solver, and ``finish(state, args, extra)``
    turns the final state into the chunk's result.  Returns the results of all chunks
    (see :func:`stream`).
    """
    per_problem = _batch.batched(axes, inputs)
    sharding = _batch.batch_sharding(jax.tree_util.tree_leaves(per_problem), driver.devices)

    def solve_chunk(chunk, on_phase):
        x0, args, arg_axes, extra = prepare(_batch.merge(axes, chunk, inputs))
        on_phase = on_phase if driver.progress else None  # without a bar: no stop to report
        state, _ = _batch.run(
            solver, fun, x0, args, arg_axes, compact=driver.compact, sharding=sharding, on_phase=on_phase
        )
        return finish(state, args, extra)

    return stream(
        solve_chunk,
        per_problem,
        size,
        chunk_size=driver.chunk_size,
        sharding=sharding,
        progress=driver.progress,
    )


def stream(
    solve_chunk: Callable[[Any, Callable], Any],
    inputs,
    batch: int,
    *,
    chunk_size: int | None,
    sharding: NamedSharding | None,
    progress: bool,
):
    """Run ``solve_chunk(chunk_inputs, on_phase)`` over chunks of the batched ``inputs``.

    ``inputs`` is a pytree whose leaves are batched along axis 0 (host or device
    arrays).  Without ``chunk_size`` the whole batch is one chunk and the device result
    is returned as is (sharded like the input).  With it, every chunk has the same size
    (the last one padded with copies of its first member), chunk ``i + 1`` is placed on
    the device before chunk ``i`` is solved, and the results are gathered into host
    numpy arrays; a Ctrl-C raises :class:`Interrupted` with the finished chunks.
    ``progress`` shows the bar (:class:`Progress`).
    """
    bar = Progress(batch, progress)
    try:
        return _stream(solve_chunk, inputs, batch, chunk_size, sharding, bar)
    finally:
        bar.close()


def _stream(solve_chunk, inputs, batch, chunk_size, sharding, progress):
    n_shards = shard_count(sharding)
    if chunk_size is None or batch == 0:
        pad = (-batch) % n_shards
        placed = _place(_pad(inputs, pad), sharding)
        out = solve_chunk(placed, lambda counts: progress.phase(counts, batch, pad))
        out = _unpad(out, batch) if pad else out
        progress.chunk_done(out, batch)
        if chunk_size is not None:  # an empty batch: numpy results, as for any chunked one
            out = jax.tree_util.tree_map(np.asarray, out)
        return out
    size = min(chunk_size, batch)
    size += (-size) % n_shards
    starts = list(range(0, batch, size))

    def load(start):
        real = min(size, batch - start)
        part = jax.tree_util.tree_map(lambda a: a[start : start + real], inputs)
        return _place(_pad(part, size - real), sharding), real

    results, done = None, 0  # rows [0, done) of results are stored
    previous = None
    try:
        pending = load(starts[0])
        for k, start in enumerate(starts):
            placed, real = pending
            if k + 1 < len(starts):
                pending = load(starts[k + 1])  # async host→device copy overlaps this chunk
            out = solve_chunk(placed, lambda counts, real=real: progress.phase(counts, real, size - real))
            for leaf in jax.tree_util.tree_leaves(out):
                # Start the device→host copy now (an accelerator's results then arrive while
                # the next chunk runs).  Only for accelerators: on CPU the result already is
                # in host memory.  (Notebook 5's hangs, first blamed on this copy, were
                # LAPACK in the finishing program: see jaxlm/_fitting/_covariance.py.)
                if any(d.platform != "cpu" for d in leaf.devices()):
                    leaf.copy_to_host_async()
            progress.chunk_done(out, real)
            if previous is not None:
                results, done = _store(results, *previous, batch)
            previous = (out, start, real)
        results, done = _store(results, *previous, batch)
    except KeyboardInterrupt:
        if previous is not None and previous[1] == done:  # finished, not yet stored
            try:
                results, done = _store(results, *previous, batch)
            except KeyboardInterrupt:
                pass  # a second Ctrl-C: keep what is stored
        raise Interrupted(_not_fitted_from(results, done), done) from None
    return results


def _store(results, out, start, real, batch):
    """Copy a chunk's ``real`` members into ``results`` (allocated at the first chunk);
    returns ``(results, start + real)``."""
    host = jax.tree_util.tree_map(lambda a: np.asarray(a)[:real], out)
    if results is None:
        results = jax.tree_util.tree_map(lambda a: np.empty((batch,) + a.shape[1:], a.dtype), host)
    jax.tree_util.tree_map(lambda dst, src: dst.__setitem__(slice(start, start + real), src), results, host)
    return results, start + real


def _not_fitted_from(results, done):
    """``results`` with rows from ``done`` on marked as not fitted (see :class:`Interrupted`)."""
    if results is None:
        return None

    def clear(a):
        if np.issubdtype(a.dtype, np.inexact):
            a[done:] = np.nan
        else:
            a[done:] = 0  # False, Status.RUNNING, no steps
        return a

    return jax.tree_util.tree_map(clear, results)


def _status_of(out):
    """This process's part of the status array, on the host."""
    status = out.status
    if getattr(status, "is_fully_addressable", True):
        return np.asarray(status)
    return np.concatenate([np.asarray(s.data) for s in status.addressable_shards])


def _pad(tree, pad):
    if pad == 0:
        return tree
    return jax.tree_util.tree_map(
        lambda a: jnp.concatenate([jnp.asarray(a), jnp.repeat(jnp.asarray(a)[:1], pad, axis=0)]), tree
    )


def _unpad(tree, real):
    return jax.tree_util.tree_map(lambda a: a[:real], tree)


def _place(tree, sharding):
    if sharding is None:  # the default device (inputs may have been prepared on the host)
        return jax.device_put(tree, jax.devices()[0])
    return jax.tree_util.tree_map(
        lambda a: jax.device_put(
            a, NamedSharding(sharding.mesh, PartitionSpec(sharding.spec[0], *([None] * (np.ndim(a) - 1))))
        ),
        tree,
    )
