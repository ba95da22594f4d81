"""jaxlm's compiled programs, held in a bounded least-recently-used cache.

A module-level ``jax.jit(impl, static_argnums=...)`` keeps the executables of every
value its static arguments ever took, for the life of the process.  jaxlm's static
arguments include the caller's model, so a process that fits many different models (a
notebook, a service) kept every model's programs: each compiled program holds its own
executable memory mappings (≈ 450 per model for a fit's programs on CPU), and at the
kernel's limit (``vm.max_map_count``, 65 530 by default) compilation fails with
"LLVM compilation error: Cannot allocate memory" — after about 145 models.

:func:`program` jits ``impl`` once per value of its static arguments instead, as
``jax.jit(functools.partial(impl, *static))``, and keeps these jitted functions in one
cache of at most :data:`MAX_PROGRAMS` entries shared by all of jaxlm.  JAX's internal
caches hold a jitted function's traces and executables weakly, so an evicted entry's
executables (and their mappings) are freed with it; fitting it again compiles again (or
reads JAX's persistent cache, when the caller enabled one).

On a CPU, programs that run once per call (a start, the finishing statistics, a gather)
and small solver loops are compiled with XLA's classic elemental kernel emitters
(:data:`FAST_COMPILE`): 30-45 % less compile time, for kernels as fast on these
programs; the large loops keep XLA's default emitters, whose kernels run some of them up
to 20 % faster (``benchmarks/first_call.py``).
"""

from __future__ import annotations

import functools
import math
import threading
import types
from collections import OrderedDict
from collections.abc import Callable

import jax

MAX_PROGRAMS = 64
"""How many (function, static arguments) programs are kept.  A program holds up to ~225
mappings on CPU (``curve_fit`` of one curve compiles two such programs per model; a
batched ``fit`` through the driver about a dozen smaller ones: initialisation, one phase
and one gather per active-set size, scatter, preparation, finishing), so a full cache
holds at most ~15 000 mappings, under a quarter of the kernel's default limit, and keeps
the programs of the last 5–30 models."""

FAST_COMPILE = {"xla_cpu_use_fusion_emitters": False}
"""XLA's compile options for the programs compiled for a shorter compilation, on a CPU:
the classic elemental kernel emitters instead of the MLIR fusion emitters.  Measured on
2 cores: the covariance of 10⁴ float32 Jacobians 64×4 compiles in 0.68 s instead of
1.03 s and runs as fast (6.7 vs 6.2 ms, the medians equal); the solver's vmapped loop on
10⁴ curves compiles in 1.5-2.3 s instead of 2.3-3.4 s but runs 5-20 % slower on Gaussians
(10 % faster on decays); one curve's ``curve_fit`` program compiles in 1.70 s instead of
2.87 s and runs in 200 µs instead of 285.  (One problem's program goes further,
:data:`ALONE_COMPILE`.)"""

ALONE_COMPILE = {**FAST_COMPILE, "xla_backend_optimization_level": 0}
"""The options of a small program that fits one curve on its own (a single
``curve_fit``/``fit``), on a CPU: :data:`FAST_COMPILE` and no LLVM optimisation.  XLA's
HLO passes still run (25 ms of that program's compilation); LLVM's passes over the
generated kernels are skipped, which was most of it (one Gaussian's ``curve_fit``:
0.43-0.52 s instead of 1.0-1.13 s on 2 cores), for kernels that run in a few
microseconds each anyway (a 1000-point curve's later calls: 3.3 ms against 4.1).

What changes is rounding: without LLVM, ``a·b + c`` is no longer contracted to a fused
multiply-add.  The minimum is the same to its accuracy, but the path is not the batched
program's bit for bit, and on a long path the difference can grow to the stopping
tolerance (a 30-point decay: 4e-8 relative in float64, where ftol allows ~1e-6).  So
the other programs keep :data:`FAST_COMPILE`: ``least_squares`` of one problem, whose
path equals the same problem's under ``vmap`` (``tests/test_solver.py``: 1e-10 and the
same step counts, which the restart's bookkeeping is tested by), and batches, whose
kernels loop over members where LLVM's vectorisation pays (and at level 0 a small padded
batch, ``tests/test_buckets.py``, stopped one member on another test than the unpadded
batch did)."""

SMALL_LOOP = 2**16
"""A solver loop whose arguments hold at most this many numbers (a curve of 6·10⁴ points,
a thousand 64-point curves) is compiled with :data:`FAST_COMPILE`: its steps take
microseconds, its compilation seconds."""

_cache: OrderedDict = OrderedDict()
_lock = threading.Lock()


_options_known = [True]
"""Whether this jaxlib knows the options (XLA may drop one one day): assumed until a
compilation says "No such compile option" (:func:`_unknown_option`); a probe compiled
ahead would cost every process's first fit ~20 ms."""


def _options_work() -> bool:
    """Whether jaxlm still passes its compile options (:data:`_options_known`)."""
    return _options_known[0]


def _unknown_option(err: Exception) -> bool:
    """Whether ``err`` is XLA's refusal of a compile option; if so, none is used again."""
    if "No such compile option" not in str(err):
        return False
    _options_known[0] = False
    return True


def _compile_options(hot: bool, alone: bool, args) -> str | None:
    """Which options to compile a program for these arguments with: on a CPU,
    :data:`FAST_COMPILE` for a program that runs once per call and for a solver loop
    (``hot``) whose arguments are small, and :data:`ALONE_COMPILE` for a small program of
    one problem (``alone``); None (XLA's defaults) otherwise, and always under a trace
    (the caller's program compiles it)."""
    if traced(args):
        return None
    leaves = jax.tree_util.tree_leaves(args)
    arrays = [a for a in leaves if hasattr(a, "shape")]
    platforms = {d.platform for a in arrays if isinstance(a, jax.Array) for d in a.devices()}
    if (platforms or {jax.default_backend()}) != {"cpu"}:
        return None
    small = sum(math.prod(a.shape) for a in arrays) <= SMALL_LOOP
    if hot and not small:
        return None
    if not _options_work():
        return None
    return "alone" if alone and small else "fast"


def traced(tree) -> bool:
    """Whether any leaf of ``tree`` is a tracer (the call is under a JAX transformation)."""
    return any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(tree))


_OPTIONS = {None: None, "fast": FAST_COMPILE, "alone": ALONE_COMPILE}


def _jitted(impl: Callable, static: tuple, donate: tuple[int, ...], options: str | None = None):
    key = (impl, static, options)
    with _lock:
        jitted = _cache.get(key)
        if jitted is not None:
            _cache.move_to_end(key)
            return jitted
    options = _OPTIONS[options]
    jitted = jax.jit(functools.partial(impl, *static), donate_argnums=donate, compiler_options=options)
    with _lock:
        jitted = _cache.setdefault(key, jitted)  # another thread may have made it meanwhile
        _cache.move_to_end(key)
        while len(_cache) > MAX_PROGRAMS:
            _cache.popitem(last=False)
    return jitted


def size() -> int:
    """How many programs the cache holds now."""
    return len(_cache)


def program(
    n_static: int,
    donate_argnums: tuple[int, ...] = (),
    *,
    hot: bool = False,
    alone: Callable[..., bool] | None = None,
):
    """Decorator: ``impl``'s first ``n_static`` positional arguments are static (hashable,
    compared by equality, as ``jax.jit``'s ``static_argnums``) and select a cached jitted
    program that takes the rest; ``donate_argnums`` count all arguments, as in
    ``jax.jit``.  ``hot``: the program is a solver loop, whose run time matters more than
    its compile time once its arguments are large; ``alone(*static)``: whether the
    program solves one problem on its own (:func:`_compile_options`).  The result also
    has ``.lower(*args)``, as a jitted function does."""
    donate = tuple(i - n_static for i in donate_argnums)
    if any(i < 0 for i in donate):
        raise ValueError("a static argument cannot be donated")

    def wrap(impl: Callable) -> Callable:
        def jitted(args):
            static, dynamic = args[:n_static], args[n_static:]
            one = alone is not None and alone(*static)
            return _jitted(impl, static, donate, _compile_options(hot, one, dynamic)), dynamic

        @functools.wraps(impl)
        def call(*args):
            fn, dynamic = jitted(args)
            try:
                return fn(*dynamic)
            except Exception as err:  # refused before running: nothing donated is lost
                if not _unknown_option(err):
                    raise
            return jitted(args)[0](*dynamic)

        def lower(*args):
            fn, dynamic = jitted(args)
            return fn.lower(*dynamic)

        call.lower = lower
        return call

    return wrap


_PLAIN = (bool, int, float, complex, str, bytes, type(None))


class SameFunction:
    """A caller's function, compared by what it computes where that is safe to tell, so
    that a new but identical lambda (a model defined inside a loop or a helper, a
    notebook cell run again) finds the programs compiled for the first one.

    Two plain Python functions are the same when their code objects are equal (same
    bytecode, constants, names and first line), they share one globals dict, and their
    defaults, closed-over values and the globals their code reads are equal values of
    the same types: numbers, strings, None, tuples of these, functions that are the same
    by this rule, or the same module, class or builtin.  A function that reads anything
    else (an array, a list, a bound method, a callable object) keeps its own identity,
    as under ``jax.jit``.  So a lambda that reads a global number sees its new value
    after the number changes; an array read through a global or a closure never is
    compared, so such a function compiles its own programs.
    """

    __slots__ = ("__wrapped__", "__weakref__", "_key")

    def __init__(self, fn: Callable, key):
        self.__wrapped__ = fn
        self._key = key

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    def __eq__(self, other):
        return isinstance(other, SameFunction) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __getattr__(self, name):  # __name__, __signature__, … of the caller's function
        return getattr(self.__wrapped__, name)


def same_function(fn):
    """``fn`` as a :class:`SameFunction` when it is a plain Python function whose identity
    can be told safely from its contents, else ``fn`` itself."""
    if isinstance(fn, SameFunction):
        return fn
    key = _function_key(fn, depth=3)
    return fn if key is None else SameFunction(fn, key)


def _function_key(fn, depth):
    if not isinstance(fn, types.FunctionType) or depth == 0:
        return None
    parts = []
    for values in (fn.__defaults__ or (), tuple(sorted((fn.__kwdefaults__ or {}).items()))):
        parts.append(_value_key(values, depth))
    try:
        cells = tuple(cell.cell_contents for cell in fn.__closure__ or ())
    except ValueError:  # an empty cell (a variable not yet assigned)
        return None
    parts.append(_value_key(cells, depth))
    names = sorted(n for n in _global_names(fn.__code__) if n in fn.__globals__)
    parts.append(_value_key(tuple(fn.__globals__[n] for n in names), depth))
    if any(p is None for p in parts):
        return None
    return (fn.__code__, id(fn.__globals__), tuple(names), *parts)


def _global_names(code) -> set:
    """The names ``code`` (and the code nested in it) may read from its globals."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _value_key(value, depth):
    """A hashable key equal only for values that behave the same, or None."""
    if isinstance(value, _PLAIN):
        # the type too (1 and 1.0 trace to different dtypes); repr tells -0.0 from 0.0
        # and makes NaN equal to itself
        return (type(value), repr(value) if isinstance(value, float | complex) else value)
    if type(value) is tuple:
        keys = tuple(_value_key(v, depth) for v in value)
        return None if any(k is None for k in keys) else (tuple, keys)
    if isinstance(value, types.FunctionType):
        key = _function_key(value, depth - 1)
        return ("function", key) if key is not None else ("object", id(value), value)
    if isinstance(value, types.ModuleType | type | types.BuiltinFunctionType):
        return ("object", id(value), value)
    return None


_shapes: OrderedDict = OrderedDict()


def abstract(tree):
    """``tree`` as ``jax.eval_shape`` sees it: each array-like leaf (numpy, JAX, a tracer)
    as a ``jax.ShapeDtypeStruct`` of its shape, dtype and weak type; Python numbers kept.
    None where a leaf is neither (it is then traced, never cached)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    out = []
    for leaf in leaves:
        if isinstance(leaf, jax.ShapeDtypeStruct | bool | int | float):
            out.append(leaf)
        elif hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            weak = bool(getattr(getattr(leaf, "aval", None), "weak_type", False))
            out.append(jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype, weak_type=weak))
        else:
            return None
    return jax.tree_util.tree_unflatten(treedef, out)


def eval_shape(fn: Callable, *args):
    """``jax.eval_shape(fn, *args)``, kept per function and abstract arguments (bounded
    as the programs): a trace costs ~0.3-1 ms, which a batch of small fits called in a
    loop pays several times per call otherwise.  Failures are not kept (each call
    raises afresh)."""
    abstract_args = abstract(args)
    key = None
    if abstract_args is not None:
        key = (fn, abstract_args)
        try:
            hash(key)
        except TypeError:
            key = None
    if key is not None:
        with _lock:
            if key in _shapes:
                _shapes.move_to_end(key)
                return _shapes[key]
    out = jax.eval_shape(fn, *(args if abstract_args is None else abstract_args))
    if key is not None:
        with _lock:
            _shapes[key] = out
            while len(_shapes) > 4 * MAX_PROGRAMS:
                _shapes.popitem(last=False)
    return out
