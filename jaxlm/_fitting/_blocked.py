"""One fit with very many points (10⁷–10⁸), in memory proportional to a block of them.

Above :data:`MIN_POINTS` points, a single fit's residual is a
:class:`jaxlm._blocks.Blocked` one: the data are cut into blocks of :data:`BLOCK`
points (the last block padded with masked points, which contribute exactly 0), and the
solver, the covariance and R² accumulate over the blocks with ``lax.scan``.  Nothing of
size m·n is ever formed: peak memory is the data plus ``O(BLOCK·n)``, where the unblocked
fit holds the m×n Jacobian and its temporaries (m = 10⁸, n = 3 in float64: several GB).

The covariance is that of :mod:`._covariance` with its triangular factor built by TSQR:
the column norms of J in a first pass, then ``R ← qr([R; J_b·S])`` block by block (each
factor backward stable, so the product is).  The answer agrees with the unblocked fit to
rounding (only the order of the sums over the points differs).  Selected for concrete
inputs only: under ``jit``/``grad`` (tracers) the fit is the ordinary one, so
differentiation is unaffected.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlm import _batch, _blocks, _programs
from jaxlm._fitting._covariance import equilibrated, equilibration, from_r, gram_schmidt_r
from jaxlm._fitting._inputs import CurveData
from jaxlm._fitting._objective import Config, FreeResidual
from jaxlm._fitting._result import CurveArgs, FitResult, nonpositive_start, residual_of_p, result
from jaxlm._fitting._run import prepare_one
from jaxlm._fitting._transform import to_params
from jaxlm._least_squares import _solve

MIN_POINTS = 2**21
"""A single fit with at least this many points (2·10⁶) is evaluated in blocks."""
BLOCK = 2**16
"""Points per block: large enough that a block's work dwarfs the loop's, small enough
that its Jacobian (BLOCK·n values) stays in the caches."""


def wanted(cfg: Config, batch, data: CurveData, concrete: bool) -> bool:
    """Whether a fit is done in blocks: one concrete curve of at least
    :data:`MIN_POINTS` points whose weights are per point (a covariance couples them)."""
    return concrete and batch == () and data.y.shape[-1] >= MIN_POINTS and cfg.sigma_kind != "cov"


def _blocks_of(a, pad, fill):
    """``a`` with its last (points) axis padded by ``pad`` points of value ``fill`` (an
    array broadcastable to the padding) and cut into blocks: ``(n_blocks, ..., BLOCK)``."""
    if pad:
        a = jnp.concatenate([a, jnp.broadcast_to(jnp.asarray(fill, a.dtype), a.shape[:-1] + (pad,))], axis=-1)
    a = jnp.reshape(a, a.shape[:-1] + (a.shape[-1] // BLOCK, BLOCK))
    return jnp.moveaxis(a, -2, 0)


@_programs.program(2)
def _blocked_args(cfg: Config, m: int, data: CurveData):
    """The start u0, the solver's args (the per-point ones in blocks) and the points used.
    Padding points are masked (they contribute exactly 0) and repeat the last x, a value
    the model accepts."""
    u0, args, n_valid = prepare_one(cfg, data)
    pad = -m % BLOCK
    blocked = args._replace(
        x=_blocks_of(args.x, pad, args.x[..., -1:]),
        y=_blocks_of(args.y, pad, 0),
        sigma_term=None if args.sigma_term is None else _blocks_of(args.sigma_term, pad, 1),
        valid=_blocks_of(args.valid, pad, False),
    )
    return u0, blocked, n_valid


AXES = CurveArgs(x=0, y=0, sigma_term=0, valid=0, p0=None, lo=None, hi=None, fixed=None)


def fit_blocked(cfg: Config, data: CurveData) -> FitResult:
    """One curve, block by block (module docstring)."""
    m = data.y.shape[-1]
    u0, args, n_valid = _blocked_args(cfg, m, data)
    axes = tuple(None if a is None else ax for a, ax in zip(args, AXES, strict=True))
    fun = _blocks.Blocked(FreeResidual(cfg), axes)
    sol = _solve(cfg.solver, fun, cfg.implicit_hessian, cfg.failed_grad, u0, tuple(args))
    return _finish(cfg, m, axes, sol.params, sol.cost, sol.status, sol.n_steps, sol.n_fev, args, n_valid)


@_programs.program(3)
def _finish(
    cfg: Config, m: int, axes, u, cost, status, n_steps, n_fev, args: CurveArgs, n_valid
) -> FitResult:
    """:func:`jaxlm._fitting._result.finish_one`, block by block."""
    n = args.p0.shape[0]
    dtype = args.y.dtype
    fixed = args.fixed
    params = to_params(u, args.p0, args.lo, args.hi, fixed, cfg.transform)
    blocks = _batch.batched(axes, tuple(args))

    def scan(body, init):
        return jax.lax.scan(
            lambda c, b: (body(c, CurveArgs(*_batch.merge(axes, b, tuple(args)))), None), init, blocks
        )[0]

    def jacobian(block):
        return jnp.where(fixed[None, :], 0, jax.jacfwd(lambda p: residual_of_p(cfg, p, block))(params))

    # the covariance: J's column norms, then its equilibrated R by TSQR
    norms2 = scan(lambda acc, b: acc + jnp.sum(jacobian(b) ** 2, axis=0), jnp.zeros((n,), dtype))
    scale = equilibration(norms2, fixed)
    stack = lambda r, b: gram_schmidt_r(jnp.concatenate([r, equilibrated(jacobian(b), scale, fixed)]), fixed)  # noqa: E731
    r = scan(stack, jnp.diag(fixed.astype(dtype)))
    unscaled = from_r(r, scale, fixed, max(m, n))

    # R² (over the points used) and the Poisson start check
    y_all, valid_all = jnp.ravel(args.y), jnp.ravel(args.valid)
    y_mean = jnp.sum(jnp.where(valid_all, y_all, 0)) / jnp.maximum(n_valid, 1).astype(dtype)
    ss_tot = jnp.sum(jnp.where(valid_all, (y_all - y_mean) ** 2, 0))

    def squares(acc, b):
        pred = jnp.asarray(cfg.f(b.x, *[params[i] for i in range(n)]), dtype)
        return acc + jnp.sum(jnp.where(b.valid, (b.y - pred) ** 2, 0))

    ss_res = scan(squares, jnp.zeros((), dtype))
    nonpositive = False
    if cfg.estimator == "poisson":
        nonpositive = scan(lambda acc, b: acc | nonpositive_start(cfg, b), jnp.asarray(False))
    return result(
        cfg, params, cost, status, n_steps, n_fev, args, n_valid, unscaled, ss_res, ss_tot, nonpositive
    )
