"""Length buckets: a single fit (or a small batch) padded to a power-of-two number of
points, so that a new data length reuses the programs compiled for its bucket.

A fit's program is compiled for the shapes of its data; without buckets a curve of 50
points and one of 60 compile twice (~2 s each on a CPU).  :func:`pad` extends the point
axis to :func:`bucket` ``(m)`` with masked points — ``x`` repeated from the last point,
``y`` 0, ``sigma`` 1 — which the mask machinery keeps out of the residual, its
derivatives, ``n_points``, ``dof``, χ² and R², so the result is the unpadded one.

That holds only if the model is *pointwise* in ``x``: its value at point ``i`` depends on
``x[..., i]`` and the parameters alone.  A model that reads ``x[0]``, sums over the
points, or uses ``len(x)`` would see the pads.  :func:`pointwise` proves the property
from the model's jaxpr before padding (:class:`_Kinds`): traced at two lengths, the two
programs must be the same program but for the point axis (no length-dependent constant)
and every value must be independent of the points, or a function of point ``i`` only
along one axis, through primitives whose effect on that axis is known (elementwise
arithmetic, broadcasts, transposes, reshapes that add or drop unit axes, reductions,
contractions and slices along other axes, nested jit and custom-derivative calls,
scans and conds whose carry and branches keep these kinds).  Anything else — a scan
along the points, a sort, a callback (numpy models), a gather — is not padded.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

from jaxlm._fitting._inputs import CurveData

BUCKET_MAX = 2**16
"""Curves of more points are not padded (the extra work would be noticeable)."""
MIN_BUCKET = 8
"""The smallest bucket."""
_LENGTHS = (4099, 4111)
"""The probe lengths the model is traced at: primes unlike any other size in a fit."""

_ELEMENTWISE = frozenset(
    """abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp conj copy copy_p
    cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt igamma igammac imag
    integer_pow is_finite le lgamma log log1p logistic lt max min mul ne neg nextafter not
    or pow real reduce_precision rem round rsqrt select_n sign sin sinh sqrt square
    stop_gradient sub tan tanh xor convert_element_type complex bessel_i0e bessel_i1e polygamma
    zeta regularized_incomplete_beta igamma_grad_a""".split()
)
_REDUCTIONS = frozenset(
    "reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or argmax argmin".split()
)
_CUMULATIVE = frozenset("cumsum cumprod cummax cummin cumlogsumexp".split())

CONST = "const"
"""A value that does not depend on the points (constant along any point axis it has)."""


class NotPointwise(Exception):
    """Raised inside the analysis when a value mixes points."""


def bucket(m: int) -> int:
    """The number of points a curve of ``m`` points is padded to (a power of two)."""
    return max(MIN_BUCKET, 1 << max(int(m) - 1, 0).bit_length())


def _point(length, shape, axis):
    """The kind of a value whose ``axis`` is the point axis (checked against its shape:
    one axis of the probe length, that one)."""
    if axis is None or not (0 <= axis < len(shape)) or shape[axis] != length or shape.count(length) != 1:
        raise NotPointwise
    return axis


class _Kinds:
    """The dataflow analysis of one jaxpr: each value is :data:`CONST` (independent of the
    points, and without a point axis) or the index of its point axis (its entry ``i``
    along that axis depends on point ``i`` only); :class:`NotPointwise` otherwise."""

    _CALLS = (
        "pjit",
        "jit",
        "closed_call",
        "core_call",
        "remat",
        "checkpoint",
        "custom_jvp_call",
        "custom_vjp_call",
        "custom_vjp_call_jaxpr",
    )

    def __init__(self, length: int):
        self.length = length

    def run(self, jaxpr, kinds: list):
        env = {}
        read = lambda v: CONST if isinstance(v, jex_core.Literal) else env[v]  # noqa: E731
        for var in jaxpr.constvars:
            if self.length in _shape(var):
                raise NotPointwise  # a constant the size of the points (np.arange(len(x)))
            env[var] = CONST
        for var, kind in zip(jaxpr.invars, kinds, strict=True):
            env[var] = kind
        for eqn in jaxpr.eqns:
            outs = self.eqn(eqn, [read(v) for v in eqn.invars])
            for var, kind in zip(eqn.outvars, outs, strict=True):
                env[var] = kind
        return [read(v) for v in jaxpr.outvars]

    def eqn(self, eqn, kinds):
        name, params = eqn.primitive.name, eqn.params
        outs = [_shape(v) for v in eqn.outvars]
        shapes = [_shape(v) for v in eqn.invars]
        if name in self._CALLS:
            return self.run(self._inner(eqn), kinds)
        if name == "scan":
            return self._scan(eqn, kinds)
        if name == "cond":
            return self._cond(eqn, kinds)
        points = [(k, s) for k, s in zip(kinds, shapes, strict=True) if k is not CONST]
        if not points:  # independent of the points
            if name == "broadcast_in_dim" and outs[0].count(self.length) == 1:
                return [_point(self.length, outs[0], outs[0].index(self.length))]  # constant along them
            if any(self.length in s for s in outs):
                raise NotPointwise  # iota or the like: a value that varies along the points
            return [CONST] * len(outs)
        axes = {k for k, _ in points}
        if len(axes) > 1:
            raise NotPointwise
        (axis,) = axes
        operand = points[0][1]
        if name in _ELEMENTWISE:
            if any(s != outs[0] for s in outs) or any(len(s) != len(outs[0]) for _, s in points):
                raise NotPointwise  # (unit axes may broadcast; the point axis cannot be one)
            for _, s in points:
                _point(self.length, s, axis)
            return [_point(self.length, outs[0], axis)] * len(outs)
        if len(outs) != 1:
            raise NotPointwise
        (out,) = outs
        first = kinds[0] is not CONST  # the point operand is the first one
        if name == "broadcast_in_dim":
            return [_point(self.length, out, params["broadcast_dimensions"][axis])]
        if name == "transpose":
            return [_point(self.length, out, list(params["permutation"]).index(axis))]
        if name == "squeeze":
            dropped = set(params["dimensions"])
            if axis in dropped:
                raise NotPointwise
            return [_point(self.length, out, axis - sum(d < axis for d in dropped))]
        if name == "reshape":
            return [self._reshape(operand, out, axis)]
        if name in _REDUCTIONS:
            reduced = set(params["axes"])
            if axis in reduced:
                raise NotPointwise
            return [_point(self.length, out, axis - sum(d < axis for d in reduced))]
        if name in _CUMULATIVE and params["axis"] != axis:
            return [_point(self.length, out, axis)]
        if name == "concatenate" and params["dimension"] != axis:
            return [_point(self.length, out, axis)]
        if name == "slice" and first and len(points) == 1:
            strides = params["strides"]
            whole = params["start_indices"][axis] == 0 and params["limit_indices"][axis] == self.length
            if whole and (strides is None or strides[axis] == 1):
                return [_point(self.length, out, axis)]
        if name == "dynamic_slice" and first and len(points) == 1:
            if params["slice_sizes"][axis] == self.length:  # the whole point axis: its start is 0
                return [_point(self.length, out, axis)]
        if name == "pad" and first and len(points) == 1:
            if tuple(params["padding_config"][axis]) == (0, 0, 0):
                return [_point(self.length, out, axis)]
        if name == "stack":  # a new axis: the point axis moves if it is behind it
            return [_point(self.length, out, axis + (params["axis"] <= axis))]
        if name == "dot_general" and len(points) == 1:
            return [self._dot(params["dimension_numbers"], shapes, first, out, axis)]
        raise NotPointwise

    def _scan(self, eqn, kinds):
        """A scan over a non-point axis: the body's kinds, the carry's a fixed point."""
        params = eqn.params
        body = params["jaxpr"].jaxpr
        n_consts, n_carry = params["num_consts"], params["num_carry"]
        consts, carry, xs = (
            kinds[:n_consts],
            kinds[n_consts : n_consts + n_carry],
            kinds[n_consts + n_carry :],
        )
        if any(k == 0 for k in xs):
            raise NotPointwise  # scanning along the points
        xs = [k if k is CONST else k - 1 for k in xs]
        out = self.run(body, [*consts, *carry, *xs])
        if out[:n_carry] != carry:
            raise NotPointwise
        ys = [k if k is CONST else k + 1 for k in out[n_carry:]]
        return [
            *carry,
            *(
                _point(self.length, _shape(v), k) if k is not CONST else CONST
                for v, k in zip(eqn.outvars[n_carry:], ys, strict=True)
            ),
        ]

    def _cond(self, eqn, kinds):
        """A branch chosen by a value independent of the points: every branch must agree."""
        if kinds[0] is not CONST:
            raise NotPointwise
        outs = [self.run(branch.jaxpr, kinds[1:]) for branch in eqn.params["branches"]]
        if any(o != outs[0] for o in outs):
            raise NotPointwise
        return outs[0]

    @staticmethod
    def _inner(eqn):
        """The jaxpr a call-like primitive runs on its operands."""
        for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
            inner = eqn.params.get(key)
            if inner is not None:
                inner = getattr(inner, "jaxpr", inner)
                if len(getattr(inner, "invars", ())) == len(eqn.invars):
                    return inner
        raise NotPointwise

    def _reshape(self, shape, out, axis):
        """A reshape may only add or drop unit axes."""
        if [d for d in shape if d != 1] != [d for d in out if d != 1]:
            raise NotPointwise
        before = sum(1 for d in shape[:axis] if d != 1)  # non-unit axes before the point axis
        position = [i for i, d in enumerate(out) if d != 1][before]
        return _point(self.length, out, position)

    def _dot(self, dimension_numbers, shapes, first, out, axis):
        (lc, rc), (lb, rb) = dimension_numbers
        contract, batch = (lc, lb) if first else (rc, rb)
        if axis in contract or axis in batch:
            raise NotPointwise
        lhs, rhs = shapes
        free_lhs = [d for d in range(len(lhs)) if d not in lc and d not in lb]
        free_rhs = [d for d in range(len(rhs)) if d not in rc and d not in rb]
        position = len(lb) + (free_lhs.index(axis) if first else len(free_lhs) + free_rhs.index(axis))
        return _point(self.length, out, position)


def _shape(v):
    return tuple(getattr(v.aval, "shape", ()))


def _normalised(text: str, length: int) -> str:
    """A jaxpr's text with the probe length written as ``L`` where it is a size (in a shape
    or a parameter), not where it is a value (a literal prints as ``4099.0:f32[]`` or
    ``4099:i32[]``)."""
    return re.sub(rf"(?<![\w.]){length}(?![\w.:])", "L", text)


_cache: OrderedDict = OrderedDict()
_lock = threading.Lock()
_CACHE_SIZE = 256


def pointwise(fn, x, n: int, dtype) -> bool:
    """Whether ``fn(x, *p)`` (``n`` scalar parameters of ``dtype``) is provably pointwise
    along the last axis of ``x`` and returns one value per point (or one for all).
    Cached per (function, leading shape of ``x``, dtypes, ``n``)."""
    x_dtype = jnp.dtype(x.dtype)
    try:
        key = (fn, tuple(x.shape[:-1]), x_dtype, n, jnp.dtype(dtype))
        hash(key)
    except TypeError:
        return False
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    answer = _prove(fn, x.shape[:-1], x_dtype, n, jnp.dtype(dtype))
    with _lock:
        _cache[key] = answer
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return answer


def _prove(fn, lead, x_dtype, n, dtype) -> bool:
    texts, consts, closed = [], [], None
    for length in _LENGTHS:
        probe = jax.ShapeDtypeStruct((*lead, length), x_dtype)
        params = [jax.ShapeDtypeStruct((), dtype)] * n
        try:
            closed = jax.make_jaxpr(lambda x, *p: fn(x, *p))(probe, *params)
        except Exception:  # noqa: BLE001 - not traceable as an array function: not padded
            return False
        texts.append(_normalised(str(closed), length))
        consts.append([np.asarray(c) for c in closed.consts])
    same_consts = len(consts[0]) == len(consts[1]) and all(
        a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
        for a, b in zip(*consts, strict=True)
    )
    if texts[0] != texts[1] or not same_consts:
        return False  # the program depends on the length (len(x), x.shape in a constant)
    length = _LENGTHS[-1]
    jaxpr = closed.jaxpr
    if len(jaxpr.outvars) != 1:
        return False
    shape = tuple(jaxpr.outvars[0].aval.shape)
    try:
        (kind,) = _Kinds(length).run(jaxpr, [len(lead)] + [CONST] * n)
    except NotPointwise:
        return False
    if kind is CONST:
        return shape in ((), (length,))
    return shape == (length,) and kind == 0


def pad(data: CurveData, size: int, sigma_kind: str) -> CurveData:
    """``data`` (single curve or batch, points on the last axis of ``y``) padded to
    ``size`` points with masked points."""
    m = data.y.shape[-1]
    extra = size - m

    def along(a, value=None):
        widths = [(0, 0)] * (np.ndim(a) - 1) + [(0, extra)]
        mode = {"mode": "edge"} if value is None else {"constant_values": value}  # edge: x's last point
        if isinstance(a, jax.core.Tracer):
            return jnp.pad(a, widths, **mode)
        # concrete: padded on the host, where a new length compiles nothing
        return jax.device_put(np.pad(np.asarray(a), widths, **mode))

    mask = data.mask if data.mask is not None else np.ones((m,), bool)
    sigma = along(data.sigma, 1) if sigma_kind == "std" else data.sigma
    return data._replace(x=along(data.x), y=along(data.y, 0), sigma=sigma, mask=along(mask, False))


def wanted(fn, data: CurveData, sigma_kind: str, n: int) -> int | None:
    """The bucket to pad ``data`` to, or None where padding is not possible.  A curve
    whose length is a bucket's gets the bucket's (all-true) mask too, so that it runs the
    bucket's program."""
    m = data.y.shape[-1]
    x = data.x
    if sigma_kind == "cov" or not isinstance(x, jax.Array | np.ndarray) or np.ndim(x) == 0:
        return None
    if x.shape[-1] != m or m > BUCKET_MAX:
        return None
    if data.mask is not None and data.mask.shape[-1] != m:
        return None
    if sigma_kind == "std" and np.ndim(data.sigma) > 0 and data.sigma.shape[-1] != m:
        return None
    if not pointwise(fn, x, n, data.y.dtype):
        return None
    return bucket(m)
