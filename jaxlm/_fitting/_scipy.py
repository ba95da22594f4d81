"""The drop-in for ``scipy.optimize.curve_fit``: scipy's arguments, checks, messages and
return values, on top of :func:`jaxlm.fit`."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import _check
from jaxlm._fitting._api import fit, without_x
from jaxlm._fitting._host import forward_difference, untraceable
from jaxlm._fitting._inputs import bounds_pair, resolve_model
from jaxlm._fitting._names import n_params, read_names
from jaxlm._fitting._objective import weighted_residuals
from jaxlm._fitting._precision import follows_data_precision, is_concrete, numeric
from jaxlm._status import Status


@follows_data_precision
def curve_fit(
    f,
    xdata,
    ydata,
    p0=None,
    sigma=None,
    absolute_sigma=False,
    check_finite=None,
    bounds=(-np.inf, np.inf),
    method=None,
    jac=None,
    *,
    full_output=False,
    nan_policy=None,
    **kwargs,
):
    """Drop-in for ``scipy.optimize.curve_fit``: same arguments, returns ``(popt, pcov)``.

    ``f`` written with ``jax.numpy`` is differentiated exactly (scipy's
    finite-difference names for ``jac`` are accepted and not needed, and a callable
    ``jac(x, *params) -> (m, n)`` is used as the model's Jacobian, as in scipy).  An
    ``f`` that JAX cannot trace (numpy calls, Python control flow on its inputs) is
    fitted anyway, with a warning: evaluated on the host with scipy's forward-difference
    Jacobian (or ``jac``), without geodesic acceleration; such a fit cannot be
    differentiated.  A
    leading batch shape on ``ydata``/``p0`` fits independent curves at once (see
    :func:`fit` for the batching rule and for the extra keywords ``mask``, ``loss``,
    ``f_scale``, ``estimator``, ``fixed`` and the solver options, all accepted here).

    As scipy: ``method`` may be ``None``, ``"lm"``, ``"trf"`` or ``"dogbox"`` (all run
    jaxlm's LM; ``"lm"`` with bounds is an error, as in scipy); ``maxfev``/``max_nfev``
    map to ``max_steps`` (``maxfev=0``: the default); more parameters than data points
    is scipy's ``TypeError`` without bounds (with bounds, the fit ends
    ``Status.UNDERDETERMINED``); ``check_finite=True`` (the default without ``nan_policy``)
    raises on non-finite data; a single fit that does not converge raises
    ``RuntimeError("Optimal parameters not found: …")``.  A batch never raises for a
    failed member: use :func:`fit` to see each member's status.  ``full_output=True``
    returns ``(popt, pcov, infodict, mesg, ier)`` with ``infodict`` holding ``nfev``,
    ``fvec`` and leastsq's ``fjac``, ``ipvt``, ``qtf`` (see :func:`_minpack_fields`) and
    ``ier`` the :class:`jaxlm.Status` code.

    Precision follows the data, as in scipy: float64 data (numpy float64 arrays, Python
    floats) are fitted in float64 and returned as float64 numpy arrays even when JAX's
    x64 is off (the fit runs under a thread-local ``jax.enable_x64`` scope; the caller's
    configuration is not changed); float32 data are fitted and returned in float32.
    """
    f, xdata = without_x(f, xdata, ydata)
    if "args" in kwargs:  # scipy's error: curve_fit calls f(x, *params) only
        raise ValueError(
            "'args' is not a supported keyword argument: bind extra arguments of f with a closure "
            "or functools.partial"
        )
    if np.ndim(ydata) == 0 and xdata is not None and np.ndim(xdata) > 0 and is_concrete(ydata):
        ydata = np.full(np.shape(xdata)[-1], ydata)  # scipy broadcasts a scalar ydata to the points
    if is_concrete(ydata) and np.size(ydata) == 0:
        raise ValueError("`ydata` must not be empty!")  # scipy's words
    if method not in (None, "lm", "trf", "dogbox"):
        raise ValueError(f"method must be None, 'lm', 'trf' or 'dogbox', got {method!r}")
    if isinstance(jac, str):
        _check.choice("jac", jac, ("2-point", "3-point", "cs"))  # scipy's names: JAX is exact
    elif jac is not None:
        if not callable(jac):
            raise TypeError(f"jac must be None, a string or a callable, got {type(jac).__name__}")
        kwargs["jac"] = jac
    p0, bounds, fixed = read_names(*resolve_model(f)[::-1], p0, bounds, kwargs.get("fixed"))
    if fixed is not None:
        kwargs["fixed"] = fixed
    bounded = _bounded(bounds)
    if method == "lm" and bounded is True:
        raise ValueError("Method 'lm' only works for unconstrained problems. Use 'trf' or 'dogbox' instead.")
    _max_steps_from_scipy(kwargs)
    check_finite = None if check_finite is None else _check.scipy_flag("check_finite", check_finite)
    full_output = _check.scipy_flag("full_output", full_output)
    if bounded is False and method in (None, "lm"):  # scipy's leastsq refuses m < n; its trf does not
        _check_enough_points(f, p0, ydata)
    if check_finite is None:
        check_finite = nan_policy is None
    if check_finite:
        _check_finite_data(xdata, ydata)
    res = fit(
        f,
        xdata,
        ydata,
        p0,
        sigma=sigma,
        absolute_sigma=absolute_sigma,
        bounds=bounds,
        nan_policy=nan_policy,
        **kwargs,
    )
    if res.status.ndim == 0 and is_concrete(res.status) and not bool(res.success):
        raise RuntimeError("Optimal parameters not found: " + Status(int(res.status)).message)
    if full_output:
        fvec = weighted_residuals(resolve_model(f)[1], xdata, ydata, res.params, sigma)
        infodict = {
            "nfev": res.n_fev,
            "fvec": fvec,
            **_minpack_fields(f, xdata, ydata, res.params, sigma, fvec, jac),
        }
        mesg = Status(int(res.status)).message if res.status.ndim == 0 else "see ier per member"
        return res.params, res.pcov, infodict, mesg, res.status
    return res.params, res.pcov


def _bounded(bounds):
    """Whether any bound is finite: True, False, or None for traced bounds (under jit,
    taken as bounds: scipy's m < n rule then does not apply, nor does 'lm''s refusal)."""
    lo, hi = (numeric("bounds", b) for b in bounds_pair(bounds))
    if not is_concrete((lo, hi)):
        return None
    return bool(np.any(np.asarray(lo) > -np.inf) or np.any(np.asarray(hi) < np.inf))


def _max_steps_from_scipy(kwargs):
    """scipy's ``maxfev`` (leastsq) and ``max_nfev`` (least_squares) as ``max_steps``."""
    for scipy_name, minimum in (("maxfev", 0), ("max_nfev", 1)):
        if scipy_name in kwargs:
            value = kwargs.pop(scipy_name)
            if value is not None:
                value = _check.integer(scipy_name, value, minimum=minimum)
                if value:  # maxfev=0 means the default in scipy
                    kwargs["max_steps"] = value


def _check_enough_points(f, p0, ydata):
    """scipy's ``TypeError`` for more parameters than data points (its ``lm`` path)."""
    model, fn = resolve_model(f)
    n = n_params(fn, model, None if p0 is None or isinstance(p0, Mapping) else numeric("p0", p0))
    m = (np.shape(numeric("ydata", ydata)) or (1,))[-1]
    if n > m == 1:  # scipy leaves a single point to leastsq's check
        raise TypeError(
            f"Improper input: func input vector length N={n} must not exceed func output vector length M={m}"
        )
    if n > m:
        raise TypeError(f"The number of func parameters={n} must not exceed the number of data points={m}")


def _check_finite_data(xdata, ydata):
    """scipy's ``check_finite=True``: non-finite data are a ``ValueError``."""
    for name, value in (("ydata", ydata), ("xdata", xdata)):
        if is_concrete(value) and not np.all(np.isfinite(np.asarray(value, dtype=float))):
            raise ValueError(f"{name} must not contain infs or NaNs (check_finite=True)")


def _minpack_fields(f, xdata, ydata, popt, sigma, fvec, jac):
    """``fjac``, ``ipvt`` and ``qtf`` of scipy's ``leastsq`` infodict, at the returned
    point: the QR factorisation with column pivoting of the weighted Jacobian,
    ``J[:, ipvt] = Q R``.  As scipy returns them, ``ipvt`` counts from 0 and ``fjac`` is
    (n, m) with Rᵀ in its first n columns; MINPACK also keeps its Householder vectors
    below R, which jaxlm does not compute (zeros there).  ``qtf = Qᵀ fvec``.  MINPACK
    reports the last Jacobian it evaluated, one step before its end; these are at
    ``popt``.  None for a batch."""
    if fvec is None:
        return {"fjac": None, "ipvt": None, "qtf": None}
    model, fn = resolve_model(f)
    p = np.asarray(popt)
    x = np.asarray(xdata) if xdata is not None else None
    if callable(jac):
        deriv = np.asarray(jac(x, *p), p.dtype)
    elif untraceable(fn, np.asarray(x), p.size, p.dtype) is None:
        deriv = np.asarray(jax.jacfwd(lambda q: fn(x, *[q[i] for i in range(p.size)]))(jnp.asarray(p)))
    else:  # a numpy model: the difference Jacobian the fit used
        deriv = forward_difference(fn, x, np.asarray(fn(x, *p), p.dtype), p, p.dtype)
    weighted = np.reshape(deriv, (-1, p.size))
    if sigma is not None:
        s = np.asarray(sigma, p.dtype)
        weighted = weighted / s[:, None] if s.ndim <= 1 else np.linalg.solve(np.linalg.cholesky(s), weighted)
    q, r, perm = jax.scipy.linalg.qr(jnp.asarray(weighted), pivoting=True, mode="economic")
    fjac = np.zeros((p.size, weighted.shape[0]), p.dtype)
    fjac[:, : r.shape[0]] = np.asarray(r).T
    return {"fjac": fjac, "ipvt": np.asarray(perm), "qtf": np.asarray(q).T @ np.asarray(fvec)}
