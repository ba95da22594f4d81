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
"""

from __future__ import annotations

import functools
import threading
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

_cache: OrderedDict = OrderedDict()
_lock = threading.Lock()


def _jitted(impl: Callable, static: tuple, donate: tuple[int, ...]):
    key = (impl, static)
    with _lock:
        jitted = _cache.get(key)
        if jitted is not None:
            _cache.move_to_end(key)
            return jitted
    jitted = jax.jit(functools.partial(impl, *static), donate_argnums=donate)
    with _lock:
        jitted = _cache.setdefault(key, jitted)  # another thread may have made it meanwhile
        _cache.move_to_end(key)
        while len(_cache) > MAX_PROGRAMS:
            _cache.popitem(last=False)
    return jitted


def size() -> int:
    """How many programs the cache holds now."""
    return len(_cache)


def program(n_static: int, donate_argnums: tuple[int, ...] = ()):
    """Decorator: ``impl``'s first ``n_static`` positional arguments are static (hashable,
    compared by equality, as ``jax.jit``'s ``static_argnums``) and select a cached jitted
    program that takes the rest; ``donate_argnums`` count all arguments, as in
    ``jax.jit``.  The result also has ``.lower(*args)``, as a jitted function does."""
    donate = tuple(i - n_static for i in donate_argnums)
    if any(i < 0 for i in donate):
        raise ValueError("a static argument cannot be donated")

    def wrap(impl: Callable) -> Callable:
        @functools.wraps(impl)
        def call(*args):
            return _jitted(impl, args[:n_static], donate)(*args[n_static:])

        call.lower = lambda *args: _jitted(impl, args[:n_static], donate).lower(*args[n_static:])
        return call

    return wrap
