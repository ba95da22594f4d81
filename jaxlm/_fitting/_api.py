"""The public entry point :func:`fit`: check the options, read the arrays
(:mod:`._inputs`), run the fits (:mod:`._run`).  :func:`curve_fit` (:mod:`._scipy`) is
scipy's interface on top of it."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import weakref
from collections.abc import Mapping

import jax
import numpy as np

from jaxlm import _batch, _check, _explicit, _implicit, _programs, _restart
from jaxlm._fitting import _blocked, _buckets
from jaxlm._fitting._host import HostModel, untraceable, warn_host
from jaxlm._fitting._inputs import prepare, resolve_model
from jaxlm._fitting._names import n_params, param_names, read_names
from jaxlm._fitting._objective import ESTIMATORS, LOSSES, Config, ModelWithJacobian
from jaxlm._fitting._precision import float_dtype, follows_data_precision, is_concrete, numeric
from jaxlm._fitting._result import FitResult, warn_if_no_covariance
from jaxlm._fitting._run import fit_batch, fit_driven
from jaxlm._least_squares import solver_from
from jaxlm._solver import LevenbergMarquardt
from jaxlm._status import Status
from jaxlm._stream import Interrupted
from jaxlm.models import Model

NAN_POLICIES = (None, "omit", "raise")
_SOLVER_OPTIONS = {f.name for f in dataclasses.fields(LevenbergMarquardt)}
_DIFF_OPTIONS = {"implicit_hessian", "failed_grad"}


@_explicit.auto_axes
@follows_data_precision
def fit(
    f,
    xdata,
    ydata,
    p0=None,
    *,
    sigma=None,
    absolute_sigma: bool = False,
    bounds=(-np.inf, np.inf),
    mask=None,
    loss: str = "linear",
    f_scale: float = 1.0,
    estimator: str = "lse",
    fixed=None,
    nan_policy: str | None = None,
    xdata_batched: bool | None = None,
    sigma_batched: bool | None = None,
    compact: bool = True,
    chunk_size: int | None = None,
    progress: bool = False,
    devices=None,
    solver: LevenbergMarquardt | None = None,
    **solver_options,
) -> FitResult:
    """Fit ``ydata ≈ f(xdata, *params)`` for one curve or a whole batch at once.

    Batching: ``ydata`` is ``(..., m)``; its leading axes are independent fits, each with
    its own status (a failing member never disturbs the others).  ``xdata`` is either
    *shared* by all fits — ``(m,)``, or ``(k, m)`` for k-dimensional points such as a
    ``(2, m)`` pixel grid — or *per fit*, with ydata's batch axes in front:
    ``(..., m)`` / ``(..., k, m)``.  The rule: if xdata does not start with ydata's batch
    shape it is shared; if it does, it is per fit unless evaluating ``f`` shows that
    only the shared reading gives ``m`` values; when both readings are possible (e.g.
    ydata ``(2, m)`` and xdata ``(2, m)`` for a model that accepts either) pass
    ``xdata_batched=True/False``, else a ``ValueError`` asks you to.  ``p0``, ``bounds``,
    ``fixed``, ``sigma`` and ``mask`` are shared when they have no batch axes, per fit
    when they start with the batch shape.

    Args:
      f: ``f(x, *params) -> (m,)`` written with ``jax.numpy``; or a
        :class:`jaxlm.models.Model` or the name of one (``jaxlm.models.names()``).  An
        ``f`` that JAX cannot trace (numpy, Python control flow on its inputs) runs on
        the host with a warning (see :func:`curve_fit`).
      xdata: the independent variable (see batching above), or None: ``f`` is then
        called as ``f(None, *params)``, as scipy does.
      ydata: ``(..., m)`` data.
      p0: start ``(n,)`` or ``(..., n)``.  ``None``: the model's guess from the data for
        built-in models; otherwise ones (scipy), or the middle of finite bounds.
      sigma: per-point standard deviations ``(m,)``/``(..., m)`` or a covariance
        ``(m, m)``/``(..., m, m)`` of ydata's errors (scipy's semantics).
      absolute_sigma: ``False`` (scipy's default): ``pcov`` is scaled by χ²/dof, i.e.
        sigma gives only relative weights.  ``True``: sigma is absolute, ``pcov`` is
        ``(J̃ᵀJ̃)⁻¹``.  (Ignored by the Poisson estimator, whose variances are absolute.)
      bounds: ``(lower, upper)`` scalars, ``(n,)`` or ``(..., n)`` arrays (scipy's
        format); every iterate stays inside; a ``p0`` outside is an error.  ``pcov`` is
        computed from the curvature at the solution as if unconstrained (as scipy's
        ``trf``): at an active bound it describes the unconstrained quadratic model and
        overstates the uncertainty on the bound's side.
      mask: boolean ``(m,)`` or ``(..., m)``: False points are ignored by the fit and by
        dof (ragged data).  A member with no True point gets ``Status.NO_DATA``, one
        with fewer points than free parameters ``Status.UNDERDETERMINED``.
      loss: ``"linear"``, ``"soft_l1"``, ``"huber"``, ``"cauchy"`` or ``"arctan"``.
      f_scale: soft margin between inlier and outlier residuals (in units of σ).
      estimator: ``"lse"`` (least squares) or ``"poisson"`` (maximum likelihood for
        counts, ``ydata ≥ 0``; a start where the model is negative, or zero at a
        positive count, gets ``Status.NONPOSITIVE_MODEL``).
      fixed: boolean ``(n,)`` or ``(..., n)``: True parameters stay at ``p0``
        (Gpufit's ``parameters_to_fit`` inverted); their pcov rows are 0.
      nan_policy: ``None``: non-finite data make that member ``NONFINITE``;
        ``"omit"``: non-finite points are masked; ``"raise"``: ``ValueError``.
      xdata_batched: force the reading of ``xdata`` (see batching).
      sigma_batched: force the reading of a ``sigma`` whose shape is both ydata's and
        ``(m, m)`` (a batch of m curves of m points): ``True`` one standard deviation per
        point of each fit, ``False`` one covariance shared by all fits.  Without it such
        a ``sigma`` is a ``ValueError`` that asks for it.
      compact: for a batch of ≥ 256 curves with concrete inputs, compact the
        still-running fits into smaller batches as the others converge (default True),
        so that the work follows each fit's own step count (:mod:`jaxlm._batch`); the
        results are the same.
      chunk_size: fit at most this many curves at a time, streaming the rest (inputs
        are prepared in host memory, results are returned as numpy arrays).  Ctrl-C
        then raises :class:`jaxlm.Interrupted`, a ``KeyboardInterrupt`` whose
        ``result`` holds the chunks already finished.
      progress: show a tqdm progress bar (fits/s, status tally).
      devices: shard the batch over these devices; inputs already sharded along the
        batch axis (``jax.sharding``) are fitted where they lie, results sharded alike.
      solver, **solver_options: the solver options as :func:`jaxlm.least_squares`
        (a :class:`jaxlm.LevenbergMarquardt`, or keywords ``damping``,
        ``max_steps``, ``ftol``, …, ``implicit_hessian``, ``failed_grad``), except
        that a callable ``jac`` has scipy's meaning: ``jac(x, *params) -> (m, n)``, the
        model's Jacobian in its parameters (used for the steps, pcov and gradients).

    Returns:
      :class:`FitResult`.  Differentiable (implicitly, see :func:`jaxlm.least_squares`)
      with respect to ``ydata``, ``xdata`` and ``sigma``.  Its dtype is the widest float
      dtype of ``xdata``, ``ydata`` and ``p0`` as numpy reads them (float64 for numpy
      float64 arrays and Python floats, as in scipy), whether or not JAX's x64 is on:
      with x64 off, a float64 fit runs under a thread-local ``jax.enable_x64`` scope and
      returns numpy arrays (JAX arrays would be narrowed by the next operation).  Traced
      inputs (under jit, vmap, grad) keep the trace's precision.

    Raises:
      TypeError: ``f`` is not callable or returns complex values;
        an array is complex, half precision, ragged or not numeric; ``mask``/``fixed``
        are not boolean; an option is unknown or of the wrong kind (a boolean option
        given as a string, say).
      ValueError: shapes do not match (naming the argument), ``sigma`` ≤ 0, not finite
        or not positive definite, NaN or crossed bounds, ``p0`` outside the bounds, an
        option out of range, an unknown model, loss, estimator or nan_policy.

    Warns:
      scipy's ``OptimizeWarning`` (``UserWarning`` without scipy) when a ``pcov`` could
      not be estimated (it is then ``+inf``), as ``scipy.optimize.curve_fit``.

    Example:
      >>> import jax.numpy as jnp, jaxlm
      >>> x = jnp.linspace(-3, 3, 50)
      >>> ys = jnp.stack([jaxlm.models.gaussian(x, a, 0.2, 0.8, 0.1) for a in (1.0, 2.0)])
      >>> res = jaxlm.fit("gaussian", x, ys)
      >>> res.params.shape, [round(float(v), 3) for v in res.params[1]]
      ((2, 4), [2.0, 0.2, 0.8, 0.1])

    References:
      scipy.optimize.curve_fit and least_squares (the semantics of sigma, pcov, loss).
      Laurence & Chromy, "Efficient maximum likelihood estimator fitting of
      histograms", Nature Methods 7, 338 (2010).
    """
    f, xdata = without_x(f, xdata, ydata)
    model, fn = resolve_model(f)
    fn = fn if model is not None else _programs.same_function(fn)  # identical lambdas share programs
    user_fn = fn
    p0, bounds, fixed = read_names(fn, model, p0, bounds, fixed)
    fn, cfg_options, solver = _solver_from_options(
        fn, solver, solver_options, host_model(fn, model, xdata, ydata, p0)
    )
    driver = _batch.Options(compact=compact, chunk_size=chunk_size, progress=progress, devices=devices)
    driver = driver.validate()
    _check.choice("loss", loss, LOSSES)
    _check.choice("estimator", estimator, ESTIMATORS)
    _check_nan_policy(nan_policy)
    f_scale = _check.real("f_scale", f_scale, positive=True)
    absolute_sigma = _check.boolean("absolute_sigma", absolute_sigma)
    options = {
        "xdata_batched": _check.optional_boolean("xdata_batched", xdata_batched),
        "sigma_batched": _check.optional_boolean("sigma_batched", sigma_batched),
        "nan_policy": nan_policy,
        "estimator": estimator,
    }
    _check_poisson(estimator, sigma, loss)

    # Streamed in chunks, the batch may not fit on the accelerator: prepare it in host memory.
    where = jax.default_device(jax.devices("cpu")[0]) if chunk_size is not None else contextlib.nullcontext()
    with where:
        prep = prepare(fn, model, xdata, ydata, p0, sigma, bounds, mask, fixed, options)
    concrete = is_concrete(prep.data)
    if not driver.streaming and not (concrete and driver.pays(math.prod(prep.batch))):
        # one vmapped program per length bucket, the same under jit (results unchanged)
        size = _buckets.wanted(fn, prep.data, prep.sigma_kind, prep.data.p0.shape[-1])
        if size is not None:
            prep = prep._replace(data=_buckets.pad(prep.data, size, prep.sigma_kind))
    cfg = Config(
        f=fn,
        estimator=estimator,
        loss=loss,
        f_scale=f_scale,
        sigma_kind=prep.sigma_kind,
        sigma_batched=prep.sigma_batched,
        absolute_sigma=absolute_sigma,
        x_batched=prep.x_batched,
        masked=prep.data.mask is not None,
        transform=prep.transform,
        solver=solver,
        **cfg_options,
    )
    if driver.streaming and not concrete:
        raise ValueError(
            "chunk_size, progress and devices need concrete inputs; under jit/vmap/grad "
            "fit runs the batch as one vmapped program"
        )
    named = functools.partial(_named, user_fn, model)
    if _blocked.wanted(cfg, prep.batch, prep.data, concrete) and not driver.streaming:
        res = _blocked.fit_blocked(cfg, prep.data)  # one curve of millions of points
    elif not (concrete and driver.pays(math.prod(prep.batch))):
        if concrete and prep.batch == ():  # one curve on its own, not in a vmap
            res = _restart.one_problem(
                solver.alone(),
                lambda s: fit_batch(dataclasses.replace(cfg, solver=s), (), prep.data),
                hiding=(Status.UNDERDETERMINED, Status.NO_DATA),  # the fit layer's, over the solver's
            )
        else:
            res = fit_batch(cfg, prep.batch, prep.data)
    else:
        try:
            res = fit_driven(cfg, prep, driver)  # a single fit (batch ()) is a batch of one
        except Interrupted as err:
            err.result = None if err.result is None else named(err.result)
            raise
    if concrete:
        warn_if_no_covariance(res)
    return named(res)


_IGNORING_X: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def without_x(f, xdata, ydata):
    """``xdata=None`` as in scipy, which then calls ``f(None, *params)``: ``f`` wrapped to
    ignore a placeholder x of one integer per point (integers do not decide the working
    dtype).  The wrapper has ``f``'s signature (parameter names) and is kept while ``f``
    lives, so that fitting the same ``f`` again reuses its compiled programs; it holds
    ``f`` weakly, so the map never keeps an ``f`` (and what it captured) alive."""
    if xdata is not None:
        return f, xdata
    if not callable(f) or isinstance(f, str | Model):
        raise ValueError("xdata: only a callable f can be fitted without xdata (scipy calls f(None, *p))")
    if np.ndim(ydata) == 0:
        raise ValueError("ydata: without xdata, ydata must hold the data points (one or more)")
    x = np.zeros(np.shape(ydata)[-1], np.int32)
    with contextlib.suppress(KeyError, TypeError):
        return _IGNORING_X[f], x
    try:
        target = weakref.ref(f)
    except TypeError:  # f cannot be weakly referenced: hold it, and make a wrapper per call
        target = lambda: f  # noqa: E731

    def ignoring_x(x, *params):
        return target()(None, *params)

    ignoring_x.__name__ = getattr(f, "__name__", "f")
    with contextlib.suppress(TypeError, ValueError):
        ignoring_x.__signature__ = inspect.signature(f)
    with contextlib.suppress(TypeError):
        _IGNORING_X[f] = ignoring_x
    return ignoring_x, x


def _named(fn, model, res: FitResult) -> FitResult:
    return dataclasses.replace(res, param_names=param_names(fn, model, res.params.shape[-1]))


def _check_poisson(estimator, sigma, loss):
    if estimator == "poisson" and sigma is not None:
        raise ValueError("sigma: the Poisson estimator takes no sigma (the variance of a count is its mean)")
    if estimator == "poisson" and loss != "linear":
        raise ValueError(f"loss: the Poisson estimator takes no robust loss, got loss={loss!r}")


def _check_nan_policy(nan_policy):
    if isinstance(nan_policy, str) and nan_policy == "propagate":  # scipy's wording, and why
        raise ValueError(
            "`nan_policy='propagate'` is not supported by this function: a fit through NaN "
            "gives NaN; use None (the member's status says NONFINITE), 'omit' or 'raise'"
        )
    if not any(nan_policy is c or (isinstance(nan_policy, str) and nan_policy == c) for c in NAN_POLICIES):
        raise ValueError(f"nan_policy must be one of {{'raise', 'omit', None}}, got {nan_policy!r}")


def host_model(fn, model, xdata, ydata, p0) -> str | None:
    """Why a caller's ``f`` must run on the host (:mod:`._host`), or None: traced as the
    fit will call it, x and the parameters in the working dtype."""
    if model is not None or xdata is None:
        return None
    x = numeric("xdata", xdata)
    dtype = float_dtype(ydata=ydata, p0=p0, xdata=xdata)
    p0 = None if p0 is None or isinstance(p0, Mapping) else numeric("p0", p0)
    return untraceable(fn, x, n_params(fn, None, p0), dtype)


def _solver_from_options(fn, solver, options, on_host=None):
    """``fn`` (with the caller's Jacobian attached, if given; on the host if ``on_host``
    says why), the differentiation options and the solver."""
    unknown = set(options) - _SOLVER_OPTIONS - _DIFF_OPTIONS
    if unknown:
        raise TypeError(f"unknown keyword argument(s): {', '.join(sorted(unknown))}")
    diff = {
        "implicit_hessian": _check.choice(
            "implicit_hessian", options.pop("implicit_hessian", "exact"), _implicit.HESSIANS
        ),
        "failed_grad": _check.choice(
            "failed_grad", options.pop("failed_grad", "nan"), _implicit.FAILED_GRADS
        ),
    }
    if on_host is not None:
        warn_host(on_host)
        jac = options.pop("jac") if callable(options.get("jac")) else None
        options = {k: v for k, v in options.items() if k != "geodesic"}  # no r'' of a numpy model
        solver = dataclasses.replace(solver_from(solver, options), geodesic=False)
        return HostModel(fn, jac), diff, solver
    if callable(options.get("jac")):  # scipy's meaning: the model's Jacobian in its parameters
        fn = ModelWithJacobian(fn, options.pop("jac"))
    return fn, diff, solver_from(solver, options)
