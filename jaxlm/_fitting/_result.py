"""What a fit returns: :class:`FitResult`, with scipy's covariance rule, χ², dof and the
fit layer's statuses, and scipy's warning when a covariance cannot be estimated."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm._fitting._covariance import covariance
from jaxlm._fitting._objective import Config, objective
from jaxlm._fitting._transform import to_params
from jaxlm._solver import Objective
from jaxlm._status import Status, is_success


class FitResult(NamedTuple):
    """Result of :func:`fit`; a pytree whose fields carry the batch shape of the data.

    Attributes:
      params: best-fit parameters ``(..., n)``.
      pcov: covariance of the parameters ``(..., n, n)`` (scipy's ``pcov``).
      perr: one-standard-deviation errors ``sqrt(diag(pcov))``.
      chi2: ``Σ r²`` of the weighted residuals (for a robust loss twice its cost, as
        scipy; for ``estimator="poisson"`` the deviance).
      dof: points used minus parameters fitted (int32).
      cost: the objective at the solution (½χ² for least squares).
      status: :class:`jaxlm.Status` codes (int32).
      success: ``status`` is one of the ``CONVERGED_*`` codes.
      n_steps, n_fev: LM steps and function evaluations.
    """

    params: jax.Array
    pcov: jax.Array
    perr: jax.Array
    chi2: jax.Array
    dof: jax.Array
    cost: jax.Array
    status: jax.Array
    success: jax.Array
    n_steps: jax.Array
    n_fev: jax.Array


class CurveArgs(NamedTuple):
    """The solver's extra arguments for one curve (what :class:`FreeResidual` reads)."""

    x: jax.Array
    y: jax.Array
    sigma_term: jax.Array | None  # 1/σ per point, or the Cholesky factor of the covariance
    valid: jax.Array  # the points that count (mask, NaN policy)
    p0: jax.Array
    lo: jax.Array
    hi: jax.Array
    fixed: jax.Array


def finish_one(cfg: Config, u, cost, status, n_steps, n_fev, args: CurveArgs, n_valid) -> FitResult:
    """Parameters, covariance, χ², dof and the fit-layer statuses of one solved curve."""
    x, y, sigma_term, valid, p0, lo, hi, fixed = args
    dtype = y.dtype
    n = p0.shape[0]
    params = to_params(u, p0, lo, hi, fixed)

    # covariance from the model's Jacobian in p at the solution
    def r_of_p(p):
        out = objective(cfg, p, x, y, sigma_term, valid)
        return out.residual if isinstance(out, Objective) else out

    jac = jax.jacfwd(r_of_p)(params)
    jac = jnp.where(fixed[None, :], 0, jac)
    chi2 = 2 * cost
    n_free = n - jnp.sum(fixed).astype(jnp.int32)
    dof = n_valid - n_free
    pcov = covariance(jac, fixed)
    free_pair = ~(fixed[:, None] | fixed[None, :])
    if cfg.estimator == "lse" and not cfg.absolute_sigma:
        # scipy: without dof the scale χ²/dof is unknown, and every entry is +inf
        s_sq = chi2 / jnp.maximum(dof, 1).astype(dtype)
        pcov = jnp.where(free_pair, jnp.where(dof > 0, pcov * s_sq, jnp.inf), pcov)
    pcov = jnp.where(free_pair & (dof < 0), jnp.inf, pcov)  # more free parameters than points
    perr = jnp.sqrt(jnp.diagonal(pcov))

    if cfg.estimator == "poisson":
        mu0 = jnp.asarray(cfg.f(x, *[p0[i] for i in range(n)])).astype(dtype)
        nonpositive = jnp.any(valid & ((mu0 < 0) | ((mu0 == 0) & (y > 0))))
        status = jnp.where((status == Status.NONFINITE) & nonpositive, Status.NONPOSITIVE_MODEL, status)
    no_data = n_valid == 0
    status = jnp.where(dof < 0, Status.UNDERDETERMINED, status)
    status = jnp.where(no_data, Status.NO_DATA, status).astype(jnp.int32)
    params = jnp.where(no_data, p0, params)
    return FitResult(
        params=params,
        pcov=pcov,
        perr=perr,
        chi2=chi2,
        dof=dof,
        cost=cost,
        status=status,
        success=is_success(status),
        n_steps=n_steps,
        n_fev=n_fev,
    )


def _covariance_warning():
    """scipy's ``OptimizeWarning`` when scipy is installed (filters written for scipy's
    ``curve_fit`` then apply), else a ``UserWarning``."""
    try:
        from scipy.optimize import OptimizeWarning
    except ImportError:  # pragma: no cover - scipy is optional
        return UserWarning
    return OptimizeWarning


def warn_if_no_covariance(res: FitResult) -> None:
    """As scipy: warn when a converged fit's ``pcov`` could not be estimated (it is
    ``inf``).  A member that did not converge says so in its status instead."""
    bad = sum(
        int(np.sum(ok & np.any(np.isinf(pcov), axis=(-2, -1))))
        for ok, pcov in zip(_host_parts(res.success), _host_parts(res.pcov), strict=True)
    )
    total = int(np.size(res.success))
    if bad:
        which = "" if total == 1 else f" for {bad} of {total} fits"
        warnings.warn(
            f"Covariance of the parameters could not be estimated{which} (no more points than free "
            "parameters, or parameters the data do not determine): pcov is inf",
            _covariance_warning(),
            stacklevel=4,  # warn_if_no_covariance, fit, its precision wrapper, the caller
        )


def _host_parts(a) -> list:
    """``a`` as numpy copies of the pieces held by this process's devices (replicas once,
    in device order, so that the parts of two arrays sharded alike correspond).  The check
    runs on the host: no new program runs on the result's devices just for a warning;
    copies to the host are what the driver itself makes of a result."""
    shards = getattr(a, "addressable_shards", None)
    if not shards or len(shards) == 1:
        return [np.asarray(a)]
    distinct = {repr(s.index): s for s in sorted(shards, key=lambda s: s.device.id, reverse=True)}
    return [np.asarray(s.data) for s in sorted(distinct.values(), key=lambda s: s.device.id)]
