"""A second attempt for members that fail (``LevenbergMarquardt(restart=...)``): a member
that stops with one of :data:`RESTART_ON` runs again from its start with the restart's
damping, and keeps whichever attempt ends at the lower cost, with its status."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from jaxlm._status import Status

if TYPE_CHECKING:
    from jaxlm._solver import LMState


class Restart(NamedTuple):
    """A member's memory for a second attempt (``LevenbergMarquardt(restart=...)``).

    Attributes:
      start: the state at x₀, as ``init`` built it, with μ₀ for the restart's damping.
      first: the first attempt's final state (meaningful once ``attempt == 1``).
      offset: the trial steps taken before the restart (the step limit is per attempt).
    """

    start: LMState
    first: LMState
    offset: jax.Array


RESTART_ON = (Status.MAX_STEPS, Status.NO_PROGRESS)
"""Failure codes after which a member with ``restart`` set is re-run from its start."""


def restarted(new: LMState, memory: Restart) -> tuple[LMState, Restart]:
    """The state after a step, with ``restart`` (``new`` without its memory): a first
    attempt that has just failed (:data:`RESTART_ON`) starts again from x₀ with the
    restart's damping; a second attempt that has just stopped keeps whichever of the
    two final points has the lower cost (the second on a tie), with that attempt's
    status.  Step and evaluation counts are totals over both attempts."""
    failed = jnp.isin(new.status, jnp.asarray(RESTART_ON, jnp.int32))
    again = (new.attempt == 0) & failed
    counts = {"n_steps": new.n_steps, "n_fev": new.n_fev}
    # the second attempt has stopped: compare ½‖r‖² in the caller's units (the two
    # attempts' residual factors may differ after renormalisation)
    done = (new.attempt == 1) & (new.status != Status.RUNNING)
    first_better = done & (log_caller_cost(memory.first) < log_caller_cost(new))
    core = select(again, memory.start._replace(**counts), new)
    core = select(first_better, memory.first._replace(**counts, attempt=new.attempt), core)
    first = select(again, new, memory.first)
    return core, Restart(memory.start, first, jnp.where(again, new.n_steps, memory.offset))


def select(condition, a, b):
    """``where(condition, a, b)`` leaf by leaf over two pytrees of the same structure."""
    return jax.tree_util.tree_map(lambda u, v: jnp.where(condition, u, v), a, b)


def log_caller_cost(state: LMState) -> jax.Array:
    """log of ½‖r‖² in the caller's units, ``log C − 2 log ρ``: comparable between
    states whose residual factors differ, without forming C/ρ² (which may overflow);
    NaN as +inf, so that a finite cost always compares lower."""
    value = jnp.log(state.cost) - 2 * jnp.log(state.units.residual)
    return jnp.where(jnp.isnan(value), jnp.inf, value)
