"""Models written with numpy (or with Python control flow on their inputs): evaluated on
the host, with scipy's finite-difference Jacobian or the caller's ``jac``.

Most scipy code cannot be traced by JAX.  Rather than refuse it, :func:`fit` notices
(one abstract trace, before anything compiles) and wraps ``f`` in a :class:`HostModel`:
``f`` runs through :func:`jax.pure_callback` (once per fit of a batch and per step), and
its derivative in the parameters is the callback's Jacobian, attached as a
``custom_jvp`` so that the solver, the bound transforms, the weights and ``pcov`` use it
as they use JAX's.  Second derivatives do not exist for such a model: the fit runs
without geodesic acceleration, and differentiating a fit's result raises a TypeError
that says so.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from jaxlm import _check, _programs

_UNTRACEABLE = (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,  # includes bool() of a tracer: `if x > 0:`
    jax.errors.TracerIntegerConversionError,
)
NOT_DIFFERENTIABLE = (
    "a fit of a numpy model cannot be differentiated (f has no JAX derivatives, in xdata or "
    "of second order): write f with jax.numpy"
)
HOST_WARNING = (
    "f cannot be traced by JAX ({reason}); it is evaluated on the host, one fit at a "
    "time, with a finite-difference Jacobian as in scipy (or your jac), and without "
    "geodesic acceleration.  Written with jax.numpy, f is differentiated exactly and "
    "fitted much faster."
)


def untraceable(fn, x, n: int, dtype) -> str | None:
    """Why ``fn`` cannot be traced (the JAX error's first line), or None if it can (or
    if it fails for another reason, which the usual checks then report).  Tried with
    ``x`` as given and, for a batch of x, with one member's."""
    shapes = [np.shape(x)] + ([np.shape(x)[1:]] if np.ndim(x) > 1 else [])
    for shape in shapes:
        try:
            _programs.eval_shape(
                fn, jax.ShapeDtypeStruct(shape, dtype), *[jax.ShapeDtypeStruct((), dtype)] * n
            )
            return None
        except _UNTRACEABLE as err:
            return type(err).__name__
        except Exception:  # noqa: BLE001 - a shape error: try the other reading of x
            continue
    return None


def warn_host(reason: str) -> None:
    warnings.warn(HOST_WARNING.format(reason=reason), UserWarning, stacklevel=_check.caller_stacklevel())


@dataclasses.dataclass(frozen=True)
class HostModel:
    """``f(x, *p)`` computed by numpy on the host; its Jacobian in ``p`` is ``jac(x, *p)``
    (scipy's meaning) or scipy's forward difference.  Hashable: part of the fit's jit key."""

    f: Callable
    jac: Callable | None = None

    def __call__(self, x, *p):
        dtype = jnp.result_type(x, *p)
        n = len(p)
        shape = _output_shape(self.f, tuple(np.shape(x)), n, np.dtype(dtype).name)
        f, jac = self.f, self.jac

        def host_f(x, *p):
            return _call(f, x, p, dtype).reshape(shape)

        def host_jac(x, y, *p):
            if jac is not None:
                return np.asarray(jac(np.asarray(x), *_scalars(p)), dtype).reshape(-1, n)
            return forward_difference(f, np.asarray(x), np.asarray(y), np.asarray(p, dtype), dtype)

        @jax.custom_jvp
        def model(x, *p):
            return on_host(host_f, shape, dtype, x, *p)

        @jax.custom_jvp
        def jacobian(x, y, *p):
            return on_host(host_jac, (int(np.prod(shape, dtype=int)), n), dtype, x, y, *p)

        @jacobian.defjvp
        def _(primals, tangents):
            raise TypeError(NOT_DIFFERENTIABLE)

        def model_jvp(primals, tangents):
            x, *p = primals
            dx, *dp = tangents
            if not isinstance(dx, SymbolicZero):
                raise TypeError(NOT_DIFFERENTIABLE)
            y = model(x, *p)
            jmat = jacobian(x, y, *p)
            dp = [jnp.zeros((), dtype) if isinstance(d, SymbolicZero) else d for d in dp]
            return y, jnp.reshape(jmat @ jnp.stack(dp).astype(dtype), shape)

        model.defjvp(model_jvp, symbolic_zeros=True)
        return model(x, *p)


def on_host(fn, shape, dtype, *args):
    """``fn(*args)`` (numpy, shape ``shape``) by :func:`jax.pure_callback`, one batch
    member at a time.  float64 values travel both ways as pairs of uint32 words: on
    JAX's callback thread x64 is off unless the caller turned it on globally, and JAX
    narrows a callback's float64 arguments and results to float32 there, while a float64
    fit with x64 off runs x64 only in the caller's thread
    (:func:`._precision.data_precision`)."""
    if np.dtype(dtype) != np.float64:
        return jax.pure_callback(fn, jax.ShapeDtypeStruct(shape, dtype), *args, vmap_method="sequential")

    def on_words(*words):
        values = [np.ascontiguousarray(w).view(np.float64)[..., 0] for w in words]
        return np.ascontiguousarray(fn(*values), np.float64).view(np.uint32).reshape(shape + (2,))

    words = [jax.lax.bitcast_convert_type(jnp.asarray(a, jnp.float64), jnp.uint32) for a in args]
    spec = jax.ShapeDtypeStruct(shape + (2,), np.uint32)
    out = jax.pure_callback(on_words, spec, *words, vmap_method="sequential")
    return jax.lax.bitcast_convert_type(out, jnp.float64)


def _scalars(p):
    return [np.asarray(v)[()] for v in p]


def _call(f, x, p, dtype):
    """``f(x, *p)`` on numpy values, as scipy calls it (parameters as numpy scalars)."""
    out = np.asarray(f(np.asarray(x), *_scalars(p)))
    if np.iscomplexobj(out):
        raise TypeError(
            "f returns complex values; jaxlm fits real data and would drop the imaginary part: fit "
            "the real and imaginary parts as separate points"
        )
    return out.astype(dtype)


@functools.lru_cache(maxsize=256)
def _output_shape(f, x_shape, n, dtype):
    """The shape of ``f(x, *p)`` for x of this shape, from one host call at x = p = 1
    (shapes of curve models do not depend on the values); numpy's warnings about such a
    point are silenced."""
    with np.errstate(all="ignore"):
        return _call(f, np.ones(x_shape, dtype), [np.ones((), dtype)] * n, dtype).shape


def forward_difference(f, x, y, p, dtype):
    """scipy's ``'2-point'`` Jacobian: steps ``√eps·max(1, |p_j|)`` away from zero, the
    step taken as actually represented."""
    eps = np.finfo(dtype).eps
    step = np.sqrt(eps) * np.where(p >= 0, 1, -1) * np.maximum(1, np.abs(p))
    y = y.ravel()
    columns = []
    for j in range(p.size):
        q = p.copy()
        q[j] = p[j] + step[j]
        columns.append((_call(f, x, q, dtype).ravel() - y) / (q[j] - p[j]))
    return np.stack(columns, axis=1).astype(dtype)
