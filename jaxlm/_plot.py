"""``jaxlm.plot``: data, fit and residuals of one fit; a few fits and the distribution of
each parameter for a batch.  matplotlib is an optional dependency, imported on call."""

from __future__ import annotations

import math

import numpy as np

from jaxlm._status import Status


def plot(result, x, y, f, *, sigma=None, which=None, n_show: int = 6, bins: int = 40, figsize=None):
    """Draw a :class:`jaxlm.FitResult` against its data; returns the matplotlib Figure.

    One fit (``result.batch_shape == ()``): the data (with error bars when ``sigma`` is
    given), the fitted curve and a table of the parameters with their errors; below, the
    residuals ``y − f`` (``(y − f)/σ`` with ``sigma``).  A batch: up to ``n_show`` fits
    (``which``: their flat indices, default spread over the batch) with their statuses, and
    a histogram of each parameter over the converged fits.

    Args:
      result: what :func:`jaxlm.fit` returned for ``x``, ``y``.
      x: the fit's xdata, shared ``(m,)`` or one per fit ``(..., m)``; for 2-D points
        ``(2, m)`` the data are drawn against the point index.
      y: the fit's ydata ``(m,)`` or ``(..., m)``.
      f: the model that was fitted (a function, a :class:`jaxlm.models.Model` or its name).
      sigma: per-point standard deviations ``(m,)`` or ``(..., m)``, if the fit had them.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("jaxlm.plot needs matplotlib (pip install matplotlib)") from None
    from jaxlm.models import Model, get

    model = get(f) if isinstance(f, str) else f
    fn = model.fn if isinstance(model, Model) else model
    x_dims = model.x_dims if isinstance(model, Model) else 1
    if not callable(fn):
        raise TypeError(f"f must be the fitted model (callable, Model or name), got {type(f).__name__}")
    y = np.asarray(y)
    params = np.asarray(result.params)
    if params.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"y has shape {y.shape}; the result is for a batch of shape {params.shape[:-1]}")
    names = result.param_names or tuple(f"p{i}" for i in range(params.shape[-1]))
    if result.batch_shape == ():
        fig = plt.figure(figsize=figsize or (10, 5.5))
        _one(fig, fn, np.asarray(x), y, sigma, result, names, x_dims)
        return fig
    return _batch(plt, fn, np.asarray(x), y, sigma, result, names, x_dims, which, n_show, bins, figsize)


def _curve(fn, x, params, x_dims):
    """The abscissa to draw and the model on it: a fine grid for a 1-D x, else the data's."""
    if x_dims == 1 and x.ndim == 1 and x.size > 1:
        fine = np.linspace(np.nanmin(x), np.nanmax(x), 400).astype(x.dtype)
        try:
            return fine, np.asarray(fn(fine, *params))
        except Exception:  # noqa: BLE001 - a model tied to the data's length: draw on the data's x
            pass
    return _abscissa(x, x_dims), np.asarray(fn(x, *params))


def _abscissa(x, x_dims):
    return x if x_dims == 1 and x.ndim == 1 else np.arange(x.shape[-1])


def _one(fig, fn, x, y, sigma, result, names, x_dims):
    grid = fig.add_gridspec(2, 2, height_ratios=(3, 1), width_ratios=(3, 1.4))
    top = fig.add_subplot(grid[0, 0])
    bottom = fig.add_subplot(grid[1, 0], sharex=top)
    table = fig.add_subplot(grid[:, 1])
    table.axis("off")
    params = np.asarray(result.params)
    at = _abscissa(x, x_dims)
    fitted = np.asarray(fn(x, *params))
    if sigma is None:
        top.plot(at, y, ".", color="C0", label="data")
        residual, label = y - fitted, "y − f"
    else:
        top.errorbar(at, y, yerr=np.broadcast_to(sigma, y.shape), fmt=".", color="C0", label="data")
        residual, label = (y - fitted) / np.asarray(sigma), "(y − f)/σ"
    xf, yf = _curve(fn, x, params, x_dims)
    top.plot(xf, yf, "-", color="C1", label="fit")
    lines = [
        f"{k} = {v:.4g} ± {e:.2g}" for k, v, e in zip(names, params, np.asarray(result.perr), strict=True)
    ]
    lines += [
        "",
        _status(result.status),
        f"χ²/dof = {float(result.redchi):.4g}",
        f"R² = {float(result.rsquared):.6g}",
    ]
    table.text(0, 1, "\n".join(lines), transform=table.transAxes, va="top", fontsize=8, family="monospace")
    top.legend(loc="upper right")
    top.set_ylabel("y")
    bottom.axhline(0, color="0.5", lw=0.8)
    bottom.plot(at, residual, ".", color="C0")
    bottom.set(xlabel="x" if at is x else "point", ylabel=label)
    fig.tight_layout()


def _batch(plt, fn, x, y, sigma, result, names, x_dims, which, n_show, bins, figsize):
    flat_y = y.reshape(-1, y.shape[-1])
    size = flat_y.shape[0]
    per_fit_x = x.ndim == len(result.batch_shape) + x_dims
    flat_x = x.reshape((size,) + x.shape[len(result.batch_shape) :]) if per_fit_x else None
    params = np.asarray(result.params).reshape(size, -1)
    status = np.asarray(result.status).reshape(size)
    success = np.asarray(result.success).reshape(size)
    shown = np.linspace(0, size - 1, min(n_show, size)).astype(int) if which is None else np.ravel(which)
    n_params = params.shape[1]
    cols = max(3, min(4, n_params))
    fit_rows, hist_rows = math.ceil(len(shown) / cols), math.ceil(n_params / cols)
    fig = plt.figure(figsize=figsize or (3.2 * cols, 2.6 * (fit_rows + hist_rows)))
    axes = fig.subplots(fit_rows + hist_rows, cols, squeeze=False)
    for ax, i in zip(axes[:fit_rows].ravel(), shown, strict=False):
        xi = flat_x[i] if per_fit_x else x
        at = _abscissa(xi, x_dims)
        ax.plot(at, flat_y[i], ".", ms=3, color="C0")
        xf, yf = _curve(fn, xi, params[i], x_dims)
        ax.plot(xf, yf, "-", color="C1" if success[i] else "C3")
        ax.set_title(f"fit {i}: {_status(status[i])}", fontsize=9)
    for ax in axes[:fit_rows].ravel()[len(shown) :]:
        ax.set_visible(False)
    for j, ax in enumerate(axes[fit_rows:].ravel()):
        if j >= n_params:
            ax.set_visible(False)
            continue
        values = params[success, j]
        ax.hist(values[np.isfinite(values)], bins=bins, color="C0")
        ax.set_title(names[j], fontsize=9)
    fig.suptitle(
        f"{size} fits, {int(success.sum())} converged; histograms over the converged fits", fontsize=10
    )
    fig.tight_layout()
    return fig


def _status(code) -> str:
    try:
        return Status(int(code)).name
    except ValueError:
        return f"status {int(code)}"
