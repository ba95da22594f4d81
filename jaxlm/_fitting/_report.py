"""What people read of a :class:`FitResult`: its repr, ``report()`` (lmfit's ``fit_report``
for one fit, an overview for a batch), ``summary()`` and the table of ``to_dict()``.

Everything here runs on the host with numpy, after the fit; a traced result (inside
``jit``/``vmap``/``grad``) shows only its shape.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from jaxlm._status import Status


def _traced(res) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(res))


def _names(res) -> tuple[str, ...]:
    n = np.shape(res.params)[-1]
    return res.param_names if len(res.param_names) == n else tuple(f"p{i}" for i in range(n))


def _status_name(code: int) -> str:
    try:
        return Status(int(code)).name
    except ValueError:
        return f"UNKNOWN({int(code)})"


def _status_counts(status: np.ndarray) -> dict[str, int]:
    codes, counts = np.unique(np.asarray(status).ravel(), return_counts=True)
    return {_status_name(c): int(k) for c, k in zip(codes, counts, strict=True)}


def short(res) -> str:
    """A compact repr: one fit's values ± errors and status, or a batch's tally."""
    names = _names(res)
    shape = res.batch_shape
    if _traced(res):
        return f"FitResult(traced, batch_shape={shape}, params=[{', '.join(names)}])"
    dtype = np.asarray(res.params).dtype
    if shape == ():
        values = ", ".join(
            f"{k}={_g(v)}±{_g(e)}"
            for k, v, e in zip(names, np.asarray(res.params), np.asarray(res.perr), strict=True)
        )
        return (
            f"FitResult({_status_name(res.status)}, {values}, chi2={_g(res.chi2)}, dof={int(res.dof)}, "
            f"{dtype})"
        )
    counts = ", ".join(f"{k} {v}" for k, v in _status_counts(res.status).items())
    ok = int(np.sum(np.asarray(res.success)))
    return (
        f"FitResult({math.prod(shape)} fits, batch_shape={shape}: {ok} converged ({counts}); "
        f"params=[{', '.join(names)}], {dtype})"
    )


def _g(v, digits: int = 6) -> str:
    return f"{float(v):.{digits}g}"


def summary(res) -> dict:
    """One fit: its numbers; a batch: success rate, status counts and the distribution
    (median, 5 %, 95 % over the converged fits) of each parameter and its error."""
    if _traced(res):
        raise TypeError("summary() needs a concrete result, not one traced inside jit/vmap/grad")
    names = _names(res)
    if res.batch_shape == ():
        status = Status(int(res.status)) if int(res.status) in Status._value2member_map_ else None
        correl = np.asarray(res.correl)
        return {
            "status": _status_name(res.status),
            "message": status.message if status is not None else "unknown status",
            "success": bool(res.success),
            "params": {k: float(v) for k, v in zip(names, np.asarray(res.params), strict=True)},
            "errors": {k: float(v) for k, v in zip(names, np.asarray(res.perr), strict=True)},
            "correlations": {
                (names[i], names[j]): float(correl[i, j])
                for i in range(len(names))
                for j in range(i + 1, len(names))
            },
            "n_points": int(res.n_points),
            "n_varys": int(res.n_varys),
            "dof": int(res.dof),
            "chi2": float(res.chi2),
            "redchi": float(res.redchi),
            "aic": float(res.aic),
            "bic": float(res.bic),
            "rsquared": float(res.rsquared),
            "n_steps": int(res.n_steps),
            "n_fev": int(res.n_fev),
        }
    success = np.asarray(res.success).ravel()
    n_params = len(names)
    params = np.asarray(res.params).reshape(-1, n_params)[success]
    errors = np.asarray(res.perr).reshape(-1, n_params)[success]
    return {
        "n_fits": int(success.size),
        "n_success": int(success.sum()),
        "success_rate": float(success.mean()) if success.size else math.nan,
        "status_counts": _status_counts(res.status),
        "params": {k: _spread(params[:, i]) for i, k in enumerate(names)},
        "errors": {k: _spread(errors[:, i]) for i, k in enumerate(names)},
        "redchi": _spread(np.asarray(res.redchi).ravel()[success]),
        "rsquared": _spread(np.asarray(res.rsquared).ravel()[success]),
        "n_steps": _spread(np.asarray(res.n_steps).ravel()),
    }


def _spread(values: np.ndarray) -> dict[str, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"median": math.nan, "p05": math.nan, "p95": math.nan}
    p05, median, p95 = np.percentile(values, [5, 50, 95])
    return {"median": float(median), "p05": float(p05), "p95": float(p95)}


def report(res, min_correl: float = 0.1) -> str:
    s = summary(res)
    if res.batch_shape == ():
        return _report_one(s, min_correl)
    return _report_batch(res, s)


def _report_one(s: dict, min_correl: float) -> str:
    lines = [
        "[[Fit Statistics]]",
        f"    status             = {s['status']} ({s['message']})",
        f"    # function evals   = {s['n_fev']}",
        f"    # data points      = {s['n_points']}",
        f"    # variables        = {s['n_varys']}",
        f"    chi-square         = {_g(s['chi2'], 8)}",
        f"    reduced chi-square = {_g(s['redchi'], 8)}",
        f"    Akaike info crit   = {_g(s['aic'], 8)}",
        f"    Bayesian info crit = {_g(s['bic'], 8)}",
        f"    R-squared          = {_g(s['rsquared'], 8)}",
        "[[Variables]]",
    ]
    width = max(map(len, s["params"]))
    for k, v in s["params"].items():
        e = s["errors"][k]
        rel = f" ({abs(e / v):.2%})" if v != 0 and math.isfinite(e) else ""
        lines.append(f"    {k + ':':<{width + 1}} {_g(v, 8)} +/- {_g(e, 8)}{rel}")
    correl = sorted(
        ((pair, c) for pair, c in s["correlations"].items() if abs(c) > min_correl),
        key=lambda item: -abs(item[1]),
    )
    if correl:
        lines.append(f"[[Correlations]] (unreported correlations are < {min_correl:.3f})")
        for (a, b), c in correl:
            lines.append(f"    C({a}, {b}) = {c:+.4f}")
    return "\n".join(lines)


def _report_batch(res, s: dict) -> str:
    lines = [
        "[[Batch]]",
        f"    fits               = {s['n_fits']} (batch shape {res.batch_shape})",
        f"    converged          = {s['n_success']} ({s['success_rate']:.1%})",
        "    statuses           = " + ", ".join(f"{k} {v}" for k, v in s["status_counts"].items()),
        f"    steps              = {_describe(s['n_steps'])}",
        f"    reduced chi-square = {_describe(s['redchi'])}",
        f"    R-squared          = {_describe(s['rsquared'])}",
        "[[Variables]] (over the converged fits: median [5 %, 95 %])",
    ]
    width = max(map(len, s["params"]))
    for k in s["params"]:
        lines.append(
            f"    {k + ':':<{width + 1}} {_describe(s['params'][k])}   error {_describe(s['errors'][k])}"
        )
    return "\n".join(lines)


def _describe(spread: dict[str, float]) -> str:
    return f"{_g(spread['median'], 5)} [{_g(spread['p05'], 5)}, {_g(spread['p95'], 5)}]"


_STATISTICS = ("chi2", "redchi", "dof", "n_points", "aic", "bic", "rsquared")
_COUNTS = ("status", "success", "n_steps", "n_fev")


def columns(res) -> dict[str, np.ndarray]:
    if _traced(res):
        raise TypeError("to_dict() needs a concrete result, not one traced inside jit/vmap/grad")
    names = _names(res)
    n = len(names)
    params = np.asarray(res.params).reshape(-1, n)
    perr = np.asarray(res.perr).reshape(-1, n)
    table: dict[str, np.ndarray] = {}
    for i, k in enumerate(names):
        k = f"param_{k}" if k in _STATISTICS + _COUNTS else k  # a parameter called "chi2" keeps its column
        table[k] = params[:, i]
        table[f"{k}_err"] = perr[:, i]
    for field in _STATISTICS:
        table[field] = np.asarray(getattr(res, field)).ravel()
    table["status"] = np.array([_status_name(c) for c in np.asarray(res.status).ravel()], dtype=object)
    for field in _COUNTS[1:]:
        table[field] = np.asarray(getattr(res, field)).ravel()
    return table
