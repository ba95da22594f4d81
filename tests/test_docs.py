"""Every Python code block of the README (and of docs/*.md) runs as written.

A file's blocks run in order in one fresh interpreter, as a reader pasting them one after
the other would run them: in a temporary directory (figures land there), with HOME and
the cache directory there too (the README's persistent-cache block writes under ~), and
without the suite's x64 and strict-promotion settings (a new user has neither).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(path: pathlib.Path) -> list[str]:
    return BLOCK.findall(path.read_text())


def test_the_readme_shows_the_api_in_runnable_blocks():
    assert len(blocks(ROOT / "README.md")) >= 8


@pytest.mark.parametrize("path", [p for p in DOCS if blocks(p)], ids=lambda p: p.name)
def test_code_blocks_run_as_written(path, tmp_path):
    code = "\n\n".join(blocks(path))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"), MPLBACKEND="Agg")
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"{path.name}:\n{done.stderr[-4000:]}"
    if path.name == "README.md":
        assert (tmp_path / "fits.png").stat().st_size > 10_000 and (tmp_path / "first_fit.png").exists()
        assert "[[Fit Statistics]]" in done.stdout and "[[Batch]]" in done.stdout
