"""Reading the caller's arrays for :func:`jaxlm.fit`: each argument checked and named in
its error (before anything is compiled), put in the working dtype and given its batch
reading (shared by the fits, or one per fit)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import _programs
from jaxlm._fitting._host import HostModel
from jaxlm._fitting._names import n_params, param_names
from jaxlm._fitting._objective import ModelWithJacobian
from jaxlm._fitting._precision import float_dtype, is_concrete, numeric
from jaxlm._fitting._transform import Transform
from jaxlm.models import Model
from jaxlm.models import get as get_model


class CurveData(NamedTuple):
    """The per-curve inputs of the computation (batch axes in front, or shared)."""

    x: Any
    y: Any
    p0: Any
    sigma: Any  # None, standard deviations or a covariance
    mask: Any  # None or boolean
    lo: Any
    hi: Any
    fixed: Any


class Prepared(NamedTuple):
    """The checked inputs of a fit and how to read them."""

    batch: tuple
    data: CurveData
    sigma_kind: str  # "none", "std", "cov"
    sigma_batched: bool
    x_batched: bool
    transform: Transform | None  # static bounds and fixed, when shared by every fit


def prepare(fn, model, xdata, ydata, p0, sigma, bounds, mask, fixed, options) -> Prepared:
    """Every array of a fit, checked; ``options`` holds ``nan_policy``, ``xdata_batched``,
    ``sigma_batched`` and ``estimator``."""
    dtype = float_dtype(ydata=ydata, p0=p0, xdata=xdata)
    y, x, n, x_batched = _read_data(fn, model, xdata, ydata, p0, options["xdata_batched"], dtype)
    batch, m = y.shape[:-1], y.shape[-1]
    lo, hi, shared_bounds = _read_bounds(bounds, n, batch, dtype)
    mask = _read_mask(mask, x, y, x_batched, options["nan_policy"])
    if options["estimator"] == "poisson" and is_concrete(y):
        yv = np.asarray(y)
        if np.any(yv[np.isfinite(yv)] < 0):
            raise ValueError("ydata: the Poisson estimator needs counts ≥ 0")
    p0 = _read_p0(p0, fn, model, x, y, mask, lo, hi, n, dtype)
    fixed_in = np.zeros((n,), bool) if fixed is None else fixed
    fixed = as_bool("fixed", fixed_in, [(n,), batch + (n,)])
    sigma, sigma_kind, sigma_batched = _read_sigma(sigma, m, batch, options["sigma_batched"], dtype)
    data = CurveData(x, y, p0, sigma, mask, lo, hi, fixed)
    transform = None
    if shared_bounds is not None and np.shape(fixed_in) == (n,) and is_concrete((shared_bounds, fixed_in)):
        transform = Transform.read(*shared_bounds, fixed_in)
    return Prepared(batch, data, sigma_kind, sigma_batched, x_batched, transform)


def _read_data(fn, model, xdata, ydata, p0, forced, dtype):
    """ydata, xdata (and whether it is per fit), the number of parameters."""
    y = as_float("ydata", ydata, dtype)
    if y.ndim == 0 or y.shape[-1] == 0:
        raise ValueError(f"ydata must have at least one point on its last axis, got shape {y.shape}")
    batch, m = y.shape[:-1], y.shape[-1]
    if xdata is None:
        raise ValueError("xdata must be given")
    x = as_float("xdata", xdata, dtype)
    n = n_params(fn, model, p0)
    if n == 0:
        raise ValueError("p0 must have at least one parameter")
    x_batched = read_x(fn, x, m, n, batch, forced, dtype)
    if x_batched and x.ndim < len(batch) + 1:
        raise ValueError(f"xdata {x.shape} is too short for {batch} fits of {m} points")
    one_x = x[(0,) * len(batch)] if x_batched else x
    if isinstance(fn, ModelWithJacobian):
        check_jacobian(fn.jac, one_x, m, n, dtype)
    if isinstance(fn, HostModel) and fn.jac is not None and is_concrete(one_x):
        check_host_jacobian(fn.jac, np.asarray(one_x), m, n)
    return y, x, n, x_batched


def _read_bounds(bounds, n, batch, dtype):
    """``(lo, hi, shared)``: the bounds broadcast to ``batch + (n,)``, and when both were
    given for all fits at once (scalars or ``(n,)``) the ``(n,)`` pair, else None."""
    lo, hi = (as_float("bounds", b, dtype) for b in bounds_pair(bounds))
    shared = None
    if lo.shape in ((), (n,)) and hi.shape in ((), (n,)):
        shared = tuple(broadcast(b, (n,)) for b in (lo, hi))
    if is_concrete((lo, hi)) and (np.any(np.isnan(np.asarray(lo))) or np.any(np.isnan(np.asarray(hi)))):
        raise ValueError("bounds must not hold NaN (use -inf/inf for a parameter without a bound)")
    lo = per_fit_shape("bounds (lower)", broadcast(lo, (n,)) if lo.ndim == 0 else lo, (n,), batch)
    hi = per_fit_shape("bounds (upper)", broadcast(hi, (n,)) if hi.ndim == 0 else hi, (n,), batch)
    if is_concrete((lo, hi)) and np.any(np.asarray(lo) >= np.asarray(hi)):
        raise ValueError("bounds: each lower bound must be strictly less than its upper bound")
    return lo, hi, shared


def _read_mask(mask, x, y, x_batched, nan_policy):
    """The mask, with the NaN policy applied (before the guess, which must ignore masked
    points)."""
    batch, m = y.shape[:-1], y.shape[-1]
    if mask is not None:
        mask = as_bool("mask", mask, [(m,), batch + (m,)])
    if nan_policy is None:
        return mask
    # a point is finite when all its coordinates are: reduce x over its non-batch,
    # non-point axes, giving (m,) for a shared x and batch + (m,) for one per fit
    first = len(batch) if x_batched else 0
    finite_x = jnp.all(jnp.isfinite(x), axis=tuple(range(first, x.ndim - 1)))
    finite = jnp.isfinite(y) & jnp.broadcast_to(finite_x, y.shape)
    if nan_policy == "raise" and is_concrete(finite) and not bool(np.all(np.asarray(finite))):
        raise ValueError("The input contains nan (NaN or inf in ydata/xdata, nan_policy='raise')")
    if nan_policy == "omit":
        # always the masked program, whether or not this batch holds a NaN: a member's
        # result must not depend on the other members' data
        mask = finite if mask is None else mask & finite
    return mask


def _read_p0(p0, fn, model, x, y, mask, lo, hi, n, dtype):
    """p0 as given, else the model's guess (built-in models) or scipy's default: ones, or
    the middle of finite bounds (one bound: one unit inside it); inside the bounds."""
    batch = y.shape[:-1]
    named = None
    if isinstance(p0, Mapping):
        index = {name: i for i, name in enumerate(param_names(fn, model, n))}
        named, p0 = {index[k]: (k, v) for k, v in p0.items()}, None
    if p0 is None and model is not None:
        p0 = _model_start(model, np.dtype(dtype), jnp.asarray(x), y, mask, lo, hi)
    elif p0 is None:
        p0 = _default_start(lo, hi)
    p0 = as_float("p0", p0, dtype)
    if named is not None:  # the named values over the guess or the default start
        p0 = broadcast(p0, batch + (n,))
        for i, (name, value) in named.items():
            value = per_fit_shape(f"p0[{name!r}]", as_float(f"p0[{name!r}]", value, dtype), (), batch)
            p0 = p0.at[..., i].set(value)
    if p0.ndim == 0:
        p0 = p0[None]
    if model is not None and p0.shape[-1] != model.n_params:
        raise ValueError(
            f"p0 has {p0.shape[-1]} parameters; model {model.name!r} has {model.n_params} "
            f"({', '.join(model.param_names)})"
        )
    if p0.shape not in ((n,), batch + (n,)):
        raise ValueError(
            f"p0 has shape {p0.shape}; expected ({n},) or the batch shape of ydata "
            f"{batch} followed by {n}: {batch + (n,)}"
        )
    p0 = broadcast(p0, batch + (n,))
    if is_concrete((p0, lo, hi)):
        p, l_, h_ = np.asarray(p0), np.asarray(lo), np.asarray(hi)
        outside = (p < l_) | (p > h_)
        if np.any(outside):
            raise ValueError(
                f"p0 is outside the bounds at {int(outside.sum())} parameter(s) (scipy: Initial guess is "
                "outside of provided bounds)"
            )
    return p0


# The starts are computed in one compiled program each: op by op, their few dozen small
# operations would each compile a program of their own on first use (~0.3 s of a first fit).
@_programs.program(2)
def _model_start(model: Model, dtype, x, y, mask, lo, hi):
    """The model's guess, masked points ignored, moved inside the bounds."""
    y = y if mask is None else jnp.where(mask, y, jnp.nan)
    return _inside(model.guess(x, y).astype(dtype), lo, hi)


@jax.jit
def _default_start(lo, hi):
    """scipy's default start: ones, or the middle of finite bounds (one bound: one unit
    inside it)."""
    has_lo, has_hi = jnp.isfinite(lo), jnp.isfinite(hi)
    middle = jnp.where(has_lo, lo + 1, jnp.where(has_hi, hi - 1, jnp.ones_like(lo)))
    return jnp.where(has_lo & has_hi, 0.5 * (lo + hi), middle)


def _inside(guess, lo, hi):
    """A model's guess moved inside the bounds where it is not (it is not the caller's p0,
    which must be inside): to 0.1 % of the interval from the bound it crosses, or for a
    one-sided bound 0.1 % of the larger of the crossing and the bound's size."""
    width = hi - lo
    finite = jnp.isfinite(width)
    up = jnp.where(finite, 1e-3 * width, 1e-3 * jnp.maximum(lo - guess, jnp.abs(lo)))
    down = jnp.where(finite, 1e-3 * width, 1e-3 * jnp.maximum(guess - hi, jnp.abs(hi)))
    guess = jnp.where(guess < lo, lo + up, guess)
    return jnp.where(guess > hi, hi - down, guess)


def _read_sigma(sigma, m, batch, forced, dtype):
    """``(sigma, kind, per fit?)``: standard deviations or a covariance, checked."""
    if sigma is None:
        return None, "none", False
    sigma = as_float("sigma", sigma, dtype)
    kind, per_fit = sigma_reading(sigma.shape, m, batch, forced)
    if kind == "std" and sigma.shape in ((), (1,)):
        sigma = broadcast(jnp.reshape(sigma, ()), (m,))
    if kind == "std" and is_concrete(sigma):
        s = np.asarray(sigma)
        if not np.all(s > 0) or not np.all(np.isfinite(s)):
            raise ValueError("sigma must be > 0 and finite at every point")
    if kind == "cov" and is_concrete(sigma):
        s = np.asarray(sigma, dtype=float)
        if not np.all(np.isfinite(s)):
            raise ValueError("sigma (a covariance matrix) must be finite")
        if not np.allclose(s, np.swapaxes(s, -1, -2)):
            raise ValueError("sigma (a covariance matrix) must be symmetric")
        try:
            np.linalg.cholesky(s)
        except np.linalg.LinAlgError:
            raise ValueError("sigma (a covariance matrix) must be positive definite") from None
    return sigma, kind, per_fit


def resolve_model(f):
    if isinstance(f, str):
        model = get_model(f)
        return model, model.fn
    if isinstance(f, Model):
        return f, f.fn
    if not callable(f):
        raise TypeError(f"f must be callable or the name of a built-in model, got {type(f).__name__}")
    return None, f


def as_float(name, value, dtype):
    arr = numeric(name, value)
    if isinstance(arr, np.ndarray):  # converted on the host: nothing to compile for a new shape
        out = jax.device_put(arr.astype(np.dtype(dtype), copy=False))
    else:
        out = jnp.asarray(arr).astype(dtype)
    if isinstance(arr, np.ndarray) and arr.dtype != np.bool_ and arr.dtype.itemsize > out.dtype.itemsize:
        # host data narrowed (float64 → float32): a finite value must not become inf
        if np.any(np.isfinite(arr) & (np.abs(arr) > float(jnp.finfo(dtype).max))):
            raise ValueError(
                f"{name} holds values beyond the range of {np.dtype(dtype).name} (largest "
                f"{float(jnp.finfo(dtype).max):.3g}): they would become inf; fit in float64 or rescale"
            )
    return out


def as_bool(name, value, shapes):
    # host values stay on the host (numeric): jnp.asarray compiles a program per new shape
    arr = numeric(name, value)
    if arr.dtype != jnp.bool_:
        raise TypeError(f"{name} must be a boolean array, got dtype {arr.dtype}")
    if arr.shape not in shapes:
        raise ValueError(f"{name} has shape {arr.shape}; expected {' or '.join(map(str, shapes))}")
    out = broadcast(arr, shapes[-1])
    return jax.device_put(out) if isinstance(out, np.ndarray) else out


HOST_BROADCAST_MAX = 2**16
"""Up to this many elements a concrete array is broadcast on the host: each new shape of
an eager ``jnp.broadcast_to`` compiles a program (20-30 ms, a first ``curve_fit`` paid
two)."""


def broadcast(arr, shape):
    """``jnp.broadcast_to(arr, shape)``; on the host for a small concrete result."""
    if arr.shape == tuple(shape):
        return arr
    if math.prod(shape) <= HOST_BROADCAST_MAX and is_concrete(arr):
        return jax.device_put(np.broadcast_to(np.asarray(arr), shape))
    return jnp.broadcast_to(arr, shape)


def per_fit_shape(name, arr, inner, batch):
    """Broadcast a shared ``inner`` or a per-fit ``batch + inner`` array to batch + inner."""
    if arr.shape == inner:
        return broadcast(arr, batch + inner)
    if arr.shape == batch + inner:
        return arr
    want = f"{inner}" + (f" or {batch + inner}" if batch else "")
    raise ValueError(f"{name} has shape {arr.shape}; expected {want}")


def bounds_pair(bounds):
    """``(lower, upper)``: a pair, or an object with ``lb`` and ``ub`` such as
    ``scipy.optimize.Bounds`` (its ``keep_feasible`` is what the transforms do anyway:
    every iterate is inside)."""
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        return bounds.lb, bounds.ub
    if not (isinstance(bounds, tuple | list) and len(bounds) == 2):
        raise ValueError(
            "bounds must be a pair (lower, upper) of scalars or arrays, or a scipy.optimize.Bounds"
        )
    return bounds


def model_shape(fn, x, n, dtype):
    """Shape of ``f(x, *p)`` for ``x`` of this shape, or the exception that f raised."""
    try:
        out = _programs.eval_shape(
            fn, jax.ShapeDtypeStruct(x.shape, x.dtype), *[jax.ShapeDtypeStruct((), dtype)] * n
        )
    except jax.errors.TracerArrayConversionError as err:
        raise TypeError(
            f"f must be written with jax.numpy (it is traced and differentiated): {err}"
        ) from None
    except jax.errors.ConcretizationTypeError as err:
        raise TypeError(f"f must be traceable by JAX (no Python control flow on its inputs): {err}") from None
    except (TypeError, IndexError, ValueError) as err:
        return err
    if jnp.issubdtype(getattr(out, "dtype", jnp.float32), jnp.complexfloating):
        raise TypeError(
            f"f returns complex values (dtype {out.dtype}); jaxlm fits real data and would drop the "
            "imaginary part: fit the real and imaginary parts as separate points (e.g. "
            "jnp.concatenate([z.real, z.imag]))"
        )
    return tuple(getattr(out, "shape", ()))


def read_x(fn, x, m, n, batch, forced, dtype):
    """Decide whether x is shared or per fit (see :func:`fit`); check its length."""
    nb = len(batch)
    if x.ndim == 0 or x.shape[-1] != m:
        raise ValueError(
            f"xdata has shape {x.shape}: its last axis must have the {m} points of ydata (…, {m})"
        )
    candidates = []  # True: one x per fit, False: shared
    if forced is not False and nb and x.shape[:nb] == batch and x.ndim > nb:
        candidates.append(True)
    elif forced:
        raise ValueError(
            f"xdata_batched=True, but xdata {x.shape} does not start with the batch shape {batch}"
        )
    if forced is not True:
        candidates.append(False)
    shapes = {c: model_shape(fn, x[(0,) * nb] if c else x, n, dtype) for c in candidates}
    fits = [c for c in candidates if shapes[c] == (m,)]
    if len(fits) == 1:
        return fits[0]
    if len(fits) == 2:
        raise ValueError(
            f"xdata {x.shape} can be read as shared by the {batch} fits or as one x per fit, and f accepts "
            "both: pass xdata_batched=True or False"
        )
    outcome = shapes[candidates[-1]]
    if isinstance(outcome, Exception):
        raise ValueError(f"f(xdata, *p0) fails for xdata of shape {x.shape} and {n} parameters: {outcome}")
    raise ValueError(f"f(xdata, *p0) returns shape {outcome}; expected ({m},) to match ydata (…, {m})")


def sigma_reading(shape, m, batch, forced):
    """("std" | "cov", one per fit?) for a sigma of this shape (see :func:`fit`)."""
    readings = []  # (kind, per fit)
    if batch and shape == batch + (m,):
        readings.append(("std", True))
    if batch and shape == batch + (m, m):
        readings.append(("cov", True))
    if shape in ((), (1,), (m,)):
        readings.append(("std", False))
    if shape == (m, m):
        readings.append(("cov", False))
    if not readings:
        raise ValueError(
            f"sigma has shape {shape}; expected ({m},)"
            + (f" or {batch + (m,)}" if batch else "")
            + f" (standard deviations) or ({m}, {m})"
            + (f" or {batch + (m, m)}" if batch else "")
            + " (a covariance)"
        )
    if forced is not None:
        chosen = [r for r in readings if r[1] == forced]
        if not chosen:
            raise ValueError(
                f"sigma_batched={forced}, but sigma {shape} is "
                + ("shared by the fits" if forced else f"one per fit of the {batch} batch")
            )
        readings = chosen
    if len(readings) > 1:  # (m, m) for a batch of m fits of m points
        raise ValueError(
            f"sigma {shape} can be read as one standard deviation per point of each of the {m} fits or "
            "as one "
            f"({m}, {m}) covariance shared by them: pass sigma_batched=True (standard deviations per fit) or "
            "False (a shared covariance)"
        )
    return readings[0]


def check_host_jacobian(jac, x, m, n):
    """A numpy model's ``jac(x, *p)`` called once on the host (at p = 1): (m, n) real."""
    try:
        with np.errstate(all="ignore"):
            out = np.asarray(jac(x, *[np.float64(1.0)] * n))
    except Exception as err:  # noqa: BLE001 - reported with its argument's name
        raise TypeError(f"jac(xdata, *p) fails: {type(err).__name__}: {err}") from None
    if out.shape != (m, n) and not (n == 1 and out.shape == (m,)):
        raise ValueError(f"jac(xdata, *p0) returns shape {out.shape}; expected ({m}, {n}): one row per point")
    if np.iscomplexobj(out):
        raise TypeError(f"jac must return real values, got dtype {out.dtype}")


def check_jacobian(jac, x, m, n, dtype):
    """The caller's ``jac(x, *p)`` must give an (m, n) array (before anything compiles)."""
    try:
        out = jax.eval_shape(
            jac, jax.ShapeDtypeStruct(x.shape, x.dtype), *[jax.ShapeDtypeStruct((), dtype)] * n
        )
    except Exception as err:  # noqa: BLE001 - reported with its argument's name
        raise TypeError(f"jac(xdata, *p0) fails when traced by JAX: {type(err).__name__}: {err}") from None
    shape = tuple(getattr(out, "shape", ()))
    if shape != (m, n) and not (n == 1 and shape == (m,)):
        raise ValueError(f"jac(xdata, *p0) returns shape {shape}; expected ({m}, {n}): one row per point")
    if jnp.issubdtype(out.dtype, jnp.complexfloating):
        raise TypeError(f"jac must return real values, got dtype {out.dtype}")
