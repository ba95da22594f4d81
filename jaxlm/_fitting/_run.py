"""Running the fits: one curve (:func:`fit_one`, vmapped over the batch in one program) or
the batch through the driver (:func:`fit_driven`: compaction, chunks, devices, progress).

Both paths take the caller's arrays as a :class:`CurveData` with the batch flattened to
one axis and its ``in_axes`` as a ``CurveData`` of 0/None, and hand the solver a
:class:`CurveArgs` per curve.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxlm import _batch, _programs, _stream
from jaxlm._fitting._inputs import CurveData, Prepared
from jaxlm._fitting._objective import Config, FreeResidual
from jaxlm._fitting._result import CurveArgs, FitResult, finish_one
from jaxlm._fitting._transform import to_free
from jaxlm._least_squares import _solve


def flatten(cfg: Config, batch, data: CurveData) -> tuple[CurveData, CurveData]:
    """The per-curve inputs with the batch flattened to one axis, and their vmap axes."""
    size = math.prod(batch)
    m, n = data.y.shape[-1], data.p0.shape[-1]
    flat = lambda a, inner: jnp.reshape(a, (size,) + inner)  # noqa: E731
    mask_batched = data.mask is not None and data.mask.shape != (m,)
    sigma_batched = cfg.sigma_kind != "none" and cfg.sigma_batched
    per_fit = lambda flag: 0 if flag else None  # noqa: E731
    inputs = CurveData(
        x=flat(data.x, data.x.shape[len(batch) :]) if cfg.x_batched else data.x,
        y=flat(data.y, (m,)),
        p0=flat(data.p0, (n,)),
        sigma=flat(data.sigma, data.sigma.shape[len(batch) :]) if sigma_batched else data.sigma,
        mask=flat(data.mask, (m,)) if mask_batched else data.mask,
        lo=flat(data.lo, (n,)),
        hi=flat(data.hi, (n,)),
        fixed=flat(data.fixed, (n,)),
    )
    axes = CurveData(
        x=per_fit(cfg.x_batched),
        y=0,
        p0=0,
        sigma=per_fit(sigma_batched),
        mask=per_fit(mask_batched),
        lo=0,
        hi=0,
        fixed=0,
    )
    return inputs, axes


def args_axes(cfg: Config, axes: CurveData) -> CurveArgs:
    """Which of :func:`prepare_one`'s ``args`` differ per member (0) or are shared (None)."""
    mask_batched = axes.mask == 0
    per_fit = lambda flag: 0 if flag else None  # noqa: E731
    return CurveArgs(
        x=per_fit(cfg.x_batched or (cfg.masked and mask_batched)),
        y=0,
        sigma_term=None if cfg.sigma_kind == "none" else per_fit(cfg.sigma_batched or mask_batched),
        valid=per_fit(mask_batched),
        p0=0,
        lo=0,
        hi=0,
        fixed=0,
    )


def prepare_one(cfg: Config, data: CurveData) -> tuple[jax.Array, CurveArgs, jax.Array]:
    """Start ``u0``, the solver's ``args`` and the number of valid points of one curve."""
    x, y, p0, sigma, mask, lo, hi, fixed = data
    m = y.shape[0]
    valid = jnp.ones((m,), bool) if mask is None else mask
    if cfg.masked:  # masked points may hold NaN: keep them out of every derivative
        y = jnp.where(valid, y, 0)
        x = jnp.where(jnp.broadcast_to(valid, x.shape) | jnp.isfinite(x), x, 0)
    if cfg.sigma_kind == "std":
        sigma_term = 1 / jnp.where(valid, sigma, 1)
    elif cfg.sigma_kind == "cov":
        pair = valid[:, None] & valid[None, :]
        cov = jnp.where(pair, sigma, jnp.eye(m, dtype=y.dtype))
        sigma_term = jnp.linalg.cholesky(cov)
    else:
        sigma_term = None
    n_valid = jnp.sum(valid).astype(jnp.int32)
    return to_free(p0, lo, hi, cfg.transform), CurveArgs(x, y, sigma_term, valid, p0, lo, hi, fixed), n_valid


def fit_one(cfg: Config, data: CurveData) -> FitResult:
    u0, args, n_valid = prepare_one(cfg, data)
    sol = _solve(cfg.solver, FreeResidual(cfg), cfg.implicit_hessian, cfg.failed_grad, u0, tuple(args))
    return finish_one(cfg, sol.params, sol.cost, sol.status, sol.n_steps, sol.n_fev, args, n_valid)


@_programs.program(2, hot=True, alone=lambda cfg, batch: cfg.solver.one_problem)
def fit_batch(cfg: Config, batch, data: CurveData) -> FitResult:
    """The whole batch as one vmapped program (used under JAX transformations); a single
    curve (``batch == ()``) without vmap."""
    if batch == ():
        return fit_one(cfg, data)
    inputs, axes = flatten(cfg, batch, data)
    out = jax.vmap(lambda d: fit_one(cfg, d), in_axes=(axes,))(inputs)
    return jax.tree_util.tree_map(lambda a: jnp.reshape(a, batch + a.shape[1:]), out)


def fit_driven(cfg: Config, prep: Prepared, driver: _batch.Options) -> FitResult:
    """The batch through :mod:`jaxlm._batch`: compaction, chunks, devices, progress."""
    inputs, axes = flatten(cfg, prep.batch, prep.data)
    arg_axes = tuple(args_axes(cfg, axes))

    def prepare(merged):
        u0, args, n_valid = _prepare_batch(cfg, axes, arg_axes, CurveData(*merged))
        return u0, args, arg_axes, n_valid

    def finish(state, args, n_valid):
        return _finish_batch(cfg, arg_axes, state, args, n_valid)

    shaped = lambda out: jax.tree_util.tree_map(lambda a: a.reshape(prep.batch + a.shape[1:]), out)  # noqa: E731
    size = math.prod(prep.batch)
    try:
        out = _stream.solve_many(
            cfg.solver, FreeResidual(cfg), tuple(inputs), tuple(axes), size, driver, prepare, finish
        )
    except _stream.Interrupted as err:
        err.result = None if err.result is None else shaped(err.result)
        raise
    return shaped(out)


@_programs.program(3)
def _prepare_batch(cfg: Config, axes: CurveData, arg_axes, data: CurveData):
    prepare = lambda d: _as_tuple_args(prepare_one(cfg, d))  # noqa: E731
    return jax.vmap(prepare, in_axes=(axes,), out_axes=(0, arg_axes, 0))(data)


def _as_tuple_args(prepared):
    u0, args, n_valid = prepared
    return u0, tuple(args), n_valid


@_programs.program(2)
def _finish_batch(cfg: Config, arg_axes, state, args, n_valid):
    finish = lambda u, c, st, ns, nf, a, nv: finish_one(cfg, u, c, st, ns, nf, CurveArgs(*a), nv)  # noqa: E731
    return jax.vmap(finish, in_axes=(0, 0, 0, 0, 0, arg_axes, 0))(
        state.params, state.caller_cost(), state.status, state.n_steps, state.n_fev, args, n_valid
    )
