"""The residual of one curve: the model, the weights (σ or a covariance), a mask, a robust
loss or the Poisson deviance, in the model's parameters or in the free variables."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxlm._fitting._transform import Transform, to_params
from jaxlm._residual import Objective
from jaxlm._solver import LevenbergMarquardt

LOSSES = ("linear", "soft_l1", "huber", "cauchy", "arctan")
ESTIMATORS = ("lse", "poisson")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything static about a fit (hashable: the jit cache key besides shapes)."""

    f: Callable
    estimator: str
    loss: str
    f_scale: float
    sigma_kind: str  # "none", "std", "cov"
    sigma_batched: bool
    absolute_sigma: bool
    x_batched: bool
    masked: bool
    transform: Transform | None  # static bounds and fixed (shared by every fit), or None
    solver: LevenbergMarquardt
    implicit_hessian: str
    failed_grad: str


@dataclasses.dataclass(frozen=True)
class ModelWithJacobian:
    """``f(x, *p)`` whose derivative in ``p`` is the caller's ``jac(x, *p) -> (m, n)``
    (scipy's ``curve_fit(jac=...)``); the derivative in ``x`` stays JAX's.  Attached as a
    ``custom_jvp``, so every use of the model's derivative — the solver's Jacobian in the
    free variables (through bounds and weights), geodesic acceleration, pcov, implicit
    gradients — goes through ``jac``.  Hashable: the fit's jit key."""

    f: Callable
    jac: Callable

    def __call__(self, x, *p):
        f, jac = self.f, self.jac

        @jax.custom_jvp
        def model(x, *p):
            return f(x, *p)

        def model_jvp(primals, tangents):
            x, *p = primals
            dx, *dp = tangents
            if isinstance(dx, jax.custom_derivatives.SymbolicZero):  # the usual case: no x tangent
                y = jnp.asarray(f(x, *p))
                dy = jnp.zeros_like(y)
            else:
                y, dy = jax.jvp(lambda x: jnp.asarray(f(x, *p)), (x,), (dx,))
            dp = [
                jnp.zeros((), y.dtype) if isinstance(d, jax.custom_derivatives.SymbolicZero) else d
                for d in dp
            ]
            jmat = jnp.reshape(jnp.asarray(jac(x, *p)), (-1, len(p))).astype(y.dtype)
            return y, dy + jnp.reshape(jmat @ jnp.stack(dp).astype(y.dtype), jnp.shape(y))

        model.defjvp(model_jvp, symbolic_zeros=True)

        return model(x, *p)


def _robust(loss, z):
    """ρ(z), ρ'(z), ρ''(z) of scipy's losses at z = (r/f_scale)² (safe in every branch)."""
    if loss == "soft_l1":
        t = 1 + z
        # 2(√t − 1) without the cancellation near z = 0 (which left a noise floor of ~eps
        # per point in the cost, so a zero-residual fit could never meet ftol)
        return z / ((jnp.sqrt(t) + 1) / 2), 1 / jnp.sqrt(t), -0.5 * t**-1.5
    if loss == "huber":
        big = z > 1
        zs = jnp.where(big, z, 1)
        return (
            jnp.where(big, 2 * jnp.sqrt(zs) - 1, z),
            jnp.where(big, 1 / jnp.sqrt(zs), 1),
            jnp.where(big, -0.5 * zs**-1.5, 0),
        )
    if loss == "cauchy":
        t = 1 + z
        return jnp.log1p(z), 1 / t, -1 / t**2
    if loss == "arctan":
        t = 1 + z * z
        return jnp.arctan(z), 1 / t, -2 * z / t**2
    raise ValueError(loss)


def _whiten(sigma_kind, raw, sigma_term):
    """Weighted residual: raw·(1/σ) or L⁻¹·raw."""
    if sigma_kind == "std":
        return raw * sigma_term
    if sigma_kind == "cov":
        return jax.scipy.linalg.solve_triangular(sigma_term, raw, lower=True)
    return raw


def objective(cfg: Config, p, x, y, sigma_term, valid):
    """The residual (or :class:`Objective`) of one curve as a function of the model's p."""
    model = cfg.f(x, *[p[i] for i in range(p.shape[0])])
    model = jnp.asarray(model).astype(y.dtype)
    if cfg.estimator == "poisson":
        eps = jnp.finfo(y.dtype).eps
        bad = jnp.any(valid & ((model < 0) | ((model == 0) & (y > 0))))
        mu_safe = jnp.where(valid & (model > 0), model, 1)
        y_safe = jnp.where(valid, y, 0)
        # μ − y + y log(y/μ) as d − y log1p(d/y) with d = μ − y (μ where y = 0): the
        # rounding error is eps·|d| instead of eps·y, so the deviance is accurate near its
        # minimum (float32 counts of 10⁶ would otherwise carry a noise of ~0.1 per point)
        d = mu_safe - y_safe
        y_pos = y_safe > 0
        terms = jnp.where(y_pos, d - y_safe * jnp.log1p(d / jnp.where(y_pos, y_safe, 1)), mu_safe)
        terms = jnp.where(valid, terms, 0)
        terms = jnp.where(valid & (model == 0), 0, terms)  # μ = 0 = y: no contribution
        cost = jnp.where(bad, jnp.inf, jnp.sum(terms))
        floor = eps * jnp.max(jnp.where(valid, jnp.abs(model), 0)) + jnp.finfo(y.dtype).tiny
        weight = jax.lax.stop_gradient(1 / jnp.sqrt(jnp.maximum(jnp.where(valid, model, 1), floor)))
        r = jnp.where(valid, (model - y_safe) * weight, 0)
        return Objective(residual=r, cost=cost)
    raw = jnp.where(valid, model - y, 0)
    r = _whiten(cfg.sigma_kind, raw, sigma_term)
    if cfg.sigma_kind == "std":
        r = jnp.where(valid, r, 0)
    if cfg.loss == "linear":
        return r
    fs = jnp.asarray(cfg.f_scale, r.dtype)
    z = (r / fs) ** 2
    rho0, rho1, rho2 = _robust(cfg.loss, z)
    cost = 0.5 * fs**2 * jnp.sum(rho0)
    rho2 = rho2 / fs**2
    eps = jnp.finfo(r.dtype).eps
    rs = jax.lax.stop_gradient(r)
    j_scale = jax.lax.stop_gradient(jnp.sqrt(jnp.maximum(rho1 + 2 * rho2 * rs**2, eps)))
    # value r·ρ'/J_scale (scipy's rescaled residual), derivative J_scale·J
    shift = jax.lax.stop_gradient(rs * (jax.lax.stop_gradient(rho1) / j_scale - j_scale))
    return Objective(residual=j_scale * r + shift, cost=cost)


@dataclasses.dataclass(frozen=True)
class FreeResidual:
    """The residual of one curve in the free variables u (hashable: a jit cache key)."""

    cfg: Config

    def __call__(self, u, x, y, sigma_term, valid, p0, lo, hi, fixed):
        p = to_params(u, p0, lo, hi, fixed, self.cfg.transform)
        return objective(self.cfg, p, x, y, sigma_term, valid)


def weighted_residuals(fn, xdata, ydata, popt, sigma):
    """scipy's ``infodict['fvec']`` of a single fit: (f − y)/σ or L⁻¹(f − y) at the solution."""
    if popt.ndim != 1:
        return None
    x, y = jnp.asarray(xdata), jnp.asarray(ydata)
    r = jnp.asarray(fn(x, *[popt[i] for i in range(popt.shape[0])])) - y
    if sigma is None:
        return r
    s = jnp.asarray(sigma)
    if s.ndim <= 1:
        return _whiten("std", r, 1 / s)
    return _whiten("cov", r, jnp.linalg.cholesky(s))
