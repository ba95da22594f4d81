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
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxlm import _check, _damping, _geodesic, _linalg, _residual, _restart, _stopping, _units
from jaxlm._residual import Objective
from jaxlm._restart import select
from jaxlm._status import Status, is_success  # noqa: F401  (is_success: re-exported)
from jaxlm._stopping import default_tolerance  # noqa: F401  (re-exported)

_ACCEPT_RATIO = 1e-4  # minimum gain ratio of an accepted step (MINPACK's 1e-4)
JACOBIANS = ("fwd", "rev")


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
      attempt: 0 on the first attempt, 1 on the second (``restart``: its damping); int32.
        ``n_steps`` and ``n_fev`` count the current attempt until :meth:`run` (or the
        driver) totals them over both.
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

    def caller_cost(self) -> jax.Array:
        """½‖r(params)‖² (or the Objective's cost) in the caller's units."""
        return _units.caller_cost(self.units, self.cost)


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
        every run MINPACK solves.  The attempts are run by :meth:`run` and by the
        batch driver (:mod:`jaxlm._restart`); :meth:`step` damps a member as its
        ``attempt`` says, so stepping by hand runs one attempt.
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

    one_problem: ClassVar[bool] = False
    """Whether this is :meth:`alone`'s form, for one problem outside any ``vmap``."""

    @property
    def linalg(self) -> _linalg.LinearSolver:
        """The damped linear solve of ``linear_solver`` (:mod:`jaxlm._linalg`)."""
        return _linalg.method(self.linear_solver, batched=not self.one_problem)

    def alone(self) -> LevenbergMarquardt:
        """This solver for a problem solved on its own, outside any ``vmap``: the same
        algorithm and options, with the linear algebra's unbatched form (a smaller
        program, the same results to rounding; the fit layer's covariance then comes
        from numpy's SVD).  A distinct value, so it compiles its own programs."""
        return _Alone(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def _renormalised(self, state):
        """The state after a step, with the residual's factor ρ raised by a power of two
        once the normalised cost has fallen below ``2^(minexp/2)`` (the residual dropped
        by ~1e77 in float64, ~1e9 in float32 from the start), so that ½‖r‖² and JᵀJ
        never underflow.  Exact, hence path-neutral; the factor is capped so that
        diag(JᵀJ) stays below ``2^(maxexp/2)``."""
        info = jnp.finfo(state.cost.dtype)
        cost, model, scale, units = state.cost, state.model, state.scale, state.units
        e_cost = _units.exponent(cost)
        e_diag = _units.exponent(jnp.max(self.linalg.normal_diag(model)))
        low = (cost > 0) & (cost < 2.0 ** (info.minexp // 2))
        # halved by an arithmetic shift: floor division, and far less code than jnp's //
        shift = jnp.minimum((-e_cost) >> 1, (info.maxexp // 2 - e_diag) >> 1)
        factor = _units.power_of_two(jnp.where(low, jnp.maximum(shift, 0), 0), cost.dtype)
        return state._replace(
            cost=cost * (factor * factor),
            model=self.linalg.scale_model(model, factor),
            scale=scale * (factor * factor),
            units=units._replace(residual=units.residual * factor, natural=units.natural * (factor * factor)),
        )

    def damping_diag(self, scale, model, units, attempt=None, damping=None):
        """D of the current attempt (the restart's damping once ``attempt == 1``)."""
        unit = jnp.square(units.params * units.residual)  # the caller's identity, normalised
        nd = self.linalg.normal_diag(model)
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
        _, _, gtol = _stopping.tolerances(self, dtype)
        ev = _residual.evaluation(fun, unravel, _units.identity(n, dtype), args, dtype, self.jac, x)
        objective = isinstance(jax.eval_shape(fun, x0, *args), Objective)
        units, model, cost, rr = ev.start(self.linalg, x, objective)
        nd = self.linalg.normal_diag(model)
        scale = _damping.update_scale(None, nd)
        mu = _damping.initial_mu(self.tau, nd, self.damping_diag(scale, model, units))
        # r and J judged through the model, as at every trial point (finite_model)
        finite = jnp.all(jnp.isfinite(x)) & jnp.isfinite(cost) & _stopping.finite_model(model)
        status = jnp.where(
            _stopping.gtol_test(self.linalg, model, rr, gtol), Status.CONVERGED_GTOL, Status.RUNNING
        )
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
        return state

    def step(self, fun: Callable, state: LMState, *args) -> LMState:
        """One trial step: propose, evaluate, accept or reject, stopping tests.  A member
        whose status is not RUNNING is returned unchanged."""
        x, unravel = ravel_pytree(state.params)
        cost, model, scale, units = state.cost, state.model, state.scale, state.units
        z = x / units.params  # exact: the factors are powers of two
        ev = _residual.evaluation(fun, unravel, units, args, x.dtype, self.jac, z)
        diag = self.damping_diag(scale, model, units, state.attempt)
        step, ok, predicted, n_evals = self._propose(ev, z, state.mu, diag, model)
        trial = z + step
        model_new, cost_new, rr_new = ev.linearised(self.linalg, trial)
        finite_new = _stopping.finite_trial(trial, cost_new, model_new)
        actual = cost - cost_new
        rho = actual / predicted
        accepted = ok & finite_new & (rho > _ACCEPT_RATIO)

        mu_new, nu_new = _damping.update_mu(self.update, accepted, rho, state.mu, state.nu)
        nd_new = self.linalg.normal_diag(model_new)
        scale_new = jnp.where(accepted, _damping.update_scale(scale, nd_new), scale)
        model_sel = select(accepted, model_new, model)
        z_sel = jnp.where(accepted, trial, z)
        cost_sel = jnp.where(accepted, cost_new, cost)
        n_steps = state.n_steps + 1
        # an informative step (see _stopping) needs a successful solve and a finite trial
        status = _stopping.status(
            self,
            _stopping.Trial(step, z_sel, cost, cost_sel, actual, predicted, rho, accepted, ok & finite_new),
            state.mu,
            mu_new,
            diag,
            model,
            scale,
            scale_new,
            model_sel,
            model_new,
            rr_new,
            n_steps,
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
            )
        )
        return select(state.status == Status.RUNNING, new, state)

    def _propose(self, ev, z, mu, diag, model):
        """The trial step from ``(A + μD) h = −g`` (one factorisation), plus half the
        geodesic acceleration when enabled; returns ``(step, ok, predicted, n_evals)``
        with ``predicted`` the reduction the linear model predicts for h,
        ``C − ½‖r + Jh‖² = ½hᵀAh + μhᵀDh`` (using ``(A + μD)h = −g``)."""
        linalg = self.linalg
        factor = linalg.factor(model, mu, diag)
        h, ok = linalg.step(model, factor)
        predicted = 0.5 * linalg.curvature(model, h) + mu * jnp.sum(diag * h * h)
        if not self.geodesic:
            return h, ok, predicted, 1
        jt_rvv = ev.jt_rvv(linalg, model, z, h)
        d, too_large = _geodesic.acceleration(linalg, self.geodesic_alpha, jt_rvv, h, factor, diag)
        # Transtrum & Sethna's rule: a finite acceleration too large against the velocity
        # means the step left the region where the quadratic path is to be trusted: reject
        # it and raise μ (such a rejection is not informative, see _stopping).  ρ is
        # measured against the linear model's prediction for the velocity h, whose
        # second-order error the acceleration is there to cancel (measured against the
        # prediction at h + d instead, NIST StRD drops from 53/54 to 52/54 and BoxBOD/S1
        # stops on a plateau).
        return h + d, ok & ~too_large, predicted, 2

    def run(self, fun: Callable, x0, *args) -> LMState:
        """``init`` then ``step`` in a ``lax.while_loop`` until every member has stopped;
        with ``restart``, the members whose first attempt failed run the same loop again
        from their start (:mod:`jaxlm._restart`).  The loop of steps is traced once: an
        outer loop runs it for each attempt."""
        start = self.init(fun, x0, *args)

        def attempt(state):
            return jax.lax.while_loop(
                lambda s: s.status == Status.RUNNING, lambda s: self.step(fun, s, *args), state
            )

        if self.restart is None:
            return attempt(start)

        def more(carry):
            k, _, _, again = carry
            return (k == 0) | ((k == 1) & again)

        def body(carry):
            k, state, first, again = carry
            final = attempt(state)
            # after the first attempt: remember it, and who tries again from the start
            first, again = select(k == 0, (final, _restart.needs_second(final)), (first, again))
            second = select(again, _restart.second_start(self, start), final)
            after = select(k == 0, second, _restart.keep_better(first, final, again))
            return k + 1, after, first, again

        carry = (jnp.asarray(0, jnp.int32), start, start, jnp.asarray(False))
        return jax.lax.while_loop(more, body, carry)[1]


@dataclasses.dataclass(frozen=True)
class _Alone(LevenbergMarquardt):
    """:meth:`LevenbergMarquardt.alone`'s solver."""

    one_problem: ClassVar[bool] = True

    def alone(self) -> LevenbergMarquardt:
        return self
