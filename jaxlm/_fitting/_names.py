"""Parameter names: from the model, else from ``f``'s signature, else ``p0, p1, …``; and
``p0``, ``bounds`` and ``fixed`` given by name, put in parameter order."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm._fitting._host import HostModel
from jaxlm._fitting._objective import ModelWithJacobian


def n_params(fn, model, p0):
    if p0 is not None and not isinstance(p0, Mapping):
        shape = np.shape(p0)
        if len(shape) == 0:
            return 1
        return shape[-1]
    if model is not None:
        return model.n_params
    try:
        sig = inspect.signature(_unwrap(fn))
    except (TypeError, ValueError):
        raise ValueError("p0: cannot determine the number of parameters of f; pass p0") from None
    params = list(sig.parameters.values())
    if any(p.kind == p.VAR_POSITIONAL for p in params) or len(params) < 2:
        raise ValueError(
            "p0: cannot determine the number of parameters of f from its signature; pass p0 as an "
            "array (parameters given by name need a Model or an f with named parameters)"
        )
    return len(params) - 1


def _unwrap(fn):
    return fn.f if isinstance(fn, ModelWithJacobian | HostModel) else fn


def param_names(f, model, n: int) -> tuple[str, ...]:
    """The names of a fit's ``n`` parameters: the model's, else those of ``f``'s signature
    after x, else ``p0, p1, …`` (``f(x, *params)``)."""
    if model is not None and len(model.param_names) == n:
        return tuple(model.param_names)
    try:
        params = list(inspect.signature(_unwrap(f)).parameters.values())[1:]
    except (TypeError, ValueError):
        params = []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(params) == n and all(p.kind in kinds for p in params):
        return tuple(p.name for p in params)
    return tuple(f"p{i}" for i in range(n))


def read_names(fn, model, p0, bounds, fixed):
    """``p0``, ``bounds`` and ``fixed`` given by parameter name, in parameter order:
    ``p0={"center": 3.0}`` (the other parameters from the guess or the default start,
    kept as a dict, checked, until the guess is known: :func:`_read_p0`), ``bounds={"sigma": (0, inf)}``,
    ``fixed={"offset": True}`` or ``fixed=["offset"]``.  Values may be scalars or arrays
    with the batch shape.  Anything else passes through."""
    named_fixed = isinstance(fixed, Mapping) or (
        isinstance(fixed, list | tuple | set | frozenset)
        and len(fixed) > 0
        and all(isinstance(k, str) for k in fixed)
    )
    if not (isinstance(p0, Mapping) or isinstance(bounds, Mapping) or named_fixed):
        return p0, bounds, fixed
    names = param_names(fn, model, n_params(fn, model, None))
    index = {name: i for i, name in enumerate(names)}

    def position(what, key):
        if key not in index:
            raise ValueError(f"{what}: unknown parameter {key!r}; the parameters are {list(names)}")
        return index[key]

    if isinstance(p0, Mapping):
        for k in p0:
            position("p0", k)
    if isinstance(bounds, Mapping):
        lo, hi = [-np.inf] * len(names), [np.inf] * len(names)
        for k, pair in bounds.items():
            i = position("bounds", k)
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise ValueError(f"bounds[{k!r}] must be a pair (lower, upper), got {pair!r}")
            lo[i], hi[i] = pair
        bounds = (_by_position(lo), _by_position(hi))
    if named_fixed:
        items = fixed.items() if isinstance(fixed, Mapping) else ((k, True) for k in fixed)
        flags: list = [False] * len(names)
        for k, v in items:
            flags[position("fixed", k)] = v
        fixed = _by_position(flags)
    return p0, bounds, fixed


def _by_position(values: list):
    """One value per parameter (scalars, or arrays with the batch shape) as ``(..., n)``."""
    xp = jnp if any(isinstance(v, jax.Array) for v in values) else np
    return xp.stack(xp.broadcast_arrays(*[xp.asarray(v) for v in values]), -1)
