"""A second attempt for members that fail (``LevenbergMarquardt(restart=...)``): a member
whose first attempt stops with one of :data:`RESTART_ON` runs again from its start with
the restart's damping, and keeps whichever attempt ends at the lower cost, with its
status.

The attempts are run by the loops around the step — :meth:`LevenbergMarquardt.run` (one
traced loop of steps, run once per attempt) and the many-problem driver
(:mod:`jaxlm._batch`: a second pass of the same compiled program over the members that
try again) — not by the step: ``step`` only damps each member as its ``attempt`` says.
So the state carries no copy of the start or of the first attempt (each step, and each
gather of the driver, moves one state per member instead of three), and a batch in
which no member fails pays nothing for the option.  One concrete problem on its own
(``least_squares``, a single curve's ``fit``/``curve_fit``) runs its second attempt from
the host (:func:`one_problem`), so that the program of its first attempt, the one that
nearly every call needs, holds no restart at all.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import _damping, _units
from jaxlm._status import Status

if TYPE_CHECKING:
    from jaxlm._solver import LevenbergMarquardt, LMState

RESTART_ON = (Status.MAX_STEPS, Status.NO_PROGRESS)
"""Failure codes after which a member with ``restart`` set is re-run from its start."""


def needs_second(state: LMState) -> jax.Array:
    """Which members' first attempt failed (:data:`RESTART_ON`) after at least one step
    (with ``max_steps=0`` nothing runs, so nothing runs again)."""
    return _failed_first(state.status, state.n_steps, state.attempt)


def _failed_first(status, n_steps, attempt):
    """:func:`needs_second`'s rule in comparisons alone, so that it applies as written to
    traced arrays and to numpy values on the host (:func:`one_problem`)."""
    failed = functools.reduce(operator.or_, [status == code for code in RESTART_ON])
    return (attempt == 0) & failed & (n_steps > 0)


def second_start(solver: LevenbergMarquardt, start: LMState) -> LMState:
    """The state a second attempt starts from: ``init``'s state at x₀ with μ₀ for the
    restart's damping, attempt 1, and its own step and evaluation counts at 0 (the
    evaluation at x₀ is the first attempt's; the step limit is per attempt)."""
    nd = solver.linalg.normal_diag(start.model)
    diag = solver.damping_diag(start.scale, start.model, start.units, damping=solver.restart)
    zero = jnp.zeros_like(start.n_steps)
    return start._replace(
        mu=_damping.initial_mu(solver.tau, nd, diag),
        attempt=jnp.ones_like(start.attempt),
        n_steps=zero,
        n_fev=zero,
        status=jnp.full_like(start.status, Status.RUNNING),
    )


def keep_better(first: LMState, second: LMState, again: jax.Array) -> LMState:
    """For the members that tried again (``again``), whichever attempt ends at the lower
    cost in the caller's units (the second on a tie), with that attempt's status, step
    and evaluation counts totalled over both, attempt 1; the others keep ``first``."""
    counts = {"n_steps": first.n_steps + second.n_steps, "n_fev": first.n_fev + second.n_fev}
    first_better = lower_caller_cost(first, second)
    best = select(first_better, first._replace(**counts, attempt=second.attempt), second._replace(**counts))
    return select(again, best, first)


_Out = TypeVar("_Out")


def one_problem(
    solver: LevenbergMarquardt, solve: Callable[[LevenbergMarquardt], _Out], hiding: tuple = ()
) -> _Out:
    """Solve one concrete problem (``solve(solver)``, whose result has ``status`` and
    ``n_steps``) with the restart run from the host: first the program of the first
    attempt alone (``restart=None``), and only when that attempt failed
    (:func:`needs_second`) the whole program, both attempts in its loop.  ``hiding``:
    statuses that a caller's result may put in place of the solver's own (the fit
    layer's ``UNDERDETERMINED``, ``NO_DATA``); they too get the whole program's answer.

    The first program is the common case's, and it is smaller: no outer loop, no second
    start, no choice between attempts, one damping matrix per step instead of two
    (a single ``curve_fit``'s first call: 0.91-1.12 s -> 0.73-0.96 s on 2 cores,
    ``docs/benchmarks.md``).  When
    the first attempt succeeds, its result is the whole program's: the same steps with
    the same damping (``damping_diag`` of attempt 0 is the first damping either way), to
    rounding, since the two programs are fused differently (a Gaussian's parameters: the
    same to the bit in float32, one ulp apart in float64; the same status and counts).
    When it fails, the whole program's own result is returned.  The price is paid by
    failing problems only: a second compilation the first time, and the first attempt
    run twice (microseconds for one problem)."""
    if solver.restart is None:
        return solve(solver)
    first = solve(dataclasses.replace(solver, restart=None))
    status = np.asarray(first.status)
    # needs_second's rule on the host (the first program's attempt is 0): jnp here would
    # compile op by op
    failed = bool(_failed_first(status, np.asarray(first.n_steps), 0))
    return solve(solver) if failed or int(status) in hiding else first


def select(condition, a, b):
    """``where(condition, a, b)`` leaf by leaf over two pytrees of the same structure."""
    return jax.tree_util.tree_map(lambda u, v: jnp.where(condition, u, v), a, b)


def lower_caller_cost(a: LMState, b: LMState) -> jax.Array:
    """Whether ``a`` ends at a lower cost in the caller's units than ``b`` (``C/ρ²``;
    an :class:`~jaxlm.Objective`'s cost may be negative), compared exactly: the two
    states' residual factors may differ (:mod:`jaxlm._units`), and a rounded comparison
    (of ``log C − 2 log ρ``, say) can pick the other attempt of a near tie when the data
    are rescaled, which breaks the bit-identical path a rescaling by powers of two must
    give.  Each cost is split into its binary exponent and its mantissa, ``|m|`` in
    [½, 1) (exact), the exponent moved to the caller's units (ρ is a power of two), and
    costs of one sign compared by (exponent, mantissa) in order.  NaN and ±inf count as
    the highest, so that a finite cost always compares lower."""
    (ea, ma), (eb, mb) = _caller_key(a), _caller_key(b)
    sa, sb = jnp.sign(a.cost), jnp.sign(b.cost)
    positive = (ea < eb) | ((ea == eb) & (ma < mb))
    negative = (ea > eb) | ((ea == eb) & (ma < mb))  # the larger magnitude is the lower
    same_sign = jnp.where(sa > 0, positive, jnp.where(sa < 0, negative, False))
    lower = jnp.where(sa == sb, same_sign, sa < sb)
    bad_a, bad_b = ~jnp.isfinite(a.cost), ~jnp.isfinite(b.cost)
    return ~bad_a & (bad_b | lower)


def _caller_key(state: LMState):
    """``(e, m)`` with ``C/ρ² = m·2^e`` and ``|m| ∈ [½, 1)`` (0 for a cost of 0), exactly."""
    mantissa, e_cost = jnp.frexp(state.cost)
    # ρ = 2^(e_ρ - 1) exactly, so C/ρ² = m·2^(e_cost - 2e_ρ + 2)
    e_rho = _units.exponent(state.units.residual)
    return e_cost.astype(e_rho.dtype) - 2 * e_rho + 2, mantissa
