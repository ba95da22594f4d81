"""The :class:`Model` type, the registry, and NaN-aware batched helpers for guesses."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxlm import _programs


@dataclasses.dataclass(frozen=True)
class Model:
    """A fitting model: a pure function with parameter names and an initial guess.

    Call it like the function (``model(x, *params)``, scipy's ``f(x, *params)``
    convention) and pass it as ``f`` to :func:`jaxlm.fit` / :func:`jaxlm.curve_fit`;
    when ``p0`` is omitted the fit starts from ``model.guess(x, y)``.

    Attributes:
      name: registry name (``jaxlm.models.get(name)``, the CLI's ``--model``).
      fn: ``fn(x, *params) -> y`` with ``y.shape == x.shape[-1:]`` (jax.numpy only).
      param_names: one name per parameter, in order.
      guess_fn: ``guess_fn(x, y) -> (..., n)``: a starting point per curve, from the
        data alone.  ``y`` is ``(..., m)`` with NaN at points to ignore; ``x`` is the
        model's x, shared ``(m,)``/``(k, m)`` or per curve ``(..., m)``/``(..., k, m)``.
      x_dims: 1 for a 1-D abscissa ``(m,)``, 2 for points in the plane ``(2, m)``.
      formula: the model, for humans.
      prefix: set by :meth:`with_prefix`: the prefix of ``param_names``.

    Models compose: ``a + b`` and ``a * b`` are models whose parameters are the parts'
    parameters, prefixed with the part's name (see :mod:`jaxlm.models._compose`).  Two
    models are equal when their fields are (a model rebuilt from the same parts reuses
    the compiled fits).
    """

    name: str
    fn: Callable
    param_names: tuple[str, ...]
    guess_fn: Callable
    x_dims: int = 1
    formula: str = ""
    prefix: str = ""

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def __call__(self, x, *params):
        return self.fn(x, *params)

    def guess(self, x, y):
        """Vectorised starting point ``(..., n)`` for curves ``y (..., m)`` (NaN = ignore).

        One compiled program per model and shapes: run op by op, a guess's few dozen
        NaN-aware reductions would each compile a program of their own on first use
        (≈ 0.9 s of the first ``fit`` of 10⁴ Gaussians).
        """
        return _guess(self, jnp.asarray(x), jnp.asarray(y))

    def eval(self, x, params):
        """The model at ``params``: ``(n,)`` for one curve, ``(..., n)`` for one curve per
        row (a batch's ``result.params``), a :class:`jaxlm.FitResult`, or a dict by
        parameter name.  ``x`` is shared, or one per row.  Returns ``(m,)`` or ``(..., m)``."""
        from jaxlm.models._compose import evaluate

        params = getattr(params, "params", params)  # a FitResult
        if isinstance(params, dict):
            missing = [k for k in self.param_names if k not in params]
            unknown = [k for k in params if k not in self.param_names]
            if missing or unknown:
                raise ValueError(
                    f"params: {self.name!r} has parameters {list(self.param_names)}; "
                    f"missing {missing}, unknown {unknown}"
                )
            values = [jnp.asarray(params[k]) for k in self.param_names]
            params = jnp.stack(jnp.broadcast_arrays(*values), -1)
        return evaluate(self, x, params)

    def with_prefix(self, prefix: str) -> Model:
        """This model with its parameter names prefixed (``g1_center``); a composite keeps a
        prefixed part's names as they are."""
        if not isinstance(prefix, str) or not prefix.isidentifier():
            raise ValueError(f"prefix must be a string usable as an identifier, got {prefix!r}")
        names = tuple(prefix + name[len(self.prefix) :] for name in self.param_names)
        return dataclasses.replace(self, param_names=names, prefix=prefix)

    def __add__(self, other) -> Model:
        from jaxlm.models._compose import combine

        return combine("+", self, other)

    def __mul__(self, other) -> Model:
        from jaxlm.models._compose import combine

        return combine("*", self, other)

    def __repr__(self):
        return f"Model({self.name!r}: {self.formula})"


@_programs.program(1)
def _guess(model: Model, x, y):
    dtype = jnp.result_type(y.dtype, x.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    # one x per curve, explicitly (the helpers never rely on implicit rank promotion)
    lead = y.shape[:-1]
    x = jnp.broadcast_to(x, lead + x.shape[-model.x_dims :]) if x.ndim >= model.x_dims else x
    p = model.guess_fn(x.astype(dtype), y.astype(dtype))
    return jnp.asarray(p, dtype)


_REGISTRY: dict[str, Model] = {}


def register(model: Model) -> Model:
    _REGISTRY[model.name] = model
    return model


def names() -> list[str]:
    """Names of the built-in models."""
    return sorted(_REGISTRY)


def get(name: str) -> Model:
    """The built-in model called ``name``; ``ValueError`` listing the names otherwise."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; built-in models: {', '.join(names())}")
    return _REGISTRY[name]


# --------------------------------------------------------------------------- helpers
# All reduce over the last axis, ignore NaN (masked points), and broadcast x against y.


def fallback(value, default):
    """``value`` where it is finite, else ``default`` (degenerate or all-NaN curves)."""
    value = jnp.asarray(value)
    return jnp.where(jnp.isfinite(value), value, jnp.asarray(default, value.dtype))


def positive(value, default):
    value = jnp.asarray(value)
    return jnp.where(jnp.isfinite(value) & (value > 0), value, jnp.asarray(default, value.dtype))


def broadcast_x(x, y):
    return jnp.broadcast_to(x, y.shape)


def valid_x(x, y):
    """x with NaN where y is NaN (so x statistics ignore masked points)."""
    return jnp.where(jnp.isnan(y), jnp.nan, broadcast_x(x, y))


def at_max(x, y):
    """x at the largest y."""
    i = jnp.nanargmax(jnp.where(jnp.all(jnp.isnan(y), -1, keepdims=True), 0, y), axis=-1)
    return jnp.take_along_axis(broadcast_x(x, y), i[..., None], -1)[..., 0]


def x_span(x, y):
    xv = valid_x(x, y)
    return jnp.nanmax(xv, -1) - jnp.nanmin(xv, -1)


def spacing(x, y):
    """Mean spacing of the valid abscissae: span / (count − 1)."""
    count = jnp.sum(~jnp.isnan(y), -1).astype(y.dtype)
    return x_span(x, y) / jnp.maximum(count - 1, 1)


def area(x, y, baseline):
    """∫(y − baseline) dx, as a Riemann sum with the mean spacing."""
    return jnp.nansum(y - baseline[..., None], -1) * spacing(x, y)


def baseline(y, q=5.0):
    """``jnp.nanpercentile(y, q, axis=-1)`` (linear interpolation) for a low ``q``, from
    the few smallest values (``lax.top_k``) instead of a sort of every curve: the same
    numbers to an ulp (the interpolation may round once differently), ~10x faster on a
    CPU (10^4 curves of 64 points: 5 ms instead of 52 ms, most of a peak model's guess)."""
    m = y.shape[-1]
    k = min(m, math.floor(q / 100 * (m - 1)) + 2)  # every rank the interpolation can read
    count = jnp.sum(~jnp.isnan(y), -1).astype(y.dtype)
    smallest = _smallest(jnp.where(jnp.isnan(y), jnp.inf, y), k)
    pos = jnp.asarray(q / 100, y.dtype) * (count - 1)
    low, high = jnp.floor(pos), jnp.ceil(pos)
    w_high = pos - low
    w_low = 1 - w_high
    low = jnp.clip(low, 0, jnp.minimum(count - 1, k - 1)).astype(jnp.int32)
    high = jnp.clip(high, 0, jnp.minimum(count - 1, k - 1)).astype(jnp.int32)
    take = lambda i: jnp.take_along_axis(smallest, jnp.maximum(i, 0)[..., None], -1)[..., 0]  # noqa: E731
    value = take(low) * w_low + take(high) * w_high
    return jnp.where(count > 0, value, jnp.nan)


SMALLEST_BY_PASSES = 8
"""Up to this many values, the smallest of a float64 curve are picked by one pass each
over it (its minimum, then masked) rather than by ``lax.top_k``, which XLA's CPU backend
runs natively in float32 only: 10^4 float64 curves of 64 points, the 5 smallest, took
47 ms by ``top_k`` (float32: 5 ms) and take 15 ms by passes."""


def _smallest(y, k):
    """The ``k`` smallest values of each row of ``y`` (no NaN), ascending."""
    if y.dtype != jnp.float64 or k > SMALLEST_BY_PASSES:
        return -jax.lax.top_k(-y, k)[0]
    picked = []
    index = jax.lax.broadcasted_iota(jnp.int32, y.shape, y.ndim - 1)
    for _ in range(k):
        i = jnp.argmin(y, axis=-1)[..., None].astype(jnp.int32)
        picked.append(jnp.take_along_axis(y, i, -1)[..., 0])
        y = jnp.where(index == i, jnp.inf, y)  # the first of equal values only
    return jnp.stack(picked, -1)


def percentile(y, q):
    """``jnp.nanpercentile(y, q, axis=-1)`` from the values at the nearer end as
    :func:`baseline` reads them (the high end as ``−baseline(−y, 100 − q)``): a sigmoid's
    or a step's levels from a few values, a median (q = 50) from the lower half, which
    ``lax.top_k`` selects in a quarter of the time of the sort it replaces (10^4 curves of
    100 points: 18 ms instead of 66 ms on a CPU)."""
    return baseline(y, q) if q <= 50 else -baseline(-y, 100.0 - q)


def median(y):
    """``jnp.nanmedian(y, axis=-1)``, by :func:`percentile`."""
    return percentile(y, 50.0)


def correlation_sign(x, y):
    xv = valid_x(x, y)
    xc = xv - jnp.nanmean(xv, -1, keepdims=True)
    yc = y - jnp.nanmean(y, -1, keepdims=True)
    s = jnp.sign(jnp.nansum(xc * yc, -1))
    return jnp.where(s == 0, 1, s).astype(y.dtype)


def crossing(x, y, level):
    """x of the point whose y is closest to ``level`` (…,)."""
    d = jnp.abs(y - level[..., None])
    i = jnp.nanargmin(jnp.where(jnp.isnan(d), jnp.inf, d), axis=-1)
    return jnp.take_along_axis(broadcast_x(x, y), i[..., None], -1)[..., 0]


def width_above(x, y, level):
    """The length of x over which y, joined linearly between points, lies above
    ``level`` (…,): the peak's width at that level, not rounded to the spacing of x as a
    count of points would be.  x in order; a segment with a NaN end adds nothing."""
    xb = broadcast_x(x, y)
    a, b = y[..., :-1] - level[..., None], y[..., 1:] - level[..., None]
    both = (a > 0) & (b > 0)
    one = (a > 0) != (b > 0)
    one &= ~(jnp.isnan(a) | jnp.isnan(b))
    part = jnp.where(both, 1, jnp.where(one, jnp.maximum(a, b) / jnp.where(one, jnp.abs(a - b), 1), 0))
    return jnp.sum(part * jnp.abs(xb[..., 1:] - xb[..., :-1]), -1)


def line(u, v, ok, least=3):
    """The least-squares straight line v ≈ slope·(u − ū) + v̄ through the points where
    ``ok``, each row its own: ``(slope, ū, v̄, determined)``.  Determined: at least
    ``least`` points, u not all equal, a finite slope; elsewhere the slope is NaN (and
    the means too where no point counts).  ``u`` and ``v`` may hold anything (NaN, inf)
    where ``ok`` is False."""
    u, v = jnp.where(ok, u, 0), jnp.where(ok, v, 0)
    count = jnp.sum(ok, -1).astype(u.dtype)
    mu, mv = jnp.sum(u, -1) / count, jnp.sum(v, -1) / count
    du = jnp.where(ok, u - mu[..., None], 0)
    suu = jnp.sum(du**2, -1)
    slope = jnp.sum(du * (v - mv[..., None]), -1) / jnp.where(suu > 0, suu, 1)
    determined = (count >= least) & (suu > 0) & jnp.isfinite(slope)
    return jnp.where(determined, slope, jnp.nan), mu, mv, determined


def stack(*columns):
    shape = jnp.broadcast_shapes(*(jnp.shape(c) for c in columns))
    return jnp.stack([jnp.broadcast_to(c, shape) for c in columns], -1)
