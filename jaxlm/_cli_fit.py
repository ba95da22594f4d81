"""``jaxlm fit``: fit every row of a file of curves with a built-in model (public API only)."""

from __future__ import annotations

import math
import pathlib
import sys
import time

import numpy as np

CHUNK = 10_000


class InputError(Exception):
    """Bad input from the command line: reported as one line, exit status 2."""


def load_array(path: str, what: str) -> np.ndarray:
    p = pathlib.Path(path)
    if not p.exists():
        raise InputError(f"{what}: no such file: {path}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as data:
                keys = list(data.keys())
                key = next((k for k in ("y", "ydata", "curves", "x", "sigma") if k in keys), None)
                if key is None and len(keys) == 1:
                    key = keys[0]
                if key is None:
                    raise InputError(f"{what}: {path} holds several arrays ({', '.join(keys)}); keep one")
                arr = data[key]
        elif suffix in (".csv", ".txt"):
            arr = np.loadtxt(p, delimiter="," if suffix == ".csv" else None, ndmin=2)
            if arr.shape[0] == 1 and what != "CURVES":
                arr = arr[0]
        else:
            raise InputError(f"{what}: unsupported file type {suffix!r} (use .npy, .npz or .csv)")
    except InputError:
        raise
    except (ValueError, OSError) as err:
        raise InputError(f"{what}: cannot read {path}: {err}") from None
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{what}: {path} does not hold numbers (dtype {arr.dtype})")
    return arr


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


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: fall back to a plain counter
        return _PlainProgress(total)
    return tqdm(total=total, unit="fit", desc="fitting", file=sys.stderr)


class _PlainProgress:
    def __init__(self, total):
        self.total, self.done, self.t0 = total, 0, time.perf_counter()

    def update(self, k):
        self.done += k
        rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
        print(f"\rfitting {self.done}/{self.total} ({rate:,.0f} fits/s)", end="", file=sys.stderr)

    def set_postfix_str(self, text):
        pass

    def close(self):
        print(file=sys.stderr)


def run(args) -> int:
    import jax

    if args.precision == 64:
        jax.config.update("jax_enable_x64", True)  # the user's explicit choice, this process only
    import jax.numpy as jnp

    import jaxlm

    dtype = np.float64 if args.precision == 64 else np.float32
    try:
        model = jaxlm.models.get(args.model)
    except ValueError as err:
        raise InputError(f"--model: {err}") from None
    curves = load_array(args.curves, "CURVES").astype(dtype)
    if curves.ndim == 1:
        curves = curves[None, :]
    if curves.ndim != 2 or curves.shape[1] == 0:
        raise InputError(f"CURVES must be a 2-D array, one curve per row; got shape {curves.shape}")
    n_curves, m = curves.shape
    x = load_array(args.x, "--x").astype(dtype) if args.x else default_x(model, m).astype(dtype)
    sigma = load_array(args.sigma, "--sigma").astype(dtype) if args.sigma else None
    x_per_row = x.ndim >= model.x_dims + 1 and x.shape[0] == n_curves and n_curves > 1
    sigma_per_row = sigma is not None and sigma.ndim == 2
    out = pathlib.Path(args.out)
    if out.suffix.lower() not in (".npz", ".csv"):
        raise InputError(f"--out must end in .npz or .csv, got {args.out!r}")
    if args.chunk < 1:
        raise InputError("--chunk must be positive")

    chunk = min(args.chunk, n_curves)
    options = dict(estimator=args.estimator, loss=args.loss, nan_policy="omit")
    if args.max_steps is not None:
        options["max_steps"] = args.max_steps
    names = model.param_names
    results = {k: [] for k in ("params", "perr", "chi2", "dof", "status")}
    bar = _progress(n_curves, args.progress or (args.progress is None and n_curves > chunk))
    converged = 0
    t0 = time.perf_counter()
    for start in range(0, n_curves, chunk):
        stop = min(start + chunk, n_curves)
        rows = np.arange(start, stop)
        if stop - start < chunk:  # pad the last chunk: the same shapes, no recompilation
            rows = np.concatenate([rows, np.full(chunk - (stop - start), stop - 1)])
        xs = x[rows] if x_per_row else x
        sig = sigma[rows] if sigma_per_row else sigma
        try:
            res = jaxlm.fit(model, jnp.asarray(xs), jnp.asarray(curves[rows]), sigma=sig, **options)
        except (ValueError, TypeError) as err:
            raise InputError(str(err).splitlines()[0]) from None
        k = stop - start
        for key in results:
            results[key].append(np.asarray(getattr(res, key))[:k])
        if bar is not None:
            bar.update(k)
            converged += int(np.sum(np.asarray(res.success)[:k]))
            bar.set_postfix_str(f"converged {converged}/{stop}")
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0
    table = {key: np.concatenate(v) for key, v in results.items()}
    write_results(out, names, table)
    statuses, counts = np.unique(table["status"], return_counts=True)
    tally = ", ".join(f"{jaxlm.Status(int(s)).name} {int(c)}" for s, c in zip(statuses, counts, strict=True))
    print(
        f"{n_curves} curves fitted with {model.name} in {elapsed:.2f} s "
        f"({n_curves / elapsed:,.0f} fits/s): {tally} -> {out}"
    )
    return 0


def write_results(out: pathlib.Path, names, table) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npz":
        np.savez(out, param_names=np.asarray(names), **table)
        return
    header = [*names, *(f"{n}_err" for n in names), "chi2", "dof", "status"]
    columns = np.column_stack([table["params"], table["perr"], table["chi2"], table["dof"], table["status"]])
    fmt = ["%.10g"] * (2 * len(names) + 1) + ["%d", "%d"]
    np.savetxt(out, columns, delimiter=",", header=",".join(header), comments="", fmt=fmt)


def read_results(path):
    """Read a results file written by ``jaxlm fit`` into a dict of arrays."""
    p = pathlib.Path(path)
    if p.suffix.lower() == ".npz":
        with np.load(p, allow_pickle=False) as data:
            return {k: data[k] for k in data.keys()}
    with open(p) as fh:
        header = fh.readline().strip().split(",")
    values = np.loadtxt(p, delimiter=",", skiprows=1, ndmin=2)
    names = [h for h in header if h not in ("chi2", "dof", "status") and not h.endswith("_err")]
    n = len(names)
    return {
        "param_names": np.asarray(names),
        "params": values[:, :n],
        "perr": values[:, n : 2 * n],
        "chi2": values[:, 2 * n],
        "dof": values[:, 2 * n + 1].astype(int),
        "status": values[:, 2 * n + 2].astype(int),
    }
