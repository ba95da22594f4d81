"""The fit's dtype follows the data, as in scipy, whether or not the caller enabled x64.

The test process runs with x64 on (conftest.py); the x64-off cases run in a fresh
interpreter, where JAX's default float is float32 and the caller's configuration must
come back untouched."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import jaxlm

# A peak in time: MJD timestamps near 59 000 days, a width of 40 minutes.  float32 holds
# such a timestamp to 59000·6e-8 days ≈ 5 minutes, which is what made x64-off fits wrong.
PROBLEM = """
import jax.numpy as jnp, numpy as np

def peak(t, a, t0, w, c):
    return a * jnp.exp(-0.5 * ((t - t0) / w) ** 2) + c

def peak_np(t, a, t0, w, c):  # a numpy model: evaluated on the host (jaxlm._fitting._host)
    return a * np.exp(-0.5 * ((t - t0) / w) ** 2) + c

rng = np.random.default_rng(0)
t = 59000.0 + np.linspace(0.0, 1.0, 120)
true = (3.0, 59000.45, 0.028, 0.2)
y = true[0] * np.exp(-0.5 * ((t - true[1]) / true[2]) ** 2) + true[3] + 0.05 * rng.standard_normal(t.size)
p0 = [2.5, 59000.44, 0.03, 0.0]
tight = dict(ftol=1e-15, xtol=1e-15, gtol=1e-15)
"""

SCRIPT = PROBLEM + textwrap.dedent(
    """
    import json
    import jax
    import jaxlm

    out = {"x64_before": bool(jax.config.jax_enable_x64)}
    popt, pcov = jaxlm.curve_fit(peak, t, y, p0=p0, **tight)
    out["f64_types"] = [type(popt).__name__, str(popt.dtype), type(pcov).__name__, str(pcov.dtype)]
    out["popt"], out["pcov"] = popt.tolist(), pcov.tolist()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        popt_np, _ = jaxlm.curve_fit(peak_np, t, y, p0=p0)
    out["popt_np"], out["np_dtype"] = popt_np.tolist(), str(popt_np.dtype)
    res = jaxlm.fit(peak, t, np.stack([y, y]), p0, **tight)
    floats = [v for v in jax.tree_util.tree_leaves(res) if v.dtype.kind == "f"]
    out["fit_types"] = sorted({f"{type(v).__name__}:{v.dtype}" for v in floats})
    out["fit_same"] = bool(np.allclose(res.params[0], popt, rtol=1e-12))
    driven = jaxlm.fit(peak, t, np.stack([y, y, y]), p0, chunk_size=2, **tight)  # through the driver
    out["driven_same"] = bool(np.allclose(driven.params, popt, rtol=1e-12))
    out["driven_dtype"] = str(driven.params.dtype)
    # float32 data stay float32, as numpy arrays or JAX arrays
    for name, (tt, yy) in {
        "np32": (t.astype(np.float32), y.astype(np.float32)),
        "jax32": (jnp.asarray(t), jnp.asarray(y)),  # x64 off: float32 arrays
    }.items():
        out[name] = str(jaxlm.fit("gaussian", tt - tt[0], yy).params.dtype)
    # under jit the trace's precision rules (float32 here)
    jitted = jax.jit(lambda yy: jaxlm.fit("gaussian", jnp.asarray(t - t[0]), yy).params)
    out["jit"] = str(jitted(y).dtype)
    out["x64_after"] = bool(jax.config.jax_enable_x64)
    out["default_after"] = str(jnp.zeros(1).dtype)
    print(json.dumps(out))
    """
)


def test_float64_data_are_fitted_in_float64_with_x64_off():
    """The MJD peak: with x64 off the result is what x64 on gives (float32 would hold
    the timestamps to ~5 minutes against a 40-minute width), at a cost no worse than
    scipy's on the same data, and the caller's configuration is unchanged."""
    env = {"JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu", "PATH": ""}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["x64_before"] is False
    assert out["f64_types"] == ["ndarray", "float64", "ndarray", "float64"]
    space = {}
    exec(PROBLEM, space)  # this process has x64 on (conftest.py)
    t, y, p0, peak = space["t"], space["y"], space["p0"], space["peak"]
    popt, pcov = jaxlm.curve_fit(peak, t, y, p0=p0, **space["tight"])
    np.testing.assert_allclose(out["popt"], popt, rtol=1e-12)
    np.testing.assert_allclose(out["pcov"], pcov, rtol=1e-8)
    # a numpy model's values cross JAX's callback thread (x64 off there) unnarrowed
    with pytest.warns(UserWarning, match="cannot be traced"):
        popt_np, _ = jaxlm.curve_fit(space["peak_np"], t, y, p0=p0)
    assert out["np_dtype"] == "float64"
    np.testing.assert_allclose(out["popt_np"], popt_np, rtol=1e-12)

    def cost(p):
        return float(np.sum((np.asarray(peak(t, *p)) - y) ** 2))

    ref, _ = so.curve_fit(lambda t, *p: np.asarray(peak(t, *p)), t, y, p0=p0, **space["tight"])
    assert cost(out["popt"]) <= cost(ref) * (1 + 1e-12)
    assert out["fit_types"] == ["ndarray:float64"] and out["fit_same"]
    assert out["driven_same"] and out["driven_dtype"] == "float64"
    assert out["np32"] == "float32" and out["jax32"] == "float32" and out["jit"] == "float32"
    assert out["x64_after"] is False and out["default_after"] == "float32"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_with_x64_on_the_data_dtype_is_kept(dtype):
    x = np.linspace(-3, 3, 40).astype(dtype)
    y = (2.0 * np.exp(-0.5 * ((x - 0.3) / 0.7) ** 2) + 0.1).astype(dtype)
    res = jaxlm.fit("gaussian", x, y)
    assert res.params.dtype == dtype and res.pcov.dtype == dtype
    assert isinstance(res.params, jax.Array)  # nothing is converted when x64 is on
    # noise-free data: the truth is the minimum
    np.testing.assert_allclose(res.params, [2.0, 0.3, 0.7, 0.1], rtol=1e-4 if dtype == np.float32 else 1e-10)
    assert jnp.zeros(1).dtype == jnp.float64
