"""What a fit returns: :class:`FitResult`, with scipy's covariance rule, χ², dof and the
fit layer's statuses, and scipy's warning when a covariance cannot be estimated."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import _check
from jaxlm._fitting import _report
from jaxlm._fitting._covariance import covariance, covariance_svd
from jaxlm._fitting._objective import Config, objective
from jaxlm._fitting._transform import to_params
from jaxlm._residual import Objective
from jaxlm._status import Status, is_success

_DATA_FIELDS = (
    "params",
    "pcov",
    "perr",
    "chi2",
    "dof",
    "cost",
    "status",
    "success",
    "n_steps",
    "n_fev",
    "n_points",
    "rsquared",
)


@functools.partial(jax.tree_util.register_dataclass, data_fields=_DATA_FIELDS, meta_fields=("param_names",))
@dataclasses.dataclass(frozen=True, repr=False)
class FitResult:
    """Result of :func:`fit`; a pytree whose array fields carry the batch shape of the data.

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
      n_points: data points used (not masked or omitted), int32.
      rsquared: ``1 − Σ(y − f)²/Σ(y − ȳ)²`` over the points used, unweighted (lmfit's R²).
      param_names: one name per parameter: the model's, or those of ``f``'s signature
        after x (``p0, p1, …`` when it has ``*params``).  Static (not a pytree leaf).

    Derived (as lmfit): :attr:`redchi`, :attr:`aic`, :attr:`bic`, :attr:`correl`;
    :meth:`report` and :meth:`summary` for people, :meth:`to_dict` / :meth:`to_dataframe`
    for tables (one row per fit).  ``result[i]`` is the i-th fit of a batch (any numpy
    index over the batch axes), itself a :class:`FitResult`.
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
    n_points: jax.Array
    rsquared: jax.Array
    param_names: tuple[str, ...] = ()

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.status.shape)

    @property
    def n_varys(self):
        """Parameters fitted (not fixed): ``n_points − dof``."""
        return self.n_points - self.dof

    @property
    def redchi(self):
        """Reduced χ²: ``chi2 / max(dof, 1)`` (lmfit's ``redchi``)."""
        xp = _xp(self.chi2)
        return self.chi2 / xp.maximum(self.dof, 1).astype(self.chi2.dtype)

    @property
    def aic(self):
        """Akaike's criterion ``N log(χ²/N) + 2 n_varys`` (lmfit's ``aic``)."""
        return self._neg2_log_likelihood() + 2 * self.n_varys.astype(self.chi2.dtype)

    @property
    def bic(self):
        """Bayesian criterion ``N log(χ²/N) + log(N) n_varys`` (lmfit's ``bic``)."""
        xp = _xp(self.chi2)
        n = self.n_points.astype(self.chi2.dtype)
        return self._neg2_log_likelihood() + xp.log(n) * self.n_varys.astype(self.chi2.dtype)

    @property
    def correl(self):
        """Correlation matrix of the parameters ``(..., n, n)`` (0 for a fixed one)."""
        xp = _xp(self.pcov)
        outer = self.perr[..., :, None] * self.perr[..., None, :]
        return xp.where(outer > 0, self.pcov / xp.where(outer > 0, outer, 1), 0)

    def _neg2_log_likelihood(self):
        xp = _xp(self.chi2)
        n = self.n_points.astype(self.chi2.dtype)
        chi2 = xp.maximum(self.chi2, xp.finfo(self.chi2.dtype).tiny * n)
        return n * xp.log(chi2 / n)

    def __getitem__(self, index) -> FitResult:
        if not isinstance(index, tuple):
            index = (index,)
        if len(index) > len(self.batch_shape) and Ellipsis not in index:
            raise IndexError(f"too many indices for a batch of shape {self.batch_shape}")
        return jax.tree_util.tree_map(lambda a: a[index], self)

    def __repr__(self) -> str:
        return _report.short(self)

    def report(self, min_correl: float = 0.1) -> str:
        """lmfit-style text: for one fit its statistics (status, points, χ², reduced χ²,
        AIC, BIC, R²), the parameters with errors and correlations above ``min_correl``;
        for a batch an overview (success rate, status counts, each parameter's and error's
        distribution over the converged fits)."""
        return _report.report(self, min_correl)

    def summary(self) -> dict:
        """The numbers of :meth:`report` as a dict of Python values."""
        return _report.summary(self)

    def to_dict(self) -> dict[str, np.ndarray]:
        """Columns of a table with one row per fit (the batch flattened in C order):
        each parameter and its error (``name``, ``name_err``), ``chi2``, ``redchi``,
        ``dof``, ``n_points``, ``aic``, ``bic``, ``rsquared``, ``status`` (names),
        ``success``, ``n_steps``, ``n_fev``."""
        return _report.columns(self)

    def to_dataframe(self):
        """:meth:`to_dict` as a ``pandas.DataFrame`` (needs pandas)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("to_dataframe needs pandas (pip install pandas); to_dict() does not") from None
        return pandas.DataFrame(self.to_dict())


def _xp(a):
    """numpy for host results (JAX would narrow float64 with x64 off), else jax.numpy."""
    return np if isinstance(a, np.ndarray | np.generic) else jnp


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
    params = to_params(u, p0, lo, hi, fixed, cfg.transform)
    # covariance from the model's Jacobian in p at the solution
    jac = jnp.where(fixed[None, :], 0, jax.jacfwd(lambda p: residual_of_p(cfg, p, args))(params))
    unscaled = (covariance_svd if cfg.solver.one_problem else covariance)(jac, fixed)
    pred = jnp.asarray(cfg.f(x, *[params[i] for i in range(n)]), dtype)
    y_mean = jnp.sum(jnp.where(valid, y, 0)) / jnp.maximum(n_valid, 1).astype(dtype)
    ss_res = jnp.sum(jnp.where(valid, (y - pred) ** 2, 0))
    ss_tot = jnp.sum(jnp.where(valid, (y - y_mean) ** 2, 0))
    nonpositive = nonpositive_start(cfg, args) if cfg.estimator == "poisson" else False
    return result(
        cfg, params, cost, status, n_steps, n_fev, args, n_valid, unscaled, ss_res, ss_tot, nonpositive
    )


def residual_of_p(cfg: Config, p, args: CurveArgs):
    """The weighted residual of a curve (or of a block of its points) in the model's p."""
    out = objective(cfg, p, args.x, args.y, args.sigma_term, args.valid)
    return out.residual if isinstance(out, Objective) else out


def nonpositive_start(cfg: Config, args: CurveArgs):
    """Whether the Poisson model is negative at p0, or zero at a positive count, on a
    point that counts (why such a member is NONFINITE: ``Status.NONPOSITIVE_MODEL``)."""
    x, y, _, valid, p0, *_ = args
    mu0 = jnp.asarray(cfg.f(x, *[p0[i] for i in range(p0.shape[0])])).astype(y.dtype)
    return jnp.any(valid & ((mu0 < 0) | ((mu0 == 0) & (y > 0))))


def result(
    cfg: Config,
    params,
    cost,
    status,
    n_steps,
    n_fev,
    args: CurveArgs,
    n_valid,
    unscaled,
    ss_res,
    ss_tot,
    nonpositive,
):
    """The :class:`FitResult` of one curve from its solution, ``(JᵀJ)⁻¹`` (``unscaled``) and
    the sums of squares of R²: scipy's covariance scaling, dof, the fit layer's statuses."""
    p0, fixed = args.p0, args.fixed
    dtype = args.y.dtype
    n = p0.shape[0]
    chi2 = 2 * cost
    n_free = n - jnp.sum(fixed).astype(jnp.int32)
    dof = n_valid - n_free
    pcov = unscaled
    free_pair = ~(fixed[:, None] | fixed[None, :])
    if cfg.estimator == "lse" and not cfg.absolute_sigma:
        # scipy: without dof the scale χ²/dof is unknown, and every entry is +inf
        s_sq = chi2 / jnp.maximum(dof, 1).astype(dtype)
        pcov = jnp.where(free_pair, jnp.where(dof > 0, pcov * s_sq, jnp.inf), pcov)
    pcov = jnp.where(free_pair & (dof < 0), jnp.inf, pcov)  # more free parameters than points
    perr = jnp.sqrt(jnp.diagonal(pcov))
    if cfg.estimator == "poisson":
        status = jnp.where((status == Status.NONFINITE) & nonpositive, Status.NONPOSITIVE_MODEL, status)
    rsquared = 1 - ss_res / jnp.maximum(ss_tot, jnp.finfo(dtype).tiny)
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
        n_points=n_valid,
        rsquared=jnp.where(no_data, jnp.nan, rsquared),
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
            stacklevel=_check.caller_stacklevel(),
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
