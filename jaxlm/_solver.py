"""The pure-functional Levenberg–Marquardt core: state, ``init``, ``step``, ``run``.

The solver is a frozen (hashable) set of static options; its methods are pure functions
of a :class:`LMState`, a NamedTuple of arrays only, so they compose with ``jax.jit``,
``jax.vmap`` and ``lax`` control flow::

    solver = LevenbergMarquardt(damping="more")
    state = solver.init(fun, x0, *args)
    state = solver.step(fun, state, *args)      # one trial step; a no-op once stopped
    state = solver.run(fun, x0, *args)          # lax.while_loop until a stopping test

One step (Moré 1978; Madsen, Nielsen & Tingleff 2004):

1. solve ``(A + μD) h = −g`` from the n×n Gauss–Newton model held in the state
   (:mod:`jaxlm._linalg`); optionally add the geodesic acceleration ``½a``;
2. evaluate the residual *and* its Jacobian at the trial point ``x + h`` in one pass;
3. gain ratio ``ρ = (C(x) − C(x+h)) / (½hᵀAh + μhᵀDh)``, where the denominator is the
   reduction predicted by the linear model, ``C(x) − ½‖r + Jh‖²``, rewritten with
   ``(A + μD)h = −g`` so that it is a sum of non-negative terms (no cancellation);
4. accept when the factorisation succeeded, the trial residual and Jacobian are finite
   and ``ρ > 1e-4``; otherwise keep the point.  Update μ (:mod:`jaxlm._damping`), D,
   and the model;
5. stopping tests, MINPACK style, relative and unit free:

   * ftol:  ``|actual| ≤ ftol·C``, ``predicted ≤ ftol·C`` and ``ρ ≤ 2`` (on an
     accepted step only if it is not dominated by damping, see xtol);
   * xtol:  ``‖S^½ h‖ ≤ xtol·‖S^½ x‖`` (S the running max of diag(A)) on a rejected
     step, or on an accepted one not dominated by damping (``μhᵀDh ≤ ½hᵀAh``);
   * gtol:  ``max_j |g_j| / (‖J_j‖·‖r‖) ≤ gtol`` (cosine between r and each column of J;
     zero columns skipped) or ``r = 0``;
   * no progress: a rejected step shorter than ``eps·‖S^½ x‖``, or μ overflowed;
   * max steps.

Nothing static lives in the state, and the state never holds the m×n Jacobian.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxlm import _damping, _linalg

_ACCEPT_RATIO = 1e-4  # minimum gain ratio of an accepted step (MINPACK's 1e-4)
JACOBIANS = ("fwd", "rev")


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
    finite (NaN/inf)."""
    NO_PROGRESS = 6
    """Steps keep failing although the step is already at machine precision (or μ
    overflowed): no further reduction is possible, but the tolerances were not met."""
    NO_DATA = 7
    """(fit layer) Every data point of this member is masked or omitted: nothing to fit;
    the parameters are returned at their start."""
    NONPOSITIVE_MODEL = 8
    """(fit layer, Poisson estimator) At the start the model is negative somewhere, or
    zero where counts were observed: the Poisson likelihood is undefined there."""

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
}


def is_success(status: jax.Array) -> jax.Array:
    """True where ``status`` is one of the ``CONVERGED_*`` codes."""
    return (status >= Status.CONVERGED_FTOL) & (status <= Status.CONVERGED_GTOL)


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


def evaluate(fun: Callable, params, *args):
    """``(r̃, cost)`` of ``fun`` at ``params``: r̃ flattened, cost ½‖r‖² unless ``fun``
    returns an :class:`Objective`."""
    out = fun(params, *args)
    if isinstance(out, Objective):
        r = ravel_pytree(out.residual)[0]
        return r, jnp.asarray(out.cost, r.dtype)
    r = ravel_pytree(out)[0]
    return r, 0.5 * (r @ r)


class LMState(NamedTuple):
    """The whole solver state; arrays only (a pytree, so it batches under vmap).

    Attributes:
      params: current point, same pytree structure and dtypes as ``x0``.
      cost: ½‖r(params)‖².
      mu: damping parameter μ.
      nu: Nielsen's growth factor for successive rejections.
      scale: running maximum of diag(JᵀJ) over the accepted points (floored), shape
        (n,): MINPACK's parameter scaling.  It is D for ``damping="more"`` and scales
        the xtol test for every damping; D itself is derived from it and the model.
      model: the Gauss–Newton model at ``params`` (n×n, see :mod:`jaxlm._linalg`).
      n_steps: number of trial steps taken (accepted or not).
      n_fev: number of residual evaluations (each with its Jacobian).
      status: a :class:`Status` code (int32).
    """

    params: Any
    cost: jax.Array
    mu: jax.Array
    nu: jax.Array
    scale: jax.Array
    model: _linalg.GaussNewtonModel
    n_steps: jax.Array
    n_fev: jax.Array
    status: jax.Array


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
        default), ``"levenberg"`` (identity) or ``"marquardt"`` (diag JᵀJ).  See
        :mod:`jaxlm._damping`.  The default is the damping study's
        (``benchmarks/damping_study.py``): scale invariant, it solves 483 of 508 runs
        against 410 for identity damping, which fails a quarter of the problems once
        their parameters' scales differ by 10³ or more.  ``"levenberg"`` solves a few
        more far-start problems posed in well-scaled units (NIST MGH10 from start 1;
        MGH Beale, Box3D, Bard, Meyer from 10–100·x0).
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
      max_steps: limit on trial steps.
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

    def __post_init__(self):
        _check_choice("damping", self.damping, _damping.DAMPINGS)
        _check_choice("update", self.update, _damping.UPDATES)
        _check_choice("linear_solver", self.linear_solver, _linalg.LINEAR_SOLVERS)
        if not callable(self.jac):
            _check_choice("jac", self.jac, JACOBIANS)
        for name in ("ftol", "xtol", "gtol"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number or None, got {value!r}")
        if not isinstance(self.max_steps, int) or isinstance(self.max_steps, bool) or self.max_steps < 0:
            raise ValueError(f"max_steps must be a non-negative int, got {self.max_steps!r}")
        if not (isinstance(self.tau, int | float) and self.tau > 0):
            raise ValueError(f"tau must be a positive number, got {self.tau!r}")
        if not (isinstance(self.geodesic_alpha, int | float) and self.geodesic_alpha > 0):
            raise ValueError(f"geodesic_alpha must be positive, got {self.geodesic_alpha!r}")

    # ------------------------------------------------------------------ evaluation
    def _linearise(self, fun, unravel, x, args):
        """Residual, cost and *transposed* Jacobian ``Jᵀ`` (n, m) at flat ``x``, one pass.

        Forward mode pushes the n unit tangents through one ``jax.linearize``; keeping
        them as the rows of ``Jᵀ`` (the order ``vmap`` produces them in) rather than
        transposing to J makes every column of J contiguous, which is what the normal
        equation products in :func:`jaxlm._linalg.compress` read (2× faster under a
        batch on CPU, ``benchmarks/small_solve.py``).
        """
        dtype = x.dtype

        def flat_fun(z):
            r, cost = evaluate(fun, unravel(z), *args)
            return r.astype(dtype), cost.astype(dtype)

        if callable(self.jac):
            r, cost = flat_fun(x)
            jac = jnp.asarray(self.jac(unravel(x), *args)).astype(dtype)
            return r, cost, jnp.reshape(jac, (r.shape[0], x.shape[0])).T

        if self.jac == "fwd":
            (r, cost), push = jax.linearize(flat_fun, x)
            jac_t = jax.vmap(lambda t: push(t)[0])(jnp.eye(x.shape[0], dtype=dtype))
            return r, cost, jac_t

        def with_aux(z):
            r, cost = flat_fun(z)
            return r, (r, cost)

        jac, (r, cost) = jax.jacrev(with_aux, has_aux=True)(x)
        return r, cost, jac.T

    def _tolerances(self, dtype):
        tol = default_tolerance(dtype)
        return tuple(tol if t is None else t for t in (self.ftol, self.xtol, self.gtol))

    def _gtol_met(self, model, r, gtol):
        g = _linalg.gradient(self.linear_solver, model)
        nd = _linalg.normal_diag(self.linear_solver, model)
        rr = r @ r
        colnorm = jnp.sqrt(jnp.where(nd > 0, nd, 1))
        cosines = jnp.where(nd > 0, jnp.abs(g) / colnorm, 0)
        return (rr == 0) | (jnp.max(cosines) <= gtol * jnp.sqrt(rr))

    # ------------------------------------------------------------------ init/step/run
    def init(self, fun: Callable, x0, *args) -> LMState:
        """Evaluate the start and build the state.  Pure; works under jit and vmap."""
        x, unravel = ravel_pytree(x0)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            raise TypeError(f"x0 must hold floating-point arrays, got dtype {x.dtype}")
        dtype = x.dtype
        _, _, gtol = self._tolerances(dtype)
        r, cost, jac_t = self._linearise(fun, unravel, x, args)
        model = _linalg.compress(self.linear_solver, jac_t, r)
        nd = _linalg.normal_diag(self.linear_solver, model)
        scale = _damping.update_scale(None, nd)
        mu = _damping.initial_mu(self.tau, nd, _damping.damping_diag(self.damping, scale, nd))
        finite = (
            jnp.all(jnp.isfinite(x))
            & jnp.isfinite(cost)
            & jnp.all(jnp.isfinite(r))
            & jnp.all(jnp.isfinite(jac_t))
        )  # an overflowing ½‖r‖² counts as non-finite
        status = jnp.where(self._gtol_met(model, r, gtol), Status.CONVERGED_GTOL, Status.RUNNING)
        if self.max_steps == 0:
            status = jnp.where(status == Status.RUNNING, Status.MAX_STEPS, status)
        status = jnp.where(finite, status, Status.NONFINITE).astype(jnp.int32)
        return LMState(
            params=x0,
            cost=cost,
            mu=mu,
            nu=jnp.asarray(2, dtype),
            scale=scale,
            model=model,
            n_steps=jnp.asarray(0, jnp.int32),
            n_fev=jnp.asarray(1, jnp.int32),
            status=status,
        )

    def step(self, fun: Callable, state: LMState, *args) -> LMState:
        """One trial step.  A member whose status is not RUNNING is returned unchanged."""
        x, unravel = ravel_pytree(state.params)
        dtype = x.dtype
        eps = jnp.finfo(dtype).eps
        ftol, xtol, gtol = self._tolerances(dtype)
        method = self.linear_solver
        mu, scale, model, cost = state.mu, state.scale, state.model, state.cost
        diag = _damping.damping_diag(self.damping, scale, _linalg.normal_diag(method, model))

        factor = _linalg.damped_factor(method, model, mu, diag)  # one factorisation per step
        h, ok = _linalg.damped_step(method, model, factor)
        step = h
        n_evals = 1
        if self.geodesic:
            accel, accel_ok = self._acceleration(fun, unravel, x, h, args, factor, diag)
            step = h + 0.5 * accel
            ok = ok & accel_ok
            n_evals = 2
        trial = x + step

        r_new, cost_new, jac_new = self._linearise(fun, unravel, trial, args)
        model_new = _linalg.compress(method, jac_new, r_new)
        finite_new = jnp.isfinite(cost_new) & jnp.all(jnp.isfinite(r_new)) & jnp.all(jnp.isfinite(jac_new))

        model_part = 0.5 * _linalg.curvature(method, model, h)
        damping_part = mu * jnp.sum(diag * h * h)
        predicted = model_part + damping_part
        actual = cost - cost_new
        rho = actual / predicted
        accepted = ok & finite_new & (rho > _ACCEPT_RATIO)

        mu_new, nu_new = _damping.update_mu(self.update, accepted, rho, mu, state.nu)
        nd_new = _linalg.normal_diag(method, model_new)
        scale_new = jnp.where(accepted, _damping.update_scale(scale, nd_new), scale)
        model_sel = jax.tree_util.tree_map(lambda a, b: jnp.where(accepted, a, b), model_new, model)
        x_sel = jnp.where(accepted, trial, x)
        cost_sel = jnp.where(accepted, cost_new, cost)

        # Stopping tests, all relative (unit free).  An accepted step kept short by heavy
        # damping says nothing about convergence: ftol and xtol only count accepted steps
        # whose length the model, not μ, decided.  A rejected step counts as in MINPACK:
        # failing even at relative size xtol means no better point is within reach.
        undamped = damping_part <= model_part
        sqrt_s = jnp.sqrt(scale)
        step_norm = jnp.linalg.norm(sqrt_s * step)
        x_norm = jnp.linalg.norm(sqrt_s * x_sel)
        ftol_met = (
            (jnp.abs(actual) <= ftol * cost)
            & (predicted <= ftol * cost)
            & (rho <= 2)
            & (undamped | ~accepted)
        )
        xtol_met = (undamped | ~accepted) & (step_norm <= xtol * x_norm)
        gtol_met = accepted & self._gtol_met(model_new, r_new, gtol)
        stuck = ~accepted & ((step_norm <= eps * x_norm) | ~jnp.isfinite(mu_new))
        n_steps = state.n_steps + 1

        status = jnp.where(n_steps >= self.max_steps, Status.MAX_STEPS, Status.RUNNING)
        status = jnp.where(stuck, Status.NO_PROGRESS, status)
        status = jnp.where(gtol_met, Status.CONVERGED_GTOL, status)
        status = jnp.where(xtol_met, Status.CONVERGED_XTOL, status)
        status = jnp.where(ftol_met, Status.CONVERGED_FTOL, status)

        new = LMState(
            params=unravel(x_sel),
            cost=cost_sel,
            mu=mu_new,
            nu=nu_new,
            scale=scale_new,
            model=model_sel,
            n_steps=n_steps,
            n_fev=state.n_fev + n_evals,
            status=status.astype(jnp.int32),
        )
        running = state.status == Status.RUNNING
        return jax.tree_util.tree_map(lambda a, b: jnp.where(running, a, b), new, state)

    def _acceleration(self, fun, unravel, x, h, args, factor, diag):
        """Geodesic acceleration a: ``(A + μD) a = −Jᵀ r''[h, h]`` (Transtrum & Sethna 2012).

        ``r''[h, h]``, the second directional derivative of the residual along the
        velocity h, comes from two nested JVPs; ``Jᵀ(·)`` from one VJP; the solve reuses
        the step's factorisation of ``A + μD``.
        """
        dtype = x.dtype

        def flat_fun(z):
            return evaluate(fun, unravel(z), *args)[0].astype(dtype)

        def directional(z):
            return jax.jvp(flat_fun, (z,), (h,))[1]

        r_vv = jax.jvp(directional, (x,), (h,))[1]
        _, vjp = jax.vjp(flat_fun, x)
        (jt_rvv,) = vjp(r_vv)
        accel, ok = _linalg.damped_solve(self.linear_solver, factor, -jt_rvv)
        sqrt_d = jnp.sqrt(diag)
        small = 2 * jnp.linalg.norm(sqrt_d * accel) <= self.geodesic_alpha * jnp.linalg.norm(sqrt_d * h)
        return jnp.where(ok, accel, 0), ok & small

    def run(self, fun: Callable, x0, *args) -> LMState:
        """``init`` then ``step`` in a ``lax.while_loop`` until every member has stopped."""
        state = self.init(fun, x0, *args)
        return jax.lax.while_loop(
            lambda s: s.status == Status.RUNNING, lambda s: self.step(fun, s, *args), state
        )


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
