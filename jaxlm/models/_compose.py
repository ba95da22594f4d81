"""Models that compose: ``a + b`` and ``a * b`` (lmfit's ``CompositeModel``), and models
evaluated on one fit's or a batch's parameters.

A composite's parameters are its parts' parameters in order, each named
``<part name>_<parameter>``, or ``<part name><k>_<parameter>`` when a part occurs more than
once (``gaussian_peak1_center``); a part given a prefix with :meth:`Model.with_prefix`
keeps its own.  Its guess peels the data: the left part is guessed from ``y``, the right
part from what the left part leaves, ``y − left(x)`` for a sum and ``y / left(x)`` for a
product (NaN, i.e. ignored, where ``left(x)`` is near 0).  So put the dominant part first:
the largest peak, then the smaller ones, then the baseline.

The function and guess of a composite compare equal when their parts do, so a composite
built again from the same parts reuses the compiled fits.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import jax
import jax.numpy as jnp

from jaxlm.models._base import Model

OPERATORS = ("+", "*")


@dataclasses.dataclass(frozen=True)
class Combined:
    """``fn`` of a composite: each part on its slice of the parameters, summed or multiplied."""

    op: str
    left: Model
    right: Model

    def __call__(self, x, *params):
        n = self.left.n_params
        a = self.left.fn(x, *params[:n])
        b = self.right.fn(x, *params[n:])
        return a + b if self.op == "+" else a * b


@dataclasses.dataclass(frozen=True)
class CombinedGuess:
    """``guess_fn`` of a composite: the left part from the data, the right part from the rest."""

    op: str
    left: Model
    right: Model

    def __call__(self, x, y):
        p_left = jnp.asarray(self.left.guess_fn(x, y), y.dtype)
        fitted = evaluate(self.left, x, p_left)
        if self.op == "+":
            rest = y - fitted
        else:
            scale = jnp.nanmax(jnp.abs(fitted), -1, keepdims=True)
            rest = jnp.where(jnp.abs(fitted) > 1e-3 * scale, y / fitted, jnp.nan)
        p_right = jnp.asarray(self.right.guess_fn(x, rest), y.dtype)
        return jnp.concatenate([p_left, p_right], -1)


def combine(op: str, left, right) -> Model:
    """``left op right`` as a :class:`Model` (see the module docstring for names)."""
    for side, model in (("left", left), ("right", right)):
        if not isinstance(model, Model):
            raise TypeError(f"{op}: the {side} operand must be a jaxlm Model, got {type(model).__name__}")
    if left.x_dims != right.x_dims:
        raise ValueError(
            f"{op}: {left.name!r} takes {left.x_dims}-D x and {right.name!r} {right.x_dims}-D x; "
            "a composite needs parts with the same x"
        )
    fn = Combined(op, left, right)
    parts = _parts(left) + _parts(right)
    names = _names(parts)
    wrap = lambda m: f"({m.name})" if op == "*" and _op(m) == "+" else m.name  # noqa: E731
    formula = lambda m: f"({m.formula})" if _op(m) is not None or op == "*" else m.formula  # noqa: E731
    return Model(
        name=f"{wrap(left)}{op}{wrap(right)}",
        fn=fn,
        param_names=names,
        guess_fn=CombinedGuess(op, left, right),
        x_dims=left.x_dims,
        formula=f"{formula(left)} {op} {formula(right)}",
    )


def _op(model: Model) -> str | None:
    return model.fn.op if isinstance(model.fn, Combined) and not model.prefix else None


def _parts(model: Model) -> list[Model]:
    """The named parts of a model, in parameter order (a prefixed composite is one part)."""
    if _op(model) is None:
        return [model]
    return _parts(model.fn.left) + _parts(model.fn.right)


def _names(parts: list[Model]) -> tuple[str, ...]:
    counts = Counter(p.name for p in parts if not p.prefix)
    seen: Counter = Counter()
    names: list[str] = []
    for part in parts:
        if part.prefix:
            names.extend(part.param_names)
            continue
        seen[part.name] += 1
        prefix = f"{part.name}{seen[part.name]}_" if counts[part.name] > 1 else f"{part.name}_"
        names.extend(prefix + name for name in part.param_names)
    repeated = sorted(name for name, k in Counter(names).items() if k > 1)
    if repeated:
        raise ValueError(
            f"the composite would have repeated parameter names {repeated}: give parts distinct prefixes"
        )
    return tuple(names)


def evaluate(model: Model, x, params):
    """``model`` at ``params`` ``(n,)`` (one curve) or ``(..., n)`` (one curve per row),
    on a shared ``x`` or one x per row (``(..., m)`` / ``(..., k, m)``)."""
    params = jnp.asarray(params)
    x = jnp.asarray(x)
    n = model.n_params
    if params.ndim == 0 or params.shape[-1] != n:
        raise ValueError(
            f"params has shape {params.shape}; {model.name!r} takes {n} parameters "
            f"({', '.join(model.param_names)}) on its last axis"
        )
    lead = params.shape[:-1]
    if not lead:
        return model.fn(x, *params)
    per_row = x.ndim == len(lead) + model.x_dims and x.shape[: len(lead)] == lead
    if not per_row and x.ndim != model.x_dims:
        raise ValueError(
            f"x has shape {x.shape}: expected a shared x of {model.x_dims} dimension(s) or one per "
            f"row of params {lead}"
        )
    size = math.prod(lead)
    flat_x = x.reshape((size,) + x.shape[len(lead) :]) if per_row else x
    out = jax.vmap(lambda xi, pi: model.fn(xi, *pi), in_axes=(0 if per_row else None, 0))(
        flat_x, params.reshape(size, n)
    )
    return out.reshape(lead + out.shape[1:])
