"""jaxlm keeps its compiled programs in a bounded cache (issue 16, item 4).

Each distinct model function needs its own programs, and every XLA CPU executable holds
memory mappings.  jaxlm's programs used to be module-level ``jax.jit``s with the model as
a static argument, which keep every model's executables for the life of the process:
about 300 mappings per ``least_squares`` model and 445 per ``curve_fit`` model, until
compilation failed at the kernel's limit (``vm.max_map_count``).  The 500-model run is
``benchmarks/many_models.py``; here a small cache shows the bound itself.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm
from jaxlm import _programs

pytestmark = pytest.mark.skipif(not pathlib.Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")


def _maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def _model(k):
    return lambda x, a, b: a * jnp.exp(-b * x) + 0.001 * k


def test_distinct_models_do_not_accumulate_compiled_programs(monkeypatch):
    """Ten new model functions, alternately through least_squares and curve_fit, with
    room for four programs: the cache never holds more than four, every answer is right,
    and the process's memory mappings stop growing once the cache is full (before, each
    model added its 300–445)."""
    monkeypatch.setattr(_programs, "MAX_PROGRAMS", 4)
    jax.clear_caches()
    x = np.linspace(0.0, 4.0, 24)
    counts = []
    for k in range(10):
        f = _model(k)
        y = np.asarray(f(x, 2.0, 0.7))
        if k % 2:
            p = jaxlm.curve_fit(f, x, y, p0=[1.0, 1.0])[0]
        else:
            residual = lambda p, x, y, f=f: f(x, *p) - y  # noqa: E731
            p = jaxlm.least_squares(residual, jnp.array([1.0, 1.0]), (x, y)).params
        np.testing.assert_allclose(np.asarray(p), [2.0, 0.7], rtol=1e-6)
        assert _programs.size() <= 4
        counts.append(_maps())
    # four models fill the cache; the last six add at most a few mappings of their own
    # (allocator arenas), nowhere near one model's programs
    assert counts[-1] - counts[3] < 150, counts


def test_an_evicted_program_compiles_again_to_the_same_answer(monkeypatch):
    monkeypatch.setattr(_programs, "MAX_PROGRAMS", 2)
    x = np.linspace(0.0, 4.0, 24)
    f = _model(0)
    y = np.asarray(f(x, 2.0, 0.7)) + 0.01 * np.sin(7 * x)
    first = jaxlm.curve_fit(f, x, y, p0=[1.0, 1.0])
    held = set(_programs._cache)
    for k in (1, 2):  # two other models push every program of the first out
        jaxlm.curve_fit(_model(k), x, y, p0=[1.0, 1.0])
    assert not held & set(_programs._cache)
    again = jaxlm.curve_fit(f, x, y, p0=[1.0, 1.0])
    np.testing.assert_array_equal(np.asarray(again[0]), np.asarray(first[0]))
    np.testing.assert_array_equal(np.asarray(again[1]), np.asarray(first[1]))


def test_programs_keep_static_arguments_static_and_reject_donating_them():
    calls = []

    @_programs.program(1)
    def scaled(factor, v):
        calls.append(factor)  # runs once per trace
        return factor * v

    v = jnp.arange(3.0)
    np.testing.assert_array_equal(np.asarray(scaled(2.0, v)), [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(np.asarray(scaled(2.0, v + 1)), [2.0, 4.0, 6.0])
    np.testing.assert_array_equal(np.asarray(scaled(3.0, v)), [0.0, 3.0, 6.0])
    assert calls == [2.0, 3.0]  # one trace per static value, reused for new data
    assert "mul" in scaled.lower(2.0, v).as_text()
    with pytest.raises(ValueError, match="static argument cannot be donated"):
        _programs.program(2, donate_argnums=(1,))
