"""Per-problem outcome codes: :class:`Status`, its messages, and :func:`is_success`.

One code per member of a batch (int32 in ``LMState.status`` and every result): the
solver's own (``RUNNING`` … ``NO_PROGRESS``) and the fit layer's (``NO_DATA``,
``NONPOSITIVE_MODEL``, ``UNDERDETERMINED``).  Only the three ``CONVERGED_*`` codes are a
success, and each of them is a stationarity claim (see :mod:`jaxlm._solver`).
"""

from __future__ import annotations

import enum

import jax


class Status(enum.IntEnum):
    """Per-problem outcome codes held in ``LMState.status`` and ``Solution.status``.

    ``success`` is True for the three ``CONVERGED_*`` codes.
    """

    RUNNING = 0
    """Still iterating (only seen when driving ``step`` by hand)."""
    CONVERGED_FTOL = 1
    """Actual and predicted relative reductions of the cost are both below ftol."""
    CONVERGED_XTOL = 2
    """The scaled step is below xtol relative to the scaled parameters."""
    CONVERGED_GTOL = 3
    """The scaled gradient (cosine between r and J's columns) is below gtol, or r = 0."""
    MAX_STEPS = 4
    """The step limit was reached before any convergence test was met."""
    NONFINITE = 5
    """The start, the residual, its cost ½‖r‖² or the Jacobian at the start is not
    finite (NaN/inf), or JᵀJ overflows there (no step could use it)."""
    NO_PROGRESS = 6
    """Steps keep failing although the step is already at machine precision (or μ
    overflowed): no further reduction is possible, but no stationarity test was met —
    for example the minimum lies beyond the edge of the residual's domain, where every
    trial point is non-finite."""
    NO_DATA = 7
    """(fit layer) Every data point of this member is masked or omitted: nothing to fit;
    the parameters are returned at their start."""
    NONPOSITIVE_MODEL = 8
    """(fit layer, Poisson estimator) At the start the model is negative somewhere, or
    zero where counts were observed: the Poisson likelihood is undefined there."""
    UNDERDETERMINED = 9
    """(fit layer) Fewer data points than free parameters: the minimum is not unique
    (any of infinitely many parameter sets fits the points), so no fit is claimed.  The
    parameters are the solver's last point; ``pcov`` is ``inf``."""

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Status.RUNNING: "still running",
    Status.CONVERGED_FTOL: "converged: relative reduction of the cost below ftol",
    Status.CONVERGED_XTOL: "converged: relative step size below xtol",
    Status.CONVERGED_GTOL: "converged: scaled gradient below gtol",
    Status.MAX_STEPS: "stopped: max_steps reached",
    Status.NONFINITE: "failed: non-finite start, residual or Jacobian",
    Status.NO_PROGRESS: "stopped: no further reduction possible at machine precision",
    Status.NO_DATA: "not fitted: every data point is masked or non-finite",
    Status.NONPOSITIVE_MODEL: "failed: the model is not positive where the Poisson likelihood needs it",
    Status.UNDERDETERMINED: "not fitted: fewer data points than free parameters",
}


def is_success(status: jax.Array) -> jax.Array:
    """True where ``status`` is one of the ``CONVERGED_*`` codes."""
    return (status >= Status.CONVERGED_FTOL) & (status <= Status.CONVERGED_GTOL)
