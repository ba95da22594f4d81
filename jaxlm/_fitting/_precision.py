"""The caller's values as numbers, and the precision a fit works in: the widest float
dtype of the data, float64 data fitted in float64 whether or not JAX's x64 is on (as
scipy does), without touching the caller's configuration."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(value) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value))


def numeric(name, value):
    """``value`` as an array of real numbers (not yet converted), or a TypeError naming it."""
    if not isinstance(value, jax.Array | np.ndarray):
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as err:  # ragged nesting, unconvertible objects
            raise TypeError(f"{name} must be a rectangular array of numbers: {err}") from None
    dtype = value.dtype
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {dtype} (the imaginary part would be lost)")
    if not (jnp.issubdtype(dtype, jnp.number) or dtype == np.bool_):
        raise TypeError(f"{name} must hold numbers, got dtype {dtype}")
    return value


def float_dtype(**values):
    """The working precision: the widest float dtype of the inputs (JAX's default float
    for integer data); half precision is refused, naming the argument."""
    dtypes = {}
    for key, value in list(values.items()):
        if isinstance(value, Mapping):  # p0 by name: each value
            del values[key]
            values.update({f"{key}[{k!r}]": v for k, v in value.items()})
    for name, v in values.items():
        if v is not None:
            dtype = numeric(name, v).dtype
            if jnp.issubdtype(dtype, jnp.floating):
                if jnp.finfo(dtype).bits < 32:
                    raise TypeError(
                        f"{name} has dtype {dtype}: jaxlm fits in float32 or float64 (half precision cannot "
                        "resolve a fit's steps); convert it with .astype(numpy.float32)"
                    )
                dtypes[name] = dtype
    if not dtypes:
        return jnp.result_type(float)
    # the wider one, by numpy's rule: JAX's depends on the caller's promotion mode
    # (its strict mode refuses to combine float32 and float64 at all)
    return jax.dtypes.canonicalize_dtype(np.result_type(*dtypes.values()))


@contextlib.contextmanager
def data_precision(xdata, ydata, p0):
    """Fit float64 data in float64 whether or not the caller enabled JAX's x64, as scipy
    does, without touching the caller's configuration.

    The working dtype is :func:`float_dtype` of the data as x64 would see them (numpy
    float64 arrays, Python floats and integers are float64; float32 stays float32).
    When that is float64 and x64 is off, the block runs under ``jax.enable_x64(True)``
    (a thread-local scope, not the global flag) and the context yields a function that
    turns the results into numpy arrays, which keep their float64 outside the scope (JAX
    arrays would be narrowed by the next operation on them); otherwise it yields the
    identity.  Traced inputs (under jit, vmap, grad) keep the trace's precision."""
    values = {"xdata": xdata, "ydata": ydata, "p0": p0}
    if jax.config.jax_enable_x64 or not is_concrete(values):
        yield _unchanged
        return
    with jax.enable_x64(True):
        wide = float_dtype(**values) == jnp.float64
        if wide:
            yield _on_host
            return
    yield _unchanged


def follows_data_precision(api):
    """``api`` (a function with ``xdata``, ``ydata`` and ``p0`` arguments) run under
    :func:`data_precision` of its data."""
    signature = inspect.signature(api)

    @functools.wraps(api)
    def wrapper(*args, **kwargs):
        try:
            given = signature.bind(*args, **kwargs).arguments
        except TypeError:
            return api(*args, **kwargs)  # Python's own error for the call
        with data_precision(given.get("xdata"), given.get("ydata"), given.get("p0")) as finish:
            return finish(api(*args, **kwargs))

    return wrapper


def _unchanged(tree):
    return tree


def _on_host(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a) if isinstance(a, jax.Array) else a, tree)
