"""jaxlm keeps its compiled programs in a bounded cache (issue 16, item 4).

Each distinct model function needs its own programs, and every XLA CPU executable holds
memory mappings.  jaxlm's programs used to be module-level ``jax.jit``s with the model as
a static argument, which keep every model's executables for the life of the process:
about 300 mappings per ``least_squares`` model and 445 per ``curve_fit`` model, until
compilation failed at the kernel's limit (``vm.max_map_count``).  The 500-model run is
``benchmarks/many_models.py``; here a small cache shows the bound itself.
"""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm
from jaxlm import _programs
from tests.helpers import Compiles

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


_OFFSET = 0.0  # read by _line's model as a global


def _line():
    return lambda x, a: a * x + _OFFSET  # a new function object at every call


def _decay_fit(x, y):
    """A helper that defines its model inline, as scripts and notebooks do."""
    return jaxlm.curve_fit(lambda x, a, b: a * jnp.exp(-b * x), x, y, p0=[1.0, 1.0])


def test_a_new_but_identical_model_function_compiles_nothing():
    x = np.linspace(0.0, 4.0, 31)
    y = 2.5 * np.exp(-1.3 * x)
    first = _decay_fit(x, y)
    with Compiles() as again:
        second = _decay_fit(x, y)
    assert not again.lines, again.lines
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_allclose(first[0], [2.5, 1.3], rtol=1e-10)

    def residual_of(k):
        return lambda p, x, y: p[0] * jnp.exp(-k * p[1] * x) - y

    jaxlm.least_squares(residual_of(1.0), jnp.ones(2), (x, y))
    with Compiles() as again:
        sol = jaxlm.least_squares(residual_of(1.0), jnp.ones(2), (x, y))
    assert not again.lines, again.lines
    np.testing.assert_allclose(sol.params, [2.5, 1.3], rtol=1e-10)


def test_functions_that_may_compute_differently_never_share_programs(monkeypatch):
    same = _programs.same_function

    def scaled(k):
        return lambda x, a: a * x * k

    assert same(scaled(2.0)) == same(scaled(2.0)) and hash(same(scaled(2.0))) == hash(same(scaled(2.0)))
    assert same(scaled(2.0)) != same(scaled(3.0))
    assert same(scaled(1)) != same(scaled(1.0))  # an int and a float trace to different dtypes
    assert same(scaled(0.0)) != same(scaled(-0.0)) and same(scaled(np.nan)) == same(scaled(np.nan))
    weights = np.ones(3)
    assert not isinstance(same(lambda x, a: a * x * weights), _programs.SameFunction)  # an array: identity
    assert not isinstance(same(jnp.sin), _programs.SameFunction)  # not a plain Python function

    x = np.linspace(0.0, 1.0, 20)
    for k in (2.0, 3.0):  # answers follow each function's own closure
        (a,), _ = jaxlm.curve_fit(scaled(k), x, 6.0 * x, p0=[1.0])
        np.testing.assert_allclose(a, 6.0 / k, rtol=1e-10)
    # a global the model reads: a changed value is a different function
    (a,), _ = jaxlm.curve_fit(_line(), x, 2.0 * x + 1.0, p0=[1.0])
    assert abs(a - 2.0) > 0.1  # the offset 1 is not in the model while _OFFSET = 0
    monkeypatch.setitem(_line.__globals__, "_OFFSET", 1.0)
    (a,), _ = jaxlm.curve_fit(_line(), x, 2.0 * x + 1.0, p0=[1.0])
    np.testing.assert_allclose(a, 2.0, rtol=1e-10)


def test_a_repeated_call_does_not_check_the_model_again(monkeypatch):
    """The checks before a fit evaluate the model abstractly (its output's shape and
    dtype, whether numpy wrote it), by ``jax.eval_shape``: ~0.3-1 ms each even when JAX
    has the trace cached, a fifth of a call on 10^3 small fits.  Kept per function and
    shapes, a second call with new values (same shapes) asks JAX nothing; a new shape asks
    again; a failing check is not kept: it raises every time."""
    calls = []
    real = jax.eval_shape

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(jax, "eval_shape", counting)

    def residual(p, x, y):
        return p[0] * jnp.exp(-p[1] * x) - y

    def model(x, a, b):
        return a * jnp.exp(-b * x)

    x = np.linspace(0, 3, 20)
    rng = np.random.default_rng(0)
    ys = 2.0 * np.exp(-rng.uniform(0.5, 2.0, 300)[:, None] * x)
    p0 = np.tile([1.0, 1.0], (300, 1))
    for call in (
        lambda x, y: jaxlm.least_squares_batch(residual, p0[: len(y)], (x, y), in_axes=(None, 0)).params,
        lambda x, y: jaxlm.curve_fit(model, x, y[0], p0=[1.0, 1.0])[0],
    ):
        first = np.asarray(call(x, ys))
        assert calls
        calls.clear()
        second = np.asarray(call(x, 1.5 * ys))  # new values, same shapes
        assert calls == []
        np.testing.assert_allclose(second[..., 0], 1.5 * first[..., 0], rtol=1e-6)
        call(x[:15], ys[:290, :15])  # a new shape is checked
        assert calls
        calls.clear()

    def not_real(p, x, y):
        return (p[0] * x > y).astype(jnp.int32)

    for _ in range(2):
        with pytest.raises(ValueError, match="floating-point residuals"):
            jaxlm.least_squares_batch(not_real, p0, (x, ys), in_axes=(None, 0))


def test_the_kept_traces_are_bounded(monkeypatch):
    monkeypatch.setattr(_programs, "MAX_PROGRAMS", 2)
    for m in range(10, 30):
        _programs.eval_shape(lambda x: x * 2, jax.ShapeDtypeStruct((m,), jnp.float32))
    assert len(_programs._shapes) <= 4 * 2


def test_one_off_programs_and_small_loops_compile_with_the_classic_emitters(monkeypatch):
    """On a CPU, programs that run once per call and solver loops on small arguments are
    compiled with XLA's classic kernel emitters (a third less compile time,
    ``benchmarks/first_call.py``), a small program of one problem also without LLVM's
    optimisations; a loop on large arguments keeps XLA's defaults, and under a trace the
    caller's program compiles everything.  Either way a fit gives the same answer,
    scipy's."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    assert _programs._options_work()
    small, large = np.zeros((100, 64)), np.zeros((2000, 64))
    options = _programs._compile_options
    assert options(True, False, (small,)) == "fast" and options(True, False, (large,)) is None
    assert options(False, False, (large,)) == "fast"  # runs once: its compile time counts most
    assert options(True, True, (small,)) == "alone" and options(True, True, (large,)) is None
    traced = []
    jax.jit(lambda a: traced.append(options(False, True, (a,))) or a)(small)
    assert traced == [None]

    x = np.linspace(0.0, 4.0, 50)
    y = 2.5 * np.exp(-1.3 * x) + 0.4 + 0.01 * np.random.default_rng(0).standard_normal(50)

    def model(x, a, k, c):
        return a * jnp.exp(-k * x) + c

    popt, pcov = jaxlm.curve_fit(model, x, y, p0=[1.0, 1.0, 0.0])
    kinds = {key[0].__name__: key[2] for key in _programs._cache}
    assert kinds["fit_batch"] == "alone"
    results = {}
    for kind in ("fast", None):
        with monkeypatch.context() as m:
            m.setattr(
                _programs,
                "_compile_options",
                lambda hot, alone, args, kind=kind: None if _programs.traced(args) else kind,
            )
            results[kind] = jaxlm.curve_fit(model, x, y, p0=[1.0, 1.0, 0.0])
        assert any(key[0].__name__ == "fit_batch" and key[2] == kind for key in _programs._cache)
        np.testing.assert_allclose(popt, results[kind][0], rtol=1e-10)
        np.testing.assert_allclose(pcov, results[kind][1], rtol=1e-8)
    ref, ref_cov = scipy_optimize.curve_fit(
        lambda x, a, k, c: a * np.exp(-k * x) + c, x, y, p0=[1.0, 1.0, 0.0], xtol=1e-14, ftol=1e-14
    )
    np.testing.assert_allclose(popt, ref, rtol=1e-8)
    np.testing.assert_allclose(pcov, ref_cov, rtol=1e-6)


def test_a_compile_option_this_xla_does_not_know_is_dropped_and_the_fit_runs(monkeypatch):
    """No probe is compiled ahead for the options (it cost every process's first fit
    ~20 ms): an XLA that refuses them ("No such compile option") makes jaxlm retry the
    call without, once, and compile without them from then on."""
    monkeypatch.setattr(_programs, "_options_known", [True])
    bogus = {"xla_jaxlm_no_such_option": True}
    monkeypatch.setattr(_programs, "_OPTIONS", {None: None, "fast": bogus, "alone": bogus})
    x = np.linspace(0.0, 3.0, 30)
    y = 1.5 * np.exp(-0.7 * x) + 0.01 * np.cos(9 * x)

    def model(x, a, k):  # a model only this test uses: its programs are compiled here
        return a * jnp.exp(-k * x) + 0.0

    popt, _ = jaxlm.curve_fit(model, x, y, p0=[1.0, 1.0])
    assert not _programs._options_work()
    np.testing.assert_allclose(popt, [1.5, 0.7], rtol=2e-2)
    assert not _programs._unknown_option(ValueError("x0 must hold floating-point arrays"))


FIRST_FIT = r"""
import json, logging, re, sys
import jax, jax.numpy as jnp, numpy as np
import jaxlm
names = []
class Catch(logging.Handler):
    def emit(self, record):
        m = re.search(r"Finished XLA compilation of (\S+)", record.getMessage())
        if m:
            names.append(m.group(1))
logging.getLogger("jax").addHandler(Catch())
x = np.linspace(-5, 5, 64).astype(np.float32)
y = (2 * np.exp(-0.5 * ((x - 0.3) / 0.9) ** 2) + 0.2).astype(np.float32)
gaussian = lambda x, a, mu, s, c: a * jnp.exp(-0.5 * ((x - mu) / s) ** 2) + c
with jax.log_compiles(True):
    popt, pcov = jaxlm.curve_fit(gaussian, x, y, p0=np.array([1.8, 0.2, 1.0, 0.1], np.float32))
print(json.dumps({"programs": names, "scipy": "scipy" in sys.modules, "popt": popt.tolist(),
                  "dtype": str(popt.dtype), "perr": np.sqrt(np.diag(pcov)).tolist()}))
"""


def test_a_first_curve_fit_compiles_one_program_and_imports_no_scipy():
    """A new process's first single ``curve_fit`` compiles its fit and nothing else (no
    program for reading ``fixed``, no probe of the compile options), and never loads
    scipy (jaxlib's LAPACK kernels would: pcov's SVD is numpy's, on the host): each was a
    slice of the first call's latency (``benchmarks/first_call.py``)."""
    out = subprocess.run([sys.executable, "-c", FIRST_FIT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["programs"] == ["jit(fit_batch)"] and not got["scipy"] and got["dtype"] == "float32", got
    np.testing.assert_allclose(got["popt"], [2.0, 0.3, 0.9, 0.2], rtol=1e-4)
    assert np.all(np.isfinite(got["perr"])), got  # noiseless data: tiny but finite errors
