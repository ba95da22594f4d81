"""The pure-functional Levenberg–Marquardt core: state, ``init``, ``step``, ``run``.

The solver is a frozen (hashable) set of static options; its methods are pure functions
of a :class:`LMState`, a NamedTuple of arrays only, so they compose with ``jax.jit``,
``jax.vmap`` and ``lax`` control flow::

    solver = LevenbergMarquardt(damping="more")
    state = solver.init(fun, x0, *args)
    state = solver.step(fun, state, *args)      # one trial step; a no-op once stopped
    state = solver.run(fun, x0, *args)          # lax.while_loop until a stopping test

One step (Moré 1978; Madsen, Nielsen & Tingleff 2004), in the solver's normalised units
(the residual and the parameters rescaled by powers of two fixed at the start, exactly;
:mod:`jaxlm._units`):

1. solve ``(A + μD) h = −g`` from the n×n Gauss–Newton model held in the state
   (:mod:`jaxlm._linalg`); optionally add half the geodesic acceleration ``d = ½a``
   (dropped when not finite; the step is rejected when it is too large);
2. evaluate the residual *and* its Jacobian at the trial point in one pass;
3. gain ratio ``ρ = (C(x) − C(x+h+d)) / (½hᵀAh + μhᵀDh)``, where the denominator is the
   reduction predicted by the linear model for h, ``C(x) − ½‖r + Jh‖²``, rewritten with
   ``(A + μD)h = −g`` so that it is a sum of non-negative terms (no cancellation);
4. accept when the factorisation succeeded, the trial residual and Jacobian are finite
   and ``ρ > 1e-4``; otherwise keep the point.  Update μ (:mod:`jaxlm._damping`), D,
   and the model;
5. stopping tests, MINPACK style, relative and unit free; ftol and xtol count only an
   *informative* step (solve succeeded, trial point finite, and in every direction either
   ``μD_j ≤ A_jj`` or, for a rejected step, the point is stationary on that parameter's
   scale), so that every
   ``CONVERGED_*`` status is a stationarity claim:

   * ftol:  ``|actual| ≤ ftol·C``, ``predicted ≤ ftol·C`` and ``ρ ≤ 2``;
   * xtol:  ``‖S^½ h‖ ≤ xtol·‖S^½ x‖`` (S the running max of diag(A));
   * gtol:  ``max_j |g_j| / (‖J_j‖·‖r‖) ≤ gtol`` (cosine between r and each column of J;
     zero columns skipped) or ``r = 0``;
   * no progress: a rejected step shorter than ``eps·‖S^½ x‖``, or μ overflowed;
   * max steps.

Nothing static lives in the state, and the state never holds the m×n Jacobian.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxlm import _check, _damping, _linalg, _units
from jaxlm._status import Status, is_success  # noqa: F401  (is_success: re-exported)

_ACCEPT_RATIO = 1e-4  # minimum gain ratio of an accepted step (MINPACK's 1e-4)
JACOBIANS = ("fwd", "rev")


class Objective(NamedTuple):
    """What ``fun`` may return instead of a plain residual, for objectives that are not
    ``½‖r‖²`` but are minimised by the same Gauss–Newton-type model.

    The step is computed from ``residual`` (r̃) and its Jacobian J̃, i.e. from the model
    ``A = J̃ᵀJ̃``, ``g = J̃ᵀr̃``; the acceptance test, the gain ratio and ftol use ``cost``.
    For the model to be right, ``J̃ᵀr̃`` must equal the gradient of ``cost``; J̃ᵀJ̃ is
    whatever positive semi-definite curvature one chooses (its Fisher information, for a
    likelihood).  The fit layer builds these for robust losses (scipy's rescaling,
    Triggs et al. 2000) and for Poisson maximum likelihood; ``lax.stop_gradient`` on the
    weights makes autodiff return J̃ rather than the derivative of r̃'s value.

    Attributes:
      residual: r̃, an array or pytree of arrays.
      cost: the scalar objective (a cost of ``inf`` rejects the point).
    """

    residual: Any
    cost: jax.Array


def evaluate(fun: Callable, params, *args, rho=None):
    """``(r̃, cost)`` of ``fun`` at ``params``: r̃ flattened and multiplied by ``rho``
    (the normalised residual, :mod:`jaxlm._units`; 1 when omitted), cost ``½‖r̃‖²``, or
    the :class:`Objective`'s cost times ``rho²``."""
    out = fun(params, *args)
    residual = out.residual if isinstance(out, Objective) else out
    r = ravel_pytree(residual)[0]
    if rho is not None:
        r = r * rho.astype(r.dtype)
    if isinstance(out, Objective):
        cost = jnp.asarray(out.cost, r.dtype)
        return r, cost if rho is None else cost * rho * rho
    return r, 0.5 * (r @ r)


class LMState(NamedTuple):
    """The whole solver state; arrays only (a pytree, so it batches under vmap).

    Everything but ``params`` is in the solver's normalised units (:mod:`jaxlm._units`):
    the residual is ``ρ·r`` and the variables are ``z = x / c``.

    Attributes:
      params: current point, same pytree structure and dtypes as ``x0`` (caller's units).
      cost: ½‖ρ·r(params)‖², the normalised cost (:meth:`caller_cost` gives ½‖r‖²).
      mu: damping parameter μ.
      nu: Nielsen's growth factor for successive rejections.
      scale: running maximum of diag(JᵀJ) over the accepted points, shape (n,):
        MINPACK's parameter scaling.  It is D for ``damping="more"`` and scales the
        xtol test for every damping; D itself is derived from it and the model.
      model: the Gauss–Newton model at ``params`` (n×n, see :mod:`jaxlm._linalg`).
      units: the exact rescaling ρ, c fixed at the start.
      n_steps: number of trial steps taken (accepted or not).
      n_fev: number of residual evaluations (each with its Jacobian).
      status: a :class:`Status` code (int32).
      attempt: 0 on the first attempt, 1 once restarted (``restart``); int32.
      memory: what a restart needs (:class:`Restart`), or None without ``restart``.
    """

    params: Any
    cost: jax.Array
    mu: jax.Array
    nu: jax.Array
    scale: jax.Array
    model: _linalg.GaussNewtonModel
    units: _units.Units
    n_steps: jax.Array
    n_fev: jax.Array
    status: jax.Array
    attempt: jax.Array = None
    memory: Any = None

    def caller_cost(self) -> jax.Array:
        """½‖r(params)‖² (or the Objective's cost) in the caller's units."""
        return _units.caller_cost(self.units, self.cost)


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


def default_tolerance(dtype) -> float:
    """``eps^(3/4)`` of the dtype: 1.8e-12 for float64, 6.4e-6 for float32.

    Tight enough for NIST-certified accuracy in float64, loose enough that a float32
    fit stops once float32 precision is reached instead of running to ``max_steps``.
    """
    return float(jnp.finfo(dtype).eps) ** 0.75


@dataclasses.dataclass(frozen=True)
class LevenbergMarquardt:
    """Levenberg–Marquardt for ``min_x ½‖fun(x, *args)‖²``, as pure ``init``/``step``.

    Args:
      damping: the scaling matrix D: ``"more"`` (running max of diag JᵀJ, the
        default), ``"relative"`` (identity in each parameter's natural unit, its start's
        size), ``"levenberg"`` (identity) or ``"marquardt"`` (diag JᵀJ).  See
        :mod:`jaxlm._damping` and the damping study (``benchmarks/damping_study.py``,
        README "Which damping?").
      restart: the damping of a second attempt, or None for none.  A member that stops
        with MAX_STEPS or NO_PROGRESS runs again from its start with this damping (its
        own ``max_steps``; ``n_steps`` and ``n_fev`` count both attempts) and keeps the
        attempt with the lower cost, with that attempt's status.  Default
        ``"relative"``: Moré's scaling remembers the curvature of a far start for ever
        (MGH Chebyquad, Meyer), identity damping in natural units does not; with the
        restart the default solves 565 of the study's 585 runs against 553 without, and
        every run MINPACK solves.  Members that converge on their first attempt pay
        only for carrying their start (``LMState.memory``, two more copies of the
        state): 3–13 % of the throughput on the benchmark suite's problems.
      update: μ update rule, ``"nielsen"`` (default) or ``"marquardt"`` (÷10 / ×10).
      linear_solver: ``"cholesky"`` (default; of the equilibrated damped normal
        equations, cheapest, and as accurate as QR on the NIST suite) or ``"qr"`` (QR of
        the augmented system, never forms JᵀJ).
      jac: ``"fwd"`` (``jax.jacfwd``, default, best when m ≥ n), ``"rev"``
        (``jax.jacrev``) or a callable ``jac(params, *args)`` returning the (m, n)
        Jacobian of the flattened residual with respect to the flattened params.
      geodesic: add Transtrum & Sethna's geodesic acceleration to each step (default
        True: in the damping study it prevents every parameter evaporation and adds
        solved runs for every damping; costs two extra directional derivatives per step).
      geodesic_alpha: accept an accelerated step only if ``2‖a‖ ≤ alpha·‖h‖`` (scaled).
      ftol, xtol, gtol: relative tolerances; ``None`` means ``eps^(3/4)`` of the dtype.
      max_steps: limit on trial steps, per attempt (see ``restart``).
      tau: relative starting damping, ``μ₀ = tau · max(diag(JᵀJ) / D)``.
    """

    damping: str = "more"
    update: str = "nielsen"
    linear_solver: str = "cholesky"
    jac: str | Callable = "fwd"
    geodesic: bool = True
    geodesic_alpha: float = 0.75
    ftol: float | None = None
    xtol: float | None = None
    gtol: float | None = None
    max_steps: int = 1000
    tau: float = 1e-3
    restart: str | None = "relative"

    def __post_init__(self):
        # options are normalised to plain Python values: they hash alike however given
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        _check.choice("damping", self.damping, _damping.DAMPINGS)
        if self.restart is not None:
            _check.choice("restart", self.restart, _damping.DAMPINGS)
        _check.choice("update", self.update, _damping.UPDATES)
        _check.choice("linear_solver", self.linear_solver, _linalg.LINEAR_SOLVERS)
        if not callable(self.jac):
            _check.choice("jac", self.jac, JACOBIANS)
        set_("geodesic", _check.boolean("geodesic", self.geodesic))
        for name in ("ftol", "xtol", "gtol"):
            set_(name, _check.real(name, getattr(self, name), allow_none=True))
        # n_steps is int32: a larger limit means "no limit", as 2³¹ − 1 steps never end
        set_("max_steps", _check.integer("max_steps", self.max_steps, clamp=_check.INT32_MAX))
        set_("tau", _check.real("tau", self.tau, positive=True))
        set_("geodesic_alpha", _check.real("geodesic_alpha", self.geodesic_alpha, positive=True))

    # ------------------------------------------------------------------ evaluation
    def _normalised(self, fun, unravel, units: _units.Units, args, dtype):
        """The residual and cost as functions of the normalised variables ``z = x / c``
        (both in normalised units, :mod:`jaxlm._units`)."""
        c, rho = units.params, units.residual

        def flat_fun(z):
            r, cost = evaluate(fun, unravel(z * c), *args, rho=rho)
            return r.astype(dtype), cost.astype(dtype)

        def user_jac_t(z):  # a callable jac returns ∂r/∂x in the caller's units
            jac = jnp.asarray(self.jac(unravel(z * c), *args)).astype(dtype)
            m = jac.size // z.shape[0]
            return jnp.reshape(jac, (m, z.shape[0])).T * (c * rho)[:, None]

        return flat_fun, user_jac_t

    def _jacobian_mode(self, flat_fun, z) -> str:
        """The autodiff mode of J: ``"custom"`` for a callable ``jac``; ``"rev_only"`` for
        a residual holding a ``jax.custom_vjp``, which has no forward mode at all (J in
        reverse mode, whatever ``jac`` says, and no nested JVPs for the acceleration);
        else ``jac`` as given.  Decided once per trace from the residual's jaxpr."""
        if callable(self.jac):
            return "custom"
        if _has_custom_vjp(flat_fun, z):
            return "rev_only"
        return self.jac

    def _linearise(self, flat_fun, user_jac_t, z, mode):
        """Residual, cost and *transposed* Jacobian ``Jᵀ`` (n, m) at flat ``z``, one pass.

        Forward mode pushes the n unit tangents through one ``jax.linearize``; keeping
        them as the rows of ``Jᵀ`` (the order ``vmap`` produces them in) rather than
        transposing to J makes every column of J contiguous, which is what the normal
        equation products in :func:`jaxlm._linalg.compress` read (2× faster under a
        batch on CPU, ``benchmarks/small_solve.py``).
        """
        if mode == "custom":
            r, cost = flat_fun(z)
            return r, cost, user_jac_t(z)
        if mode == "fwd":
            (r, cost), push = jax.linearize(flat_fun, z)
            jac_t = jax.vmap(lambda t: push(t)[0])(jnp.eye(z.shape[0], dtype=z.dtype))
            return r, cost, jac_t

        def with_aux(w):
            r, cost = flat_fun(w)
            return r, (r, cost)

        jac, (r, cost) = jax.jacrev(with_aux, has_aux=True)(z)
        return r, cost, jac.T

    def _tolerances(self, dtype):
        tol = default_tolerance(dtype)
        return tuple(tol if t is None else t for t in (self.ftol, self.xtol, self.gtol))

    def _gtol_met(self, model, rr, gtol):
        """The scaled-gradient (stationarity) test: the cosine between r and every
        nonzero column of J is at most gtol, or r is zero (``rr = ‖r‖²``, from the pass
        over r that computes the cost: another pass over a batch of residuals costs more
        than this whole test)."""
        g = _linalg.gradient(self.linear_solver, model)
        nd = _linalg.normal_diag(self.linear_solver, model)
        colnorm = jnp.sqrt(jnp.where(nd > 0, nd, 1))
        cosines = jnp.where(nd > 0, jnp.abs(g) / colnorm, 0)
        return (rr == 0) | (jnp.max(cosines) <= gtol * jnp.sqrt(rr))

    def _scaled_gradient(self, model, cost, scale):
        """``|g_j| / (√S_j·‖r‖)`` for every parameter j: the gradient measured against the
        largest column norm the parameter has had (S, the running max of diag A), with
        ``‖r‖ = √(2C)``; 0 for columns never seen and for a zero cost.  Unlike the gtol
        cosine it vanishes where a column of J has shrunk to nothing at a minimum."""
        g = _linalg.gradient(self.linear_solver, model)
        seen = scale > 0
        ratio = jnp.where(seen, jnp.abs(g) / jnp.sqrt(jnp.where(seen, scale, 1)), 0)
        rnorm = jnp.sqrt(2 * cost)
        return jnp.where(rnorm > 0, ratio / jnp.where(rnorm > 0, rnorm, 1), 0)

    def _renormalised(self, state):
        """The state after a step, with the residual's factor ρ raised by a power of two
        once the normalised cost has fallen below ``2^(minexp/2)`` (the residual dropped
        by ~1e77 in float64, ~1e9 in float32 from the start), so that ½‖r‖² and JᵀJ
        never underflow.  Exact, hence path-neutral; the factor is capped so that
        diag(JᵀJ) stays below ``2^(maxexp/2)``."""
        info = jnp.finfo(state.cost.dtype)
        cost, model, scale, units = state.cost, state.model, state.scale, state.units
        e_cost = _units.exponent(cost)
        e_diag = _units.exponent(jnp.max(_linalg.normal_diag(self.linear_solver, model)))
        low = (cost > 0) & (cost < 2.0 ** (info.minexp // 2))
        # halved by an arithmetic shift: floor division, and far less code than jnp's //
        shift = jnp.minimum((-e_cost) >> 1, (info.maxexp // 2 - e_diag) >> 1)
        factor = _units.power_of_two(jnp.where(low, jnp.maximum(shift, 0), 0), cost.dtype)
        return state._replace(
            cost=cost * (factor * factor),
            model=_linalg.scale_model(self.linear_solver, model, factor),
            scale=scale * (factor * factor),
            units=units._replace(residual=units.residual * factor, natural=units.natural * (factor * factor)),
        )

    def _damping_diag(self, scale, model, units, attempt=None, damping=None):
        """D of the current attempt (the restart's damping once ``attempt == 1``)."""
        unit = jnp.square(units.params * units.residual)  # the caller's identity, normalised
        nd = _linalg.normal_diag(self.linear_solver, model)
        first = _damping.damping_diag(damping or self.damping, scale, nd, unit, units.natural)
        if self.restart is None or attempt is None or damping is not None:
            return first
        second = _damping.damping_diag(self.restart, scale, nd, unit, units.natural)
        return jnp.where(attempt == 0, first, second)

    # ------------------------------------------------------------------ init/step/run
    def init(self, fun: Callable, x0, *args) -> LMState:
        """Evaluate the start, fix the normalised units and build the state.  Pure;
        works under jit and vmap."""
        x, unravel = ravel_pytree(x0)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            raise TypeError(f"x0 must hold floating-point arrays, got dtype {x.dtype}")
        dtype = x.dtype
        n = x.shape[0]
        _, _, gtol = self._tolerances(dtype)
        flat_fun, user_jac_t = self._normalised(fun, unravel, _units.identity(n, dtype), args, dtype)
        mode = self._jacobian_mode(flat_fun, x)
        r_raw, cost_raw, jac_t_raw = self._linearise(flat_fun, user_jac_t, x, mode)
        units = _units.from_start(r_raw, jac_t_raw, x)
        r, jac_t = _units.normalise(units, r_raw, jac_t_raw)
        if isinstance(jax.eval_shape(fun, x0, *args), Objective):
            cost = cost_raw * units.residual * units.residual
        else:
            cost = 0.5 * (r @ r)
        model = _linalg.compress(self.linear_solver, jac_t, r)
        nd = _linalg.normal_diag(self.linear_solver, model)
        scale = _damping.update_scale(None, nd)
        mu = _damping.initial_mu(self.tau, nd, self._damping_diag(scale, model, units))
        finite = (
            jnp.all(jnp.isfinite(x))
            & jnp.isfinite(cost)
            & jnp.all(jnp.isfinite(r))
            & jnp.all(jnp.isfinite(jac_t))
        )
        status = jnp.where(self._gtol_met(model, r @ r, gtol), Status.CONVERGED_GTOL, Status.RUNNING)
        if self.max_steps == 0:
            status = jnp.where(status == Status.RUNNING, Status.MAX_STEPS, status)
        status = jnp.where(finite, status, Status.NONFINITE).astype(jnp.int32)
        state = LMState(
            params=x0,
            cost=cost,
            mu=mu,
            nu=jnp.asarray(2, dtype),
            scale=scale,
            model=model,
            units=units,
            n_steps=jnp.asarray(0, jnp.int32),
            n_fev=jnp.asarray(1, jnp.int32),
            status=status,
            attempt=jnp.asarray(0, jnp.int32),
        )
        if self.restart is None:
            return state
        diag_again = self._damping_diag(scale, model, units, damping=self.restart)
        mu_again = _damping.initial_mu(self.tau, nd, diag_again)
        start = state._replace(mu=mu_again, attempt=jnp.asarray(1, jnp.int32))
        return state._replace(memory=Restart(start, state, jnp.asarray(0, jnp.int32)))

    def step(self, fun: Callable, state: LMState, *args) -> LMState:
        """One trial step: propose, evaluate, accept or reject, stopping tests.  A member
        whose status is not RUNNING is returned unchanged."""
        x, unravel = ravel_pytree(state.params)
        cost, model, scale, units = state.cost, state.model, state.scale, state.units
        flat_fun, user_jac_t = self._normalised(fun, unravel, units, args, x.dtype)
        z = x / units.params  # exact: the factors are powers of two
        mode = self._jacobian_mode(flat_fun, z)
        diag = self._damping_diag(scale, model, units, state.attempt)
        step, ok, predicted, n_evals = self._propose(flat_fun, user_jac_t, z, state.mu, diag, model, mode)
        trial = z + step
        r_new, cost_new, jac_new = self._linearise(flat_fun, user_jac_t, trial, mode)
        model_new = _linalg.compress(self.linear_solver, jac_new, r_new)
        finite_new = _finite_trial(trial, cost_new, model_new)
        actual = cost - cost_new
        rho = actual / predicted
        accepted = ok & finite_new & (rho > _ACCEPT_RATIO)

        mu_new, nu_new = _damping.update_mu(self.update, accepted, rho, state.mu, state.nu)
        nd_new = _linalg.normal_diag(self.linear_solver, model_new)
        scale_new = jnp.where(accepted, _damping.update_scale(scale, nd_new), scale)
        model_sel = _select(accepted, model_new, model)
        z_sel = jnp.where(accepted, trial, z)
        cost_sel = jnp.where(accepted, cost_new, cost)
        n_steps = state.n_steps + 1
        offset = 0 if state.memory is None else state.memory.offset
        # an informative step (see _stopping) needs a successful solve and a finite trial
        status = self._stopping(
            _Trial(step, z_sel, cost, cost_sel, actual, predicted, rho, accepted, ok & finite_new),
            state.mu,
            mu_new,
            diag,
            model,
            scale,
            scale_new,
            model_sel,
            model_new,
            r_new,
            n_steps - offset,
        )
        new = self._renormalised(
            LMState(
                params=unravel(jnp.where(accepted, trial * units.params, x)),
                cost=cost_sel,
                mu=mu_new,
                nu=nu_new,
                scale=scale_new,
                model=model_sel,
                units=units,
                n_steps=n_steps,
                n_fev=state.n_fev + n_evals,
                status=status.astype(jnp.int32),
                attempt=state.attempt,
                memory=state.memory,
            )
        )
        running = state.status == Status.RUNNING
        if self.restart is None:
            return _select(running, new, state)
        core, memory = self._restarted(new._replace(memory=None), state.memory)
        # the start never changes: it is carried, not selected
        core = _select(running, core, state._replace(memory=None))
        old = state.memory
        first, offset = _select(running, (memory.first, memory.offset), (old.first, old.offset))
        return core._replace(memory=Restart(state.memory.start, first, offset))

    def _restarted(self, new: LMState, memory: Restart) -> tuple[LMState, Restart]:
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
        first_better = done & (_log_caller_cost(memory.first) < _log_caller_cost(new))
        core = _select(again, memory.start._replace(**counts), new)
        core = _select(first_better, memory.first._replace(**counts, attempt=new.attempt), core)
        first = _select(again, new, memory.first)
        return core, Restart(memory.start, first, jnp.where(again, new.n_steps, memory.offset))

    def _propose(self, flat_fun, user_jac_t, z, mu, diag, model, mode):
        """The trial step from ``(A + μD) h = −g`` (one factorisation), plus half the
        geodesic acceleration when enabled; returns ``(step, ok, predicted, n_evals)``
        with ``predicted`` the reduction the linear model predicts for h,
        ``C − ½‖r + Jh‖² = ½hᵀAh + μhᵀDh`` (using ``(A + μD)h = −g``)."""
        method = self.linear_solver
        factor = _linalg.damped_factor(method, model, mu, diag)
        h, ok = _linalg.damped_step(method, model, factor)
        predicted = 0.5 * _linalg.curvature(method, model, h) + mu * jnp.sum(diag * h * h)
        if not self.geodesic:
            return h, ok, predicted, 1
        d, too_large = self._acceleration(flat_fun, user_jac_t, z, h, factor, diag, model, mode)
        # Transtrum & Sethna's rule: a finite acceleration too large against the velocity
        # means the step left the region where the quadratic path is to be trusted: reject
        # it and raise μ (such a rejection is not informative, see _stopping).  ρ is
        # measured against the linear model's prediction for the velocity h, whose
        # second-order error the acceleration is there to cancel (measured against the
        # prediction at h + d instead, NIST StRD drops from 53/54 to 52/54 and BoxBOD/S1
        # stops on a plateau).
        return h + d, ok & ~too_large, predicted, 2

    def _stopping(self, t, mu, mu_new, diag, model, scale, scale_new, model_sel, model_new, r_new, n_steps):
        """The status after a step (``t``: its :class:`_Trial`).

        All tests are relative (unit free).  Only an *informative* step may count for
        ftol/xtol, so that each of them is a stationarity claim: its solve succeeded, its
        trial point was finite, and in every direction the residual sees either the step
        was decided by the model, not by μ (``μD_j ≤ A_jj``), or — for a rejected step —
        the point is stationary on that parameter's scale (:meth:`_scaled_gradient` ≤
        eps^(3/8), whatever tolerances the caller chose: a direction whose Gauss–Newton
        curvature vanishes at the minimum, such as a parameter held at a bound by the fit
        layer's transform, or one that the data no longer determine, is damped there).  A
        damped direction elsewhere has a short step, and predicts a small reduction, only
        because μ is large: at the edge of the residual's domain (the minimum lies beyond
        it) μ grows without bound while the gradient stays.  A rejected informative step
        counts for xtol as in MINPACK (failing even at relative size xtol means no better
        point is within reach of the model).  Every other rejection (a failed solve, a
        non-finite trial point, a too-large acceleration) says nothing about the current
        point; such steps shrink until they are below machine precision and end as
        NO_PROGRESS.
        """
        dtype = t.cost.dtype
        ftol, xtol, gtol = self._tolerances(dtype)
        nd = _linalg.normal_diag(self.linear_solver, model)
        undamped = (mu * diag <= nd) | (nd == 0)
        stationary = self._scaled_gradient(model_sel, t.cost_sel, scale_new) <= jnp.sqrt(
            default_tolerance(dtype)
        )
        informative = t.solved_finite & jnp.all(undamped | (~t.accepted & stationary))
        sqrt_s = jnp.sqrt(scale)
        step_norm = jnp.linalg.norm(sqrt_s * t.step)
        x_norm = jnp.linalg.norm(sqrt_s * t.z_sel)
        ftol_met = (
            informative & (jnp.abs(t.actual) <= ftol * t.cost) & (t.predicted <= ftol * t.cost) & (t.rho <= 2)
        )
        xtol_met = informative & (step_norm <= xtol * x_norm)
        gtol_met = t.accepted & self._gtol_met(model_new, r_new @ r_new, gtol)
        eps = jnp.finfo(dtype).eps
        stuck = ~t.accepted & ((step_norm <= eps * x_norm) | ~jnp.isfinite(mu_new))

        status = jnp.where(n_steps >= self.max_steps, Status.MAX_STEPS, Status.RUNNING)
        status = jnp.where(stuck, Status.NO_PROGRESS, status)
        status = jnp.where(gtol_met, Status.CONVERGED_GTOL, status)
        status = jnp.where(xtol_met, Status.CONVERGED_XTOL, status)
        return jnp.where(ftol_met, Status.CONVERGED_FTOL, status)

    def _acceleration(self, flat_fun, user_jac_t, z, h, factor, diag, model, mode):
        """Half the geodesic acceleration, ``d = ½a`` with ``(A + μD) a = −Jᵀ r''[h, h]``
        (Transtrum & Sethna 2012), and whether it is finite but too large.

        ``r''[h, h]``, the second directional derivative of the residual along the
        velocity h, comes from two nested JVPs.  ``Jᵀ(·)`` is taken in the Jacobian's own
        mode (forward: the columns of J pushed through the same linearisation as h,
        :func:`_forward_jt_rvv`; reverse: one VJP; a callable ``jac``: the caller's), so
        a residual that is finite in that mode gets a finite acceleration.  A residual without a
        forward mode (a
        ``jax.custom_vjp`` inside) gets Transtrum's finite difference instead,
        ``Jᵀr'' ≈ (2/δ)(Jᵀ(r(z + δh) − r(z))/δ − Ah)`` with δ = 0.1, from one VJP.  The
        solve reuses the step's factorisation.

        An acceleration that is not finite (a residual whose second derivative does not
        exist there, a failed solve) is not used: d = 0 and the step is the plain h; it
        is never a reason to reject h.  A finite one that is too large
        (``2‖a‖ > alpha·‖h‖`` in the D-norm) is reported so that the step rejects it.
        """
        residual = lambda w: flat_fun(w)[0]  # noqa: E731
        if mode == "rev_only":
            delta = jnp.asarray(0.1, z.dtype)
            r, vjp = jax.vjp(residual, z)
            a_h = _linalg.model_product(self.linear_solver, model, h)
            jt_rvv = (2 / delta) * (vjp((residual(z + delta * h) - r) / delta)[0] - a_h)
        elif mode == "rev":
            (jt_rvv,) = jax.vjp(residual, z)[1](_second_directional(residual, z, h))
        elif mode == "fwd":
            jt_rvv = _forward_jt_rvv(residual, z, h)
        else:
            jt_rvv = user_jac_t(z) @ _second_directional(residual, z, h)
        accel, ok = _linalg.damped_solve(self.linear_solver, factor, -jt_rvv)
        sqrt_d = jnp.sqrt(diag)
        small = 2 * jnp.linalg.norm(sqrt_d * accel) <= self.geodesic_alpha * jnp.linalg.norm(sqrt_d * h)
        return jnp.where(ok & small, 0.5 * accel, 0), ok & ~small

    def run(self, fun: Callable, x0, *args) -> LMState:
        """``init`` then ``step`` in a ``lax.while_loop`` until every member has stopped."""
        state = self.init(fun, x0, *args)
        return jax.lax.while_loop(
            lambda s: s.status == Status.RUNNING, lambda s: self.step(fun, s, *args), state
        )


def _select(condition, a, b):
    """``where(condition, a, b)`` leaf by leaf over two pytrees of the same structure."""
    return jax.tree_util.tree_map(lambda u, v: jnp.where(condition, u, v), a, b)


def _log_caller_cost(state: LMState) -> jax.Array:
    """log of ½‖r‖² in the caller's units, ``log C − 2 log ρ``: comparable between
    states whose residual factors differ, without forming C/ρ² (which may overflow);
    NaN as +inf, so that a finite cost always compares lower."""
    value = jnp.log(state.cost) - 2 * jnp.log(state.units.residual)
    return jnp.where(jnp.isnan(value), jnp.inf, value)


class _Trial(NamedTuple):
    """What the stopping tests need to know about one trial step (normalised units)."""

    step: jax.Array  # the step taken, h (+ d)
    z_sel: jax.Array  # the point kept: the trial if accepted, else the current one
    cost: jax.Array  # the cost before the step
    cost_sel: jax.Array  # the cost kept
    actual: jax.Array  # actual reduction C − C(trial)
    predicted: jax.Array  # reduction predicted for h
    rho: jax.Array  # gain ratio actual / predicted
    accepted: jax.Array
    solved_finite: jax.Array  # the solve succeeded and the trial point is finite


def _finite_trial(trial, cost_new, model_new):
    """Whether a trial point can be compared at all: point, residual, cost and Jacobian
    finite, and the cost not (nearly) underflowed — a residual that fell by about the
    dtype's range below the start's counts as non-finite, unless it is zero.

    The residual and Jacobian are judged through the n×n model (JᵀJ and Jᵀr, or R and
    Qᵀr), which holds a NaN or an inf wherever r or J does (0·NaN and 0·inf are NaN), at
    a cost of O(n²) instead of two more passes over the m×n Jacobian of every member (a
    quarter of a step's time on a batch of 100-point decays); it also rejects a JᵀJ that
    overflows, which no step could use."""
    eps = jnp.finfo(cost_new.dtype).eps
    return (
        jnp.all(jnp.isfinite(trial))
        & jnp.isfinite(cost_new)
        & jnp.all(jnp.isfinite(model_new.matrix))
        & jnp.all(jnp.isfinite(model_new.vector))
        & ((cost_new >= jnp.finfo(cost_new.dtype).tiny / eps) | (cost_new == 0))
    )


def _forward_jt_rvv(residual, z, h):
    """``Jᵀ r''[h, h]`` in forward mode from one linearisation of ``w ↦ (r(w), J(w)h)`` at
    z: pushing the unit tangents gives the columns of J, pushing h gives ``r''[h, h]``,
    all from one evaluation of the residual's primal (separately, the rows of Jᵀ and the
    nested JVPs each evaluate it: 3-5 % of a step on a batch of 100-point decays)."""
    n = z.shape[0]
    _, push = jax.linearize(lambda w: jax.jvp(residual, (w,), (h,)), z)
    tangents = jnp.concatenate([jnp.eye(n, dtype=z.dtype), h[None]])
    columns, second = jax.vmap(push)(tangents)
    return columns[:n] @ second[n]


def _second_directional(residual, z, h):
    """``r''[h, h]`` by two nested JVPs."""
    return jax.jvp(lambda w: jax.jvp(residual, (w,), (h,))[1], (z,), (h,))[1]


def _has_custom_vjp(fn, *example) -> bool:
    """Whether ``fn``'s jaxpr holds a ``jax.custom_vjp`` call (at any depth)."""

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name.startswith("custom_vjp"):
                return True
            for param in eqn.params.values():
                for sub in param if isinstance(param, tuple | list) else (param,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns") and walk(inner):
                        return True
        return False

    return walk(jax.make_jaxpr(fn)(*example).jaxpr)
