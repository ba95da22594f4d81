"""The GPU benchmark script stays runnable: its ``--tiny`` mode runs every step (throughput,
one chunked call, scaling over devices) on 2 simulated CPU devices and writes its tables."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_gpu_benchmark_runs_every_step_in_tiny_mode(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert [r["problem"] for r in data["throughput"]] == ["gpufit5", "gpufit5-10it"]
    for r in data["throughput"]:
        assert r["fits_per_s"] > 0 and r["converged"] > 0.99 and r["executed_over_needed"] >= 1
    chunk = data["chunked"]
    assert (
        chunk["n"] > chunk["chunk_size"] and chunk["converged"] > 0.99 and chunk["results_are"] == "ndarray"
    )
    assert [r["devices"] for r in data["scaling"]] == [1, 2] and data["scaling"][0]["speedup"] == 1
    table = out.with_suffix(".md").read_text()
    assert "3.0–4.0 M fits/s" in table and "| 2 | 4,000 |" in table
