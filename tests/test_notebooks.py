"""Every notebook in notebooks/ runs top to bottom in its reduced-size mode.

Each notebook is executed in a fresh Jupyter kernel (nbclient, the engine behind
``jupyter execute``) with ``JAXLM_NOTEBOOK_QUICK=1`` and its own directory as the
working directory, as a user runs it; the committed file (with the outputs of its
full-size run) is not modified.  A cell that raises — including the notebooks' own
``assert`` checks of what they claim — fails the notebook's test, and every notebook
must draw at least one figure.  The committed outputs must come from an error-free run.

The kernels run two at a time (most of a quick run is single-threaded compilation, and
CI has two cores).  A quick-mode cell takes well under a minute; one still running after
``STACKS_AFTER`` seconds gets its kernel's Python stacks dumped (faulthandler) into the
test's failure report, so that a hang says where it hangs.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import tempfile

import nbclient
import nbformat
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CONCURRENT_KERNELS = 2
CELL_TIMEOUT = 300
STACKS_AFTER = 240


def _outputs(nb):
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def _figures(nb):
    return [out for out in _outputs(nb) if "image/png" in out.get("data", {})]


async def _execute_all(paths):
    """Run every notebook in quick mode; return {path: executed notebook or exception}."""
    gate = asyncio.Semaphore(CONCURRENT_KERNELS)

    async def one(path):
        nb = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(
            nb,
            timeout=CELL_TIMEOUT,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        with tempfile.NamedTemporaryFile("r", suffix=".stacks") as stacks:
            # a first cell (in this in-memory copy only) arms the dump; a timer fires it
            nb.cells.insert(
                0,
                nbformat.v4.new_code_cell(
                    "import faulthandler, signal\n"
                    f"_stacks = open({stacks.name!r}, 'w')\n"
                    "faulthandler.register(signal.SIGUSR1, file=_stacks, all_threads=True)"
                ),
            )
            timers = []

            def dump_stacks():
                os.kill(client.km.provisioner.process.pid, signal.SIGUSR1)

            def cell_start(cell, cell_index):
                while timers:
                    timers.pop().cancel()
                if cell.cell_type == "code":
                    timers.append(asyncio.get_running_loop().call_later(STACKS_AFTER, dump_stacks))

            client.on_cell_start = cell_start
            async with gate:
                try:
                    await client.async_execute()
                except Exception as err:  # reported by that notebook's test
                    if dumped := stacks.read():
                        err.add_note(
                            f"the kernel's Python stacks after {STACKS_AFTER} s in the cell:\n{dumped}"
                        )
                    return err
                finally:
                    while timers:
                        timers.pop().cancel()
            del nb.cells[0]
        return nb

    results = await asyncio.gather(*(one(p) for p in paths))
    return dict(zip(paths, results, strict=True))


QUICK_ENV = {
    "JAXLM_NOTEBOOK_QUICK": "1",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # ipykernel's debugger warns otherwise
}


@pytest.fixture(scope="module")
def quick_runs():
    saved = {key: os.environ.get(key) for key in QUICK_ENV}
    os.environ.update(QUICK_ENV)  # the kernels inherit the environment at launch
    try:
        yield asyncio.run(_execute_all(NOTEBOOKS))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_there_are_five_notebooks():
    assert len(NOTEBOOKS) == 5, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_has_its_full_run(path):
    nb = nbformat.read(path, as_version=4)
    # the Colab cell installs a checkout the user uploads: no repository URL that does not exist
    install = nb.cells[1].source
    assert "google.colab" in install and "CHECKOUT" in install and "pip" in install
    assert "github.com" not in nb.cells[0].source + install
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), f"{path.name} is committed without its full run"
    assert not [o for o in _outputs(nb) if o.get("output_type") == "error"]
    assert _figures(nb), f"{path.name}: the committed run shows no figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(path, quick_runs):
    result = quick_runs[path]
    if isinstance(result, Exception):
        raise result  # CellExecutionError names the cell and shows its traceback
    assert _figures(result), f"{path.name} drew no figure in quick mode"
