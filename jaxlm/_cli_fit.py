"""``jaxlm fit``: fit every row of a file of curves with a built-in model (public API only)."""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import signal
import sys
import tempfile
import threading
import time
import warnings

import numpy as np

CHUNK = 10_000


class InputError(Exception):
    """Bad input from the command line: reported as one line, exit status 2."""


# the names an .npz array may have for each role, in the order they are looked for
_NPZ_NAMES = {"CURVES": ("y", "ydata", "curves"), "--x": ("x", "xdata"), "--sigma": ("sigma",)}


def load_array(spec: str, what: str, *, header: list | None = None) -> np.ndarray:
    """The array named by ``spec`` (``file.npy``, ``file.npz[:key]``, ``file.csv``).

    An ``.npz`` array is the one named after the colon, else the only array in the file,
    else the one named for its role (``y``/``ydata``/``curves`` for CURVES, ``x``/``xdata``
    for ``--x``, ``sigma`` for ``--sigma``); anything else is refused.  A ``.csv``/``.txt``
    may start with a header row (its names go into ``header`` when given).  Complex,
    non-numeric and empty arrays are errors.
    """
    path, key = spec, None
    if ":" in spec and not pathlib.Path(spec).exists():
        path, key = spec.rsplit(":", 1)
    p = pathlib.Path(path)
    if not p.exists():
        raise InputError(f"{what}: no such file: {path}")
    suffix = p.suffix.lower()
    if key is not None and suffix != ".npz":
        raise InputError(f"{what}: {spec}: only an .npz file holds named arrays")
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as data:
                arr = data[_npz_key(list(data.keys()), key, what, path)]
        elif suffix in (".csv", ".txt"):
            arr = _load_text(p, suffix, header)
            if arr.ndim == 2 and arr.shape[0] == 1 and what != "CURVES":
                arr = arr[0]
        else:
            raise InputError(f"{what}: unsupported file type {suffix!r} (use .npy, .npz or .csv)")
    except InputError:
        raise
    except (ValueError, OSError, EOFError) as err:
        raise InputError(
            f"{what}: cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    if np.iscomplexobj(arr):
        raise InputError(f"{what}: {path} holds complex numbers (dtype {arr.dtype}); jaxlm fits real data")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InputError(f"{what}: {path} does not hold numbers (dtype {arr.dtype})")
    if arr.size == 0:
        raise InputError(f"{what}: {path} holds no values (shape {arr.shape})")
    return arr


def _npz_key(keys, key, what, path):
    if key is not None:
        if key not in keys:
            raise InputError(f"{what}: {path} has no array {key!r} (it holds {', '.join(keys) or 'none'})")
        return key
    if len(keys) == 1:
        return keys[0]
    named = [k for k in _NPZ_NAMES[what] if k in keys]
    if named:
        return named[0]
    raise InputError(
        f"{what}: {path} holds {len(keys)} arrays ({', '.join(keys) or 'none'}); name one as {path}:KEY"
    )


def _load_text(p, suffix, header):
    delimiter = "," if suffix == ".csv" else None
    with open(p) as fh:
        first = fh.readline()
    if not first.strip():
        raise InputError(f"{p}: the file is empty")
    names = None
    try:
        [float(v) for v in first.strip().split(delimiter) if v.strip()]
    except ValueError:  # not numbers: a header row
        names = [v.strip().strip('"') for v in first.strip().split(delimiter)]
    arr = np.loadtxt(p, delimiter=delimiter, ndmin=2, skiprows=1 if names else 0)
    if header is not None and names is not None:
        header.extend(names)
    return arr


def _column(table: np.ndarray, names: list, spec: str) -> int:
    """The index of ``--x-column``: a header name or a 0-based column index."""
    if spec in names:
        return names.index(spec)
    try:
        index = int(spec)
    except ValueError:
        known = f" (the header names {', '.join(names)})" if names else " (the file has no header row)"
        raise InputError(f"--x-column: no column {spec!r}{known}") from None
    if not -table.shape[1] <= index < table.shape[1]:
        raise InputError(f"--x-column: index {index} is outside the table's {table.shape[1]} columns")
    return index % table.shape[1]


def default_x(model, m: int) -> np.ndarray:
    if model.x_dims == 1:
        return np.arange(m, dtype=float)
    side = math.isqrt(m)
    if side * side != m:
        raise InputError(
            f"--x is required: {m} points per curve is not a square image for model {model.name!r}"
        )
    gx, gy = np.meshgrid(np.arange(side, dtype=float), np.arange(side, dtype=float))
    return np.stack([gx.ravel(), gy.ravel()])


def _as_dtype(arr: np.ndarray, dtype, what: str) -> np.ndarray:
    """``arr`` in the working precision; a finite value that would become inf is an error."""
    with np.errstate(over="ignore"):
        out = arr.astype(dtype)
    if np.any(np.isfinite(arr) & ~np.isfinite(out)):
        raise InputError(
            f"{what}: values up to {np.max(np.abs(arr[np.isfinite(arr)])):.3g} do not fit in "
            f"{np.dtype(dtype).name} (they would become inf): use --precision 64 or rescale"
        )
    return out


def _writable(out: pathlib.Path) -> None:
    """Fail now, not after the fit, if the results cannot be written."""
    if out.suffix.lower() not in (".npz", ".csv"):
        raise InputError(f"--out must end in .npz or .csv, got {str(out)!r}")
    if out.is_dir():
        raise InputError(f"--out: {out} is a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".check"):
            pass
    except OSError as err:
        raise InputError(f"--out: cannot write to {out.parent}: {err.strerror or err}") from None


def _read_inputs(args, model, dtype):
    """curves (N, m), x, sigma (None, (m,) or (N, m)), and whether x is one per row."""
    header: list = []
    table = load_array(args.curves, "CURVES", header=header)
    x = None
    if args.x_column is not None:
        if table.ndim != 2:
            raise InputError(f"--x-column needs a 2-D table, CURVES has shape {table.shape}")
        if args.x:
            raise InputError("give x either as --x or as --x-column, not both")
        col = _column(table, header, args.x_column)
        x = table[:, col]
        table = np.delete(table, col, axis=1)
    columns = args.columns or args.x_column is not None
    curves = table.T if columns and table.ndim == 2 else table
    curves = _as_dtype(curves, dtype, "CURVES")
    if curves.ndim == 1:
        curves = curves[None, :]
    if curves.ndim != 2 or curves.shape[1] == 0:
        raise InputError(f"CURVES must be a 2-D array, one curve per row; got shape {curves.shape}")
    n_curves, m = curves.shape
    if args.x:
        x = load_array(args.x, "--x")
    x = _as_dtype(x, dtype, "--x") if x is not None else default_x(model, m).astype(dtype)
    sigma = None
    if args.sigma:
        sigma = _as_dtype(load_array(args.sigma, "--sigma"), dtype, "--sigma")
        if columns and sigma.ndim == 2:
            sigma = sigma.T
        if sigma.shape not in ((m,), (n_curves, m)):
            raise InputError(
                f"--sigma has shape {sigma.shape}; expected ({m},) shared by all curves or "
                f"({n_curves}, {m}), "
                "one row per curve"
            )
    x_per_row = x.ndim >= model.x_dims + 1 and x.shape[0] == n_curves and n_curves > 1
    return curves, x, sigma, x_per_row


def run(args) -> int:
    import jax

    if args.precision == 64:
        jax.config.update("jax_enable_x64", True)  # the user's explicit choice, this process only
    import jaxlm

    dtype = np.float64 if args.precision == 64 else np.float32
    try:
        model = jaxlm.models.get(args.model)
    except ValueError as err:
        raise InputError(f"--model: {err}") from None
    if args.chunk < 1:
        raise InputError("--chunk must be positive")
    out = pathlib.Path(args.out)
    _writable(out)
    curves, x, sigma, x_per_row = _read_inputs(args, model, dtype)
    n_curves, n = curves.shape[0], model.n_params
    options = dict(estimator=args.estimator, loss=args.loss, nan_policy="omit")
    if args.max_steps is not None:
        options["max_steps"] = args.max_steps
    # rows not fitted (an interrupted run) keep NaN results and status RUNNING ("not finished")
    table = {
        "params": np.full((n_curves, n), np.nan, dtype),
        "perr": np.full((n_curves, n), np.nan, dtype),
        "pcov": np.full((n_curves, n, n), np.nan, dtype),
        "chi2": np.full(n_curves, np.nan, dtype),
        "dof": np.zeros(n_curves, np.int32),
        "status": np.full(n_curves, int(jaxlm.Status.RUNNING), np.int32),
    }
    t0 = time.perf_counter()
    done = _fit_chunks(model, curves, x, sigma, x_per_row, options, table, args)
    if done < n_curves:  # Ctrl-C: keep what is finished
        _write_uninterrupted(out, model.param_names, table)
        print(
            f"jaxlm fit: interrupted: {done} of {n_curves} curves fitted and written to {out} "
            f"(the other rows: NaN, status {int(jaxlm.Status.RUNNING)} RUNNING)",
            file=sys.stderr,
        )
        return 130
    elapsed = time.perf_counter() - t0
    interrupted = _write_uninterrupted(out, model.param_names, table)
    statuses, counts = np.unique(table["status"], return_counts=True)
    tally = ", ".join(f"{jaxlm.Status(int(s)).name} {int(c)}" for s, c in zip(statuses, counts, strict=True))
    print(
        f"{n_curves} curves fitted with {model.name} in {elapsed:.2f} s "
        f"({n_curves / elapsed:,.0f} fits/s): {tally} -> {out}"
    )
    if interrupted:
        print(
            f"jaxlm fit: interrupted while writing; the results were written whole to {out}", file=sys.stderr
        )
        return 130
    return 0


def _fit_chunks(model, curves, x, sigma, x_per_row, options, table, args) -> int:
    """Fit the curves into ``table`` with ``jaxlm.fit`` in chunks of ``--chunk``; return
    how many rows are finished (all of them, unless Ctrl-C stopped it: the rows after
    are then not fitted: NaN, status RUNNING)."""
    import jaxlm

    n_curves = curves.shape[0]
    progress = args.progress or (args.progress is None and n_curves > args.chunk)
    if progress and not _has_tqdm():
        if args.progress:
            raise InputError("--progress needs tqdm: pip install 'jaxlm[cli]' (or tqdm)")
        progress = False
    try:
        with warnings.catch_warnings():  # a covariance that cannot be estimated: inf in perr
            warnings.filterwarnings("ignore", message="Covariance of the parameters")
            res = jaxlm.fit(
                model,
                x,
                curves,
                sigma=sigma,
                xdata_batched=x_per_row,
                sigma_batched=None if sigma is None else sigma.ndim == 2,
                chunk_size=args.chunk,
                progress=progress,
                **options,
            )
        done = n_curves
    except jaxlm.Interrupted as stop:  # Ctrl-C: keep the finished chunks
        res, done = stop.result, stop.n_done
    except (ValueError, TypeError) as err:
        raise InputError(str(err).splitlines()[0]) from None
    if res is not None:
        for key in table:
            table[key][:done] = np.asarray(getattr(res, key))[:done]
    return done


def _has_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def _write_uninterrupted(out: pathlib.Path, names, table) -> bool:
    """Write the results whole; a Ctrl-C meanwhile is held until they are (returns
    whether one came).  With :func:`write_results` writing a temporary file renamed over
    ``out`` at the end, ``out`` is never seen half-written and a previous result there
    survives any failure."""
    caught = []
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main_thread else None
    if main_thread:
        signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        write_results(out, names, table)
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    return bool(caught)


def write_results(out: pathlib.Path, names, table) -> None:
    """Write ``out`` (.npz or .csv, under exactly that name) atomically.

    Both hold per curve the parameters, their errors, chi2, dof, the status code, its
    name and whether it is a success; the .npz also ``pcov`` (N, n, n) and ``param_names``.
    The CSV's columns: ``name…, name_err…, chi2, dof, status, status_name, success``."""
    from jaxlm import Status, is_success

    status = np.asarray(table["status"])
    names_of = np.array([Status(int(c)).name for c in range(max(Status) + 1)])
    status_name = names_of[np.clip(status, 0, len(names_of) - 1)]
    success = np.asarray(is_success(status))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if out.suffix.lower() == ".npz":
                np.savez(fh, param_names=np.asarray(names), status_name=status_name, success=success, **table)
            else:
                header = [
                    *names,
                    *(f"{n}_err" for n in names),
                    "chi2",
                    "dof",
                    "status",
                    "status_name",
                    "success",
                ]
                numbers = np.column_stack([table["params"], table["perr"], table["chi2"]])
                cells = [
                    np.char.mod("%.17g", numbers),
                    np.char.mod("%d", np.column_stack([table["dof"], status])),
                ]
                cells += [status_name[:, None], np.where(success, "true", "false")[:, None]]
                np.savetxt(
                    fh, np.hstack(cells), delimiter=",", header=",".join(header), comments="", fmt="%s"
                )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_results(path):
    """Read a results file written by ``jaxlm fit`` into a dict of arrays."""
    p = pathlib.Path(path)
    if p.suffix.lower() == ".npz":
        with np.load(p, allow_pickle=False) as data:
            return {k: data[k] for k in data.keys()}
    with open(p) as fh:
        header = fh.readline().strip().split(",")
    n = (len(header) - 5) // 2
    values = np.loadtxt(p, delimiter=",", skiprows=1, ndmin=2, usecols=range(2 * n + 3))
    words = np.loadtxt(p, delimiter=",", skiprows=1, ndmin=2, usecols=(2 * n + 3, 2 * n + 4), dtype=str)
    return {
        "param_names": np.asarray(header[:n]),
        "params": values[:, :n],
        "perr": values[:, n : 2 * n],
        "chi2": values[:, 2 * n],
        "dof": values[:, 2 * n + 1].astype(int),
        "status": values[:, 2 * n + 2].astype(int),
        "status_name": words[:, 0],
        "success": words[:, 1] == "true",
    }
