"""Curve fitting on top of the LM core: ``jaxlm.fit`` and the scipy-compatible ``curve_fit``.

What happens to one curve (every member of a batch alike, under ``vmap``):

* **parameters**: the solver works on free variables ``u``; the model sees
  ``p = where(fixed, p0, T(u))`` where T maps ℝ into the bounds (MINUIT/lmfit):
  ``lo + (hi − lo)(sin u + 1)/2`` for two finite bounds, ``lo − 1 + √(u² + 1)`` for a
  lower bound only, ``hi + 1 − √(u² + 1)`` for an upper bound only, identity otherwise.
  So every iterate is inside the bounds; fixed parameters never move.
* **weights**: ``r = (f(x, *p) − y)/σ`` for per-point σ, or ``r = L⁻¹(f − y)`` for a
  covariance ``Σ = LLᵀ`` (scipy's transform).  Masked points contribute nothing: their
  residual is 0 and, for a covariance, their rows and columns of Σ are replaced by the
  identity, so ``rᵀΣ⁻¹r`` runs over the unmasked points exactly.
* **loss** (scipy ``least_squares``): cost ``½ f_scale² Σ ρ((r/f_scale)²)``; the step uses
  scipy's rescaled residual and Jacobian (``J̃ᵀJ̃`` a Gauss–Newton approximation of the
  robust cost's Hessian; Triggs et al. 2000).
* **Poisson** (Laurence & Chromy 2010, Gpufit's MLE): cost = half the deviance
  ``Σ μ − y + y log(y/μ)``, step from ``r̃ = (μ − y)/√μ``, ``J̃ = ∂μ/√μ``: ``J̃ᵀr̃`` is the
  deviance gradient and ``J̃ᵀJ̃`` the Fisher information.
* **covariance**: ``pcov = (J̃ᵀJ̃)⁻¹`` in the model's parameters (not in u), from the SVD
  of the column-equilibrated J̃ at the solution, times χ²/dof unless ``absolute_sigma``
  (scipy's rule).  Fixed parameters get 0 rows/columns; if the data do not determine
  the free parameters (J̃ rank deficient) or dof ≤ 0 (without absolute_sigma), every
  free entry is ``inf``, as in scipy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import _batch, _check, _implicit
from jaxlm._least_squares import _solve
from jaxlm._solver import LevenbergMarquardt, Objective, Status, is_success
from jaxlm.models import Model
from jaxlm.models import get as get_model

LOSSES = ("linear", "soft_l1", "huber", "cauchy", "arctan")
ESTIMATORS = ("lse", "poisson")
NAN_POLICIES = (None, "omit", "raise")
_SOLVER_OPTIONS = {f.name for f in dataclasses.fields(LevenbergMarquardt)}
_DIFF_OPTIONS = {"implicit_hessian", "failed_grad"}


class FitResult(NamedTuple):
    """Result of :func:`fit`; a pytree whose fields carry the batch shape of the data.

    Attributes:
      params: best-fit parameters ``(..., n)``.
      pcov: covariance of the parameters ``(..., n, n)`` (scipy's ``pcov``).
      perr: one-standard-deviation errors ``sqrt(diag(pcov))``.
      chi2: ``Σ r²`` of the weighted residuals (for a robust loss twice its cost, as
        scipy; for ``estimator="poisson"`` the deviance).
      dof: points used minus parameters fitted (int32).
      cost: the objective at the solution (½χ² for least squares).
      status: :class:`jaxlm.Status` codes (int32).
      success: ``status`` is one of the ``CONVERGED_*`` codes.
      n_steps, n_fev: LM steps and function evaluations.
    """

    params: jax.Array
    pcov: jax.Array
    perr: jax.Array
    chi2: jax.Array
    dof: jax.Array
    cost: jax.Array
    status: jax.Array
    success: jax.Array
    n_steps: jax.Array
    n_fev: jax.Array


@dataclasses.dataclass(frozen=True)
class _Config:
    """Everything static about a fit (hashable: the jit cache key besides shapes)."""

    f: Callable
    estimator: str
    loss: str
    f_scale: float
    sigma_kind: str  # "none", "std", "cov"
    sigma_batched: bool
    absolute_sigma: bool
    x_batched: bool
    masked: bool
    solver: LevenbergMarquardt
    implicit_hessian: str
    failed_grad: str


# --------------------------------------------------------------------------- public API
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
        :class:`jaxlm.models.Model` or the name of one (``jaxlm.models.names()``).
      xdata: the independent variable (see batching above).
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
        are prepared in host memory, results are returned as numpy arrays).
      progress: show a tqdm progress bar (fits/s, status tally).
      devices: shard the batch over these devices; inputs already sharded along the
        batch axis (``jax.sharding``) are fitted where they lie, results sharded alike.
      **solver_options: options of :func:`jaxlm.least_squares` (``damping``,
        ``max_steps``, ``ftol``, …, ``implicit_hessian``, ``failed_grad``), except
        that a callable ``jac`` has scipy's meaning: ``jac(x, *params) -> (m, n)``, the
        model's Jacobian in its parameters (used for the steps, pcov and gradients).

    Returns:
      :class:`FitResult`.  Differentiable (implicitly, see :func:`jaxlm.least_squares`)
      with respect to ``ydata``, ``xdata`` and ``sigma``.

    Raises:
      TypeError: ``f`` is not callable (or not JAX-traceable) or returns complex values;
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
    model, fn = _resolve_model(f)
    fn, cfg_options, solver = _solver_from_options(fn, solver_options)
    driver = _batch.Options(compact=compact, chunk_size=chunk_size, progress=progress, devices=devices)
    driver = driver.validate()
    _check.choice("loss", loss, LOSSES)
    _check.choice("estimator", estimator, ESTIMATORS)
    _check.choice("nan_policy", nan_policy, NAN_POLICIES)
    f_scale = _check.real("f_scale", f_scale, positive=True)
    absolute_sigma = _check.boolean("absolute_sigma", absolute_sigma)
    xdata_batched = _check.optional_boolean("xdata_batched", xdata_batched)
    sigma_batched = _check.optional_boolean("sigma_batched", sigma_batched)
    if estimator == "poisson" and sigma is not None:
        raise ValueError("sigma: the Poisson estimator takes no sigma (the variance of a count is its mean)")
    if estimator == "poisson" and loss != "linear":
        raise ValueError(f"loss: the Poisson estimator takes no robust loss, got loss={loss!r}")

    # Streamed in chunks, the batch may not fit on the accelerator: prepare it in host memory.
    where = jax.default_device(jax.devices("cpu")[0]) if chunk_size is not None else contextlib.nullcontext()
    with where:
        prep = _prepare(
            fn,
            model,
            xdata,
            ydata,
            p0,
            sigma,
            bounds,
            mask,
            fixed,
            nan_policy,
            xdata_batched,
            sigma_batched,
            estimator,
        )
    cfg = _Config(
        f=fn,
        estimator=estimator,
        loss=loss,
        f_scale=f_scale,
        sigma_kind=prep.sigma_kind,
        sigma_batched=prep.sigma_batched,
        absolute_sigma=absolute_sigma,
        x_batched=prep.x_batched,
        masked=prep.mask is not None,
        solver=solver,
        **cfg_options,
    )
    concrete = _is_concrete(prep.arrays)
    if driver.streaming and not concrete:
        raise ValueError(
            "chunk_size, progress and devices need concrete inputs; under jit/vmap/grad "
            "fit runs the batch as one vmapped program"
        )
    if concrete and driver.pays(math.prod(prep.batch)):
        res = _fit_driven(cfg, prep, driver)  # a single fit (batch ()) is a batch of one
    else:
        res = _fit_batch(cfg, prep.batch, *prep.arrays)
    if concrete:
        _warn_if_no_covariance(res)
    return res


def _covariance_warning():
    """scipy's ``OptimizeWarning`` when scipy is installed (filters written for scipy's
    ``curve_fit`` then apply), else a ``UserWarning``."""
    try:
        from scipy.optimize import OptimizeWarning
    except ImportError:  # pragma: no cover - scipy is optional
        return UserWarning
    return OptimizeWarning


def _warn_if_no_covariance(res: FitResult) -> None:
    """As scipy: warn when a converged fit's ``pcov`` could not be estimated (it is
    ``inf``).  A member that did not converge says so in its status instead."""
    per_fit = jnp.asarray(res.success) & jnp.any(jnp.isinf(jnp.asarray(res.pcov)), axis=(-2, -1))
    bad, total = int(jnp.sum(per_fit)), int(np.size(per_fit))
    if bad:
        which = "" if total == 1 else f" for {bad} of {total} fits"
        warnings.warn(
            f"Covariance of the parameters could not be estimated{which} (no more points than free "
            "parameters, or parameters the data do not determine): pcov is inf",
            _covariance_warning(),
            stacklevel=3,
        )


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

    ``f`` must be written with ``jax.numpy`` (it is differentiated exactly; scipy's
    finite-difference names for ``jac`` are accepted and not needed, and a callable
    ``jac(x, *params) -> (m, n)`` is used as the model's Jacobian, as in scipy).  A
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
    returns ``(popt, pcov, infodict, mesg, ier)`` with ``infodict`` holding ``nfev``
    and ``fvec`` and ``ier`` the :class:`jaxlm.Status` code.

    Difference from scipy: the result keeps the input's float dtype (scipy casts to
    float64 first); pass float64 data with ``jax_enable_x64`` on for scipy's precision.
    """
    if method not in (None, "lm", "trf", "dogbox"):
        raise ValueError(f"method must be None, 'lm', 'trf' or 'dogbox', got {method!r}")
    if isinstance(jac, str):
        _check.choice("jac", jac, ("2-point", "3-point", "cs"))  # scipy's names: JAX is exact
    elif jac is not None:
        if not callable(jac):
            raise TypeError(f"jac must be None, a string or a callable, got {type(jac).__name__}")
        kwargs["jac"] = jac
    lo, hi = (_numeric("bounds", b) for b in _bounds_pair(bounds))
    # traced bounds (under jit) are taken as bounds: scipy's m < n rule then does not apply
    bounded = not _is_concrete((lo, hi)) or bool(
        np.any(np.asarray(lo) > -np.inf) or np.any(np.asarray(hi) < np.inf)
    )
    if method == "lm" and bounded and _is_concrete((lo, hi)):
        raise ValueError("Method 'lm' only works for unconstrained problems. Use 'trf' or 'dogbox' instead.")
    for scipy_name, minimum in (("maxfev", 0), ("max_nfev", 1)):
        if scipy_name in kwargs:
            value = kwargs.pop(scipy_name)
            if value is not None:
                value = _check.integer(scipy_name, value, minimum=minimum)
                if value:  # maxfev=0 means the default in scipy
                    kwargs["max_steps"] = value
    check_finite = _check.optional_boolean("check_finite", check_finite)
    full_output = _check.boolean("full_output", full_output)
    if check_finite is None:
        check_finite = nan_policy is None
    if not bounded and method in (None, "lm"):  # scipy's leastsq refuses m < n; its trf does not
        model, fn = _resolve_model(f)
        n = _n_params(fn, model, None if p0 is None else _numeric("p0", p0))
        m = (np.shape(_numeric("ydata", ydata)) or (1,))[-1]
        if n > m:
            raise TypeError(
                f"Improper input: func input vector length N={n} must not exceed func output vector "
                f"length M={m}"
            )
    if check_finite:
        for name, value in (("ydata", ydata), ("xdata", xdata)):
            if _is_concrete(value) and not np.all(np.isfinite(np.asarray(value, dtype=float))):
                raise ValueError(f"{name} must not contain infs or NaNs (check_finite=True)")
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
    if res.status.ndim == 0 and _is_concrete(res.status) and not bool(res.success):
        raise RuntimeError("Optimal parameters not found: " + Status(int(res.status)).message)
    if full_output:
        _, fn = _resolve_model(f)
        fvec = _weighted_residuals(fn, xdata, ydata, res.params, sigma)
        infodict = {"nfev": res.n_fev, "fvec": fvec}
        mesg = Status(int(res.status)).message if res.status.ndim == 0 else "see ier per member"
        return res.params, res.pcov, infodict, mesg, res.status
    return res.params, res.pcov


# --------------------------------------------------------------------------- validation
class _Prepared(NamedTuple):
    batch: tuple
    x: Any
    y: Any
    p0: Any
    sigma: Any
    mask: Any
    lo: Any
    hi: Any
    fixed: Any
    sigma_kind: str
    sigma_batched: bool
    x_batched: bool

    @property
    def arrays(self) -> tuple:
        """x, y, p0, sigma, mask, lo, hi, fixed: the per-curve inputs of the computation."""
        return (self.x, self.y, self.p0, self.sigma, self.mask, self.lo, self.hi, self.fixed)


def _is_concrete(value) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value))


def _resolve_model(f):
    if isinstance(f, str):
        model = get_model(f)
        return model, model.fn
    if isinstance(f, Model):
        return f, f.fn
    if not callable(f):
        raise TypeError(f"f must be callable or the name of a built-in model, got {type(f).__name__}")
    return None, f


def _solver_from_options(fn, options):
    """``fn`` (with the caller's Jacobian attached, if given), the differentiation
    options and the solver."""
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
    if callable(options.get("jac")):  # scipy's meaning: the model's Jacobian in its parameters
        fn = _ModelWithJacobian(fn, options.pop("jac"))
    return fn, diff, LevenbergMarquardt(**options)


@dataclasses.dataclass(frozen=True)
class _ModelWithJacobian:
    """``f(x, *p)`` whose derivative in ``p`` is the caller's ``jac(x, *p) -> (m, n)``
    (scipy's ``curve_fit(jac=...)``); the derivative in ``x`` stays JAX's.  Attached as a
    ``custom_jvp``, so every use of the model's derivative — the solver's Jacobian in the
    free variables (through bounds and weights), geodesic acceleration, pcov, implicit
    gradients — goes through ``jac``.  Hashable: the fit's jit key."""

    f: Callable
    jac: Callable

    def __call__(self, x, *p):
        f, jac = self.f, self.jac

        @jax.custom_jvp
        def model(x, *p):
            return f(x, *p)

        def model_jvp(primals, tangents):
            x, *p = primals
            dx, *dp = tangents
            if isinstance(dx, jax.custom_derivatives.SymbolicZero):  # the usual case: no x tangent
                y = jnp.asarray(f(x, *p))
                dy = jnp.zeros_like(y)
            else:
                y, dy = jax.jvp(lambda x: jnp.asarray(f(x, *p)), (x,), (dx,))
            dp = [
                jnp.zeros((), y.dtype) if isinstance(d, jax.custom_derivatives.SymbolicZero) else d
                for d in dp
            ]
            jmat = jnp.reshape(jnp.asarray(jac(x, *p)), (-1, len(p))).astype(y.dtype)
            return y, dy + jnp.reshape(jmat @ jnp.stack(dp).astype(y.dtype), jnp.shape(y))

        model.defjvp(model_jvp, symbolic_zeros=True)

        return model(x, *p)


def _numeric(name, value):
    """``value`` as an array of real numbers (not yet converted), or a TypeError naming it."""
    if not isinstance(value, jax.Array | np.ndarray):
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as err:  # ragged nesting, unconvertible objects
            raise TypeError(f"{name} must be a rectangular array of numbers: {err}") from None
    dtype = value.dtype
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {dtype} (the imaginary part would be lost)")
    if not (jnp.issubdtype(dtype, jnp.number) or dtype == np.bool_):
        raise TypeError(f"{name} must hold numbers, got dtype {dtype}")
    return value


def _float_dtype(**values):
    """The working precision: the widest float dtype of the inputs (JAX's default float
    for integer data); half precision is refused, naming the argument."""
    dtypes = {}
    for name, v in values.items():
        if v is not None:
            dtype = _numeric(name, v).dtype
            if jnp.issubdtype(dtype, jnp.floating):
                if jnp.finfo(dtype).bits < 32:
                    raise TypeError(
                        f"{name} has dtype {dtype}: jaxlm fits in float32 or float64 (half precision cannot "
                        "resolve a fit's steps); convert it with .astype(numpy.float32)"
                    )
                dtypes[name] = dtype
    return jnp.result_type(*dtypes.values()) if dtypes else jnp.result_type(float)


def _as_float(name, value, dtype):
    arr = _numeric(name, value)
    out = jnp.asarray(arr).astype(dtype)
    if isinstance(arr, np.ndarray) and arr.dtype != np.bool_ and arr.dtype.itemsize > out.dtype.itemsize:
        # host data narrowed (float64 → float32): a finite value must not become inf
        if np.any(np.isfinite(arr) & (np.abs(arr) > float(jnp.finfo(dtype).max))):
            raise ValueError(
                f"{name} holds values beyond the range of {np.dtype(dtype).name} (largest "
                f"{float(jnp.finfo(dtype).max):.3g}): they would become inf; fit in float64 or rescale"
            )
    return out


def _as_bool(name, value, shapes):
    arr = jnp.asarray(value)
    if arr.dtype != jnp.bool_:
        raise TypeError(f"{name} must be a boolean array, got dtype {arr.dtype}")
    if arr.shape not in shapes:
        raise ValueError(f"{name} has shape {arr.shape}; expected {' or '.join(map(str, shapes))}")
    return arr if arr.shape == shapes[-1] else jnp.broadcast_to(arr, shapes[-1])


def _per_fit_shape(name, arr, inner, batch):
    """Broadcast a shared ``inner`` or a per-fit ``batch + inner`` array to batch + inner."""
    if arr.shape == inner:
        return jnp.broadcast_to(arr, batch + inner)
    if arr.shape == batch + inner:
        return arr
    want = f"{inner}" + (f" or {batch + inner}" if batch else "")
    raise ValueError(f"{name} has shape {arr.shape}; expected {want}")


def _bounds_pair(bounds):
    if not (isinstance(bounds, tuple | list) and len(bounds) == 2):
        raise ValueError("bounds must be a pair (lower, upper) of scalars or arrays")
    return bounds


def _n_params(fn, model, p0):
    if p0 is not None:
        shape = np.shape(p0)
        if len(shape) == 0:
            return 1
        return shape[-1]
    if model is not None:
        return model.n_params
    try:
        sig = inspect.signature(fn.f if isinstance(fn, _ModelWithJacobian) else fn)
    except (TypeError, ValueError):
        raise ValueError("p0: cannot determine the number of parameters of f; pass p0") from None
    params = list(sig.parameters.values())
    if any(p.kind == p.VAR_POSITIONAL for p in params) or len(params) < 2:
        raise ValueError("p0: cannot determine the number of parameters of f from its signature; pass p0")
    return len(params) - 1


def _model_shape(fn, x, n, dtype):
    """Shape of ``f(x, *p)`` for ``x`` of this shape, or the exception that f raised."""
    try:
        out = jax.eval_shape(
            fn, jax.ShapeDtypeStruct(x.shape, x.dtype), *[jax.ShapeDtypeStruct((), dtype)] * n
        )
    except jax.errors.TracerArrayConversionError as err:
        raise TypeError(
            f"f must be written with jax.numpy (it is traced and differentiated): {err}"
        ) from None
    except jax.errors.ConcretizationTypeError as err:
        raise TypeError(f"f must be traceable by JAX (no Python control flow on its inputs): {err}") from None
    except (TypeError, IndexError, ValueError) as err:
        return err
    if jnp.issubdtype(getattr(out, "dtype", jnp.float32), jnp.complexfloating):
        raise TypeError(
            f"f returns complex values (dtype {out.dtype}); jaxlm fits real data and would drop the "
            "imaginary part: fit the real and imaginary parts as separate points (e.g. "
            "jnp.concatenate([z.real, z.imag]))"
        )
    return tuple(getattr(out, "shape", ()))


def _read_x(fn, x, m, n, batch, forced, dtype):
    """Decide whether x is shared or per fit (see :func:`fit`); check its length."""
    nb = len(batch)
    if x.ndim == 0 or x.shape[-1] != m:
        raise ValueError(
            f"xdata has shape {x.shape}: its last axis must have the {m} points of ydata (…, {m})"
        )
    candidates = []  # True: one x per fit, False: shared
    if forced is not False and nb and x.shape[:nb] == batch and x.ndim > nb:
        candidates.append(True)
    elif forced:
        raise ValueError(
            f"xdata_batched=True, but xdata {x.shape} does not start with the batch shape {batch}"
        )
    if forced is not True:
        candidates.append(False)
    shapes = {c: _model_shape(fn, x[(0,) * nb] if c else x, n, dtype) for c in candidates}
    fits = [c for c in candidates if shapes[c] == (m,)]
    if len(fits) == 1:
        return fits[0]
    if len(fits) == 2:
        raise ValueError(
            f"xdata {x.shape} can be read as shared by the {batch} fits or as one x per fit, and f accepts "
            "both: pass xdata_batched=True or False"
        )
    outcome = shapes[candidates[-1]]
    if isinstance(outcome, Exception):
        raise ValueError(f"f(xdata, *p0) fails for xdata of shape {x.shape} and {n} parameters: {outcome}")
    raise ValueError(f"f(xdata, *p0) returns shape {outcome}; expected ({m},) to match ydata (…, {m})")


def _prepare(
    fn, model, xdata, ydata, p0, sigma, bounds, mask, fixed, nan_policy, forced, sigma_forced, estimator
):
    dtype = _float_dtype(ydata=ydata, p0=p0, xdata=xdata)
    y = _as_float("ydata", ydata, dtype)
    if y.ndim == 0 or y.shape[-1] == 0:
        raise ValueError(f"ydata must have at least one point on its last axis, got shape {y.shape}")
    batch, m = y.shape[:-1], y.shape[-1]
    if xdata is None:
        raise ValueError("xdata must be given")
    x = _as_float("xdata", xdata, dtype)
    n = _n_params(fn, model, p0)
    if n == 0:
        raise ValueError("p0 must have at least one parameter")
    x_batched = _read_x(fn, x, m, n, batch, forced, dtype)
    if x_batched and x.ndim < len(batch) + 1:
        raise ValueError(f"xdata {x.shape} is too short for {batch} fits of {m} points")
    if isinstance(fn, _ModelWithJacobian):
        _check_jacobian(fn.jac, x[(0,) * len(batch)] if x_batched else x, m, n, dtype)

    # bounds
    lo, hi = _bounds_pair(bounds)
    lo = _as_float("bounds", lo, dtype)
    hi = _as_float("bounds", hi, dtype)
    if _is_concrete((lo, hi)) and (np.any(np.isnan(np.asarray(lo))) or np.any(np.isnan(np.asarray(hi)))):
        raise ValueError("bounds must not hold NaN (use -inf/inf for a parameter without a bound)")
    lo = _per_fit_shape("bounds (lower)", lo if lo.ndim else jnp.full((n,), lo), (n,), batch)
    hi = _per_fit_shape("bounds (upper)", hi if hi.ndim else jnp.full((n,), hi), (n,), batch)
    if _is_concrete((lo, hi)) and np.any(np.asarray(lo) >= np.asarray(hi)):
        raise ValueError("bounds: each lower bound must be strictly less than its upper bound")

    # mask (and NaN policy) before the guess, which must ignore masked points
    if mask is not None:
        mask = _as_bool("mask", mask, [(m,), batch + (m,)])
    if nan_policy is not None:
        # a point is finite when all its coordinates are: reduce x over its non-batch,
        # non-point axes, giving (m,) for a shared x and batch + (m,) for one per fit
        first = len(batch) if x_batched else 0
        finite_x = jnp.all(jnp.isfinite(x), axis=tuple(range(first, x.ndim - 1)))
        finite = jnp.isfinite(y) & jnp.broadcast_to(finite_x, y.shape)
        if nan_policy == "raise" and _is_concrete(finite) and not bool(np.all(np.asarray(finite))):
            raise ValueError("ydata/xdata contain NaN or inf (nan_policy='raise')")
        if nan_policy == "omit":
            # always the masked program, whether or not this batch holds a NaN: a member's
            # result must not depend on the other members' data
            mask = finite if mask is None else mask & finite
    if estimator == "poisson" and _is_concrete(y):
        yv = np.asarray(y)
        if np.any(yv[np.isfinite(yv)] < 0):
            raise ValueError("ydata: the Poisson estimator needs counts ≥ 0")

    # p0
    if p0 is None:
        if model is not None:
            y_for_guess = y if mask is None else jnp.where(mask, y, jnp.nan)
            p0 = model.guess(x, y_for_guess).astype(dtype)
        else:
            # scipy: ones, or the middle of finite bounds (one bound: one unit inside it)
            p0 = jnp.where(
                jnp.isfinite(lo) & jnp.isfinite(hi),
                0.5 * (lo + hi),
                jnp.where(
                    jnp.isfinite(lo),
                    lo + 1,
                    jnp.where(jnp.isfinite(hi), hi - 1, jnp.ones_like(lo)),
                ),
            )
    p0 = _as_float("p0", p0, dtype)
    if p0.ndim == 0:
        p0 = p0[None]
    if model is not None and p0.shape[-1] != model.n_params:
        raise ValueError(
            f"p0 has {p0.shape[-1]} parameters; model {model.name!r} has {model.n_params} "
            f"({', '.join(model.param_names)})"
        )
    if p0.shape not in ((n,), batch + (n,)):
        raise ValueError(
            f"p0 has shape {p0.shape}; expected ({n},) or the batch shape of ydata "
            f"{batch} followed by {n}: {batch + (n,)}"
        )
    p0 = jnp.broadcast_to(p0, batch + (n,))
    if _is_concrete((p0, lo, hi)):
        p, l_, h_ = np.asarray(p0), np.asarray(lo), np.asarray(hi)
        outside = (p < l_) | (p > h_)
        if np.any(outside):
            raise ValueError(f"p0 is outside the bounds at {int(outside.sum())} parameter(s)")

    if fixed is not None:
        fixed = _as_bool("fixed", fixed, [(n,), batch + (n,)])
    else:
        fixed = jnp.zeros(batch + (n,), bool)
    fixed = jnp.broadcast_to(fixed, batch + (n,))

    # sigma
    sigma_kind, sigma_batched = "none", False
    if sigma is not None:
        sigma = _as_float("sigma", sigma, dtype)
        sigma_kind, sigma_batched = _read_sigma(sigma.shape, m, batch, sigma_forced)
        if sigma_kind == "std" and sigma.shape in ((), (1,)):
            sigma = jnp.broadcast_to(jnp.reshape(sigma, ()), (m,))
        if sigma_kind == "std" and _is_concrete(sigma):
            s = np.asarray(sigma)
            if not np.all(s > 0) or not np.all(np.isfinite(s)):
                raise ValueError("sigma must be > 0 and finite at every point")
        if sigma_kind == "cov" and _is_concrete(sigma):
            s = np.asarray(sigma, dtype=float)
            if not np.all(np.isfinite(s)):
                raise ValueError("sigma (a covariance matrix) must be finite")
            if not np.allclose(s, np.swapaxes(s, -1, -2)):
                raise ValueError("sigma (a covariance matrix) must be symmetric")
            try:
                np.linalg.cholesky(s)
            except np.linalg.LinAlgError:
                raise ValueError("sigma (a covariance matrix) must be positive definite") from None
    return _Prepared(batch, x, y, p0, sigma, mask, lo, hi, fixed, sigma_kind, sigma_batched, x_batched)


def _read_sigma(shape, m, batch, forced):
    """("std" | "cov", one per fit?) for a sigma of this shape (see :func:`fit`)."""
    readings = []  # (kind, per fit)
    if batch and shape == batch + (m,):
        readings.append(("std", True))
    if batch and shape == batch + (m, m):
        readings.append(("cov", True))
    if shape in ((), (1,), (m,)):
        readings.append(("std", False))
    if shape == (m, m):
        readings.append(("cov", False))
    if not readings:
        raise ValueError(
            f"sigma has shape {shape}; expected ({m},)"
            + (f" or {batch + (m,)}" if batch else "")
            + f" (standard deviations) or ({m}, {m})"
            + (f" or {batch + (m, m)}" if batch else "")
            + " (a covariance)"
        )
    if forced is not None:
        chosen = [r for r in readings if r[1] == forced]
        if not chosen:
            raise ValueError(
                f"sigma_batched={forced}, but sigma {shape} is "
                + ("shared by the fits" if forced else f"one per fit of the {batch} batch")
            )
        readings = chosen
    if len(readings) > 1:  # (m, m) for a batch of m fits of m points
        raise ValueError(
            f"sigma {shape} can be read as one standard deviation per point of each of the {m} fits or "
            "as one "
            f"({m}, {m}) covariance shared by them: pass sigma_batched=True (standard deviations per fit) or "
            "False (a shared covariance)"
        )
    return readings[0]


def _check_jacobian(jac, x, m, n, dtype):
    """The caller's ``jac(x, *p)`` must give an (m, n) array (before anything compiles)."""
    try:
        out = jax.eval_shape(
            jac, jax.ShapeDtypeStruct(x.shape, x.dtype), *[jax.ShapeDtypeStruct((), dtype)] * n
        )
    except Exception as err:  # noqa: BLE001 - reported with its argument's name
        raise TypeError(f"jac(xdata, *p0) fails when traced by JAX: {type(err).__name__}: {err}") from None
    shape = tuple(getattr(out, "shape", ()))
    if shape != (m, n) and not (n == 1 and shape == (m,)):
        raise ValueError(f"jac(xdata, *p0) returns shape {shape}; expected ({m}, {n}): one row per point")
    if jnp.issubdtype(out.dtype, jnp.complexfloating):
        raise TypeError(f"jac must return real values, got dtype {out.dtype}")


# --------------------------------------------------------------------------- the computation
def _flatten(cfg: _Config, batch, x, y, p0, sigma, mask, lo, hi, fixed):
    """The per-curve inputs with the batch flattened to one axis, and their vmap axes."""
    size = math.prod(batch)
    m, n = y.shape[-1], p0.shape[-1]
    flat = lambda a, inner: jnp.reshape(a, (size,) + inner)  # noqa: E731
    if cfg.x_batched:
        x = flat(x, x.shape[len(batch) :])
    mask_batched = mask is not None and mask.shape != (m,)
    if mask_batched:
        mask = flat(mask, (m,))
    if cfg.sigma_kind != "none" and cfg.sigma_batched:
        sigma = flat(sigma, sigma.shape[len(batch) :])
    inputs = (
        x,
        flat(y, (m,)),
        flat(p0, (n,)),
        sigma,
        mask,
        flat(lo, (n,)),
        flat(hi, (n,)),
        flat(fixed, (n,)),
    )
    axes = (
        0 if cfg.x_batched else None,
        0,
        0,
        0 if cfg.sigma_kind != "none" and cfg.sigma_batched else None,
        0 if mask_batched else None,
        0,
        0,
        0,
    )
    return inputs, axes


@jax.jit(static_argnums=(0, 1))
def _fit_batch(cfg: _Config, batch, *arrays) -> FitResult:
    """The whole batch as one vmapped program (used under JAX transformations)."""
    inputs, axes = _flatten(cfg, batch, *arrays)
    out = jax.vmap(lambda *a: _fit_one(cfg, *a), in_axes=axes)(*inputs)
    return jax.tree_util.tree_map(lambda a: jnp.reshape(a, batch + a.shape[1:]), out)


def _fit_driven(cfg: _Config, prep: _Prepared, driver: _batch.Options) -> FitResult:
    """The batch through :mod:`jaxlm._batch`: compaction, chunks, devices, progress."""
    inputs, axes = _flatten(cfg, prep.batch, *prep.arrays)
    size = math.prod(prep.batch)
    arg_axes = _prepared_axes(cfg, axes[4] == 0)
    per_fit = _batch.batched(axes, inputs)
    sharding = _batch.batch_sharding(jax.tree_util.tree_leaves(per_fit), driver.devices)
    fun = _FreeResidual(cfg)

    def solve_chunk(chunk, on_phase):
        u0, args, n_valid = _prepare_batch(cfg, axes, arg_axes, *_batch.merge(axes, chunk, inputs))
        state, _ = _batch.run(
            cfg.solver, fun, u0, args, arg_axes, compact=driver.compact, sharding=sharding, on_phase=on_phase
        )
        return _finish_batch(cfg, arg_axes, state, args, n_valid)

    bar = _batch.Progress(size, driver.progress)
    try:
        out = _batch.stream(
            solve_chunk, per_fit, size, chunk_size=driver.chunk_size, sharding=sharding, progress=bar
        )
    finally:
        bar.close()
    return jax.tree_util.tree_map(lambda a: a.reshape(prep.batch + a.shape[1:]), out)


@jax.jit(static_argnums=(0, 1, 2))
def _prepare_batch(cfg: _Config, axes, arg_axes, *inputs):
    prepare = lambda *a: _prepare_one(cfg, *a)  # noqa: E731
    return jax.vmap(prepare, in_axes=axes, out_axes=(0, arg_axes, 0))(*inputs)


@jax.jit(static_argnums=(0, 1))
def _finish_batch(cfg: _Config, arg_axes, state, args, n_valid):
    finish = lambda u, c, st, ns, nf, a, nv: _finish_one(cfg, u, c, st, ns, nf, a, nv)  # noqa: E731
    return jax.vmap(finish, in_axes=(0, 0, 0, 0, 0, arg_axes, 0))(
        state.params, state.caller_cost(), state.status, state.n_steps, state.n_fev, args, n_valid
    )


def _to_params(u, p0, lo, hi, fixed):
    """T(u) into the bounds (see module docstring); fixed parameters stay at p0."""
    has_lo, has_hi = jnp.isfinite(lo), jnp.isfinite(hi)
    lo_s = jnp.where(has_lo, lo, 0)  # finite stand-ins keep unselected branches finite
    hi_s = jnp.where(has_hi, hi, 1)
    both = lo_s + (hi_s - lo_s) * (jnp.sin(u) + 1) / 2
    root = jnp.sqrt(u * u + 1)
    p = jnp.where(
        has_lo & has_hi, both, jnp.where(has_lo, lo_s - 1 + root, jnp.where(has_hi, hi_s + 1 - root, u))
    )
    return jnp.where(fixed, p0, p)


def _to_free(p, lo, hi):
    """Inverse of :func:`_to_params` (p inside the bounds; a start on a bound is nudged)."""
    has_lo, has_hi = jnp.isfinite(lo), jnp.isfinite(hi)
    lo_s = jnp.where(has_lo, lo, 0)
    hi_s = jnp.where(has_hi, hi, 1)
    eps = jnp.finfo(p.dtype).eps
    t = jnp.clip(2 * (p - lo_s) / (hi_s - lo_s) - 1, -1 + 64 * eps, 1 - 64 * eps)
    both = jnp.arcsin(t)
    # u = 0 (p on its bound) would be a stationary point of T: start just inside
    below = jnp.maximum(jnp.sqrt(jnp.maximum((p - lo_s + 1) ** 2 - 1, 0)), jnp.sqrt(eps))
    above = jnp.maximum(jnp.sqrt(jnp.maximum((hi_s - p + 1) ** 2 - 1, 0)), jnp.sqrt(eps))
    return jnp.where(has_lo & has_hi, both, jnp.where(has_lo, below, jnp.where(has_hi, above, p)))


def _robust(loss, z):
    """ρ(z), ρ'(z), ρ''(z) of scipy's losses at z = (r/f_scale)² (safe in every branch)."""
    if loss == "soft_l1":
        t = 1 + z
        # 2(√t − 1) without the cancellation near z = 0 (which left a noise floor of ~eps
        # per point in the cost, so a zero-residual fit could never meet ftol)
        return z / ((jnp.sqrt(t) + 1) / 2), 1 / jnp.sqrt(t), -0.5 * t**-1.5
    if loss == "huber":
        big = z > 1
        zs = jnp.where(big, z, 1)
        return (
            jnp.where(big, 2 * jnp.sqrt(zs) - 1, z),
            jnp.where(big, 1 / jnp.sqrt(zs), 1),
            jnp.where(big, -0.5 * zs**-1.5, 0),
        )
    if loss == "cauchy":
        t = 1 + z
        return jnp.log1p(z), 1 / t, -1 / t**2
    if loss == "arctan":
        t = 1 + z * z
        return jnp.arctan(z), 1 / t, -2 * z / t**2
    raise ValueError(loss)


def _whiten(sigma_kind, raw, sigma_term):
    """Weighted residual: raw·(1/σ) or L⁻¹·raw."""
    if sigma_kind == "std":
        return raw * sigma_term
    if sigma_kind == "cov":
        return jax.scipy.linalg.solve_triangular(sigma_term, raw, lower=True)
    return raw


def _objective(cfg, p, x, y, sigma_term, valid):
    """The residual (or :class:`Objective`) of one curve as a function of the model's p."""
    model = cfg.f(x, *[p[i] for i in range(p.shape[0])])
    model = jnp.asarray(model).astype(y.dtype)
    if cfg.estimator == "poisson":
        eps = jnp.finfo(y.dtype).eps
        bad = jnp.any(valid & ((model < 0) | ((model == 0) & (y > 0))))
        mu_safe = jnp.where(valid & (model > 0), model, 1)
        y_safe = jnp.where(valid, y, 0)
        # μ − y + y log(y/μ) as d − y log1p(d/y) with d = μ − y (μ where y = 0): the
        # rounding error is eps·|d| instead of eps·y, so the deviance is accurate near its
        # minimum (float32 counts of 10⁶ would otherwise carry a noise of ~0.1 per point)
        d = mu_safe - y_safe
        y_pos = y_safe > 0
        terms = jnp.where(y_pos, d - y_safe * jnp.log1p(d / jnp.where(y_pos, y_safe, 1)), mu_safe)
        terms = jnp.where(valid, terms, 0)
        terms = jnp.where(valid & (model == 0), 0, terms)  # μ = 0 = y: no contribution
        cost = jnp.where(bad, jnp.inf, jnp.sum(terms))
        floor = eps * jnp.max(jnp.where(valid, jnp.abs(model), 0)) + jnp.finfo(y.dtype).tiny
        weight = jax.lax.stop_gradient(1 / jnp.sqrt(jnp.maximum(jnp.where(valid, model, 1), floor)))
        r = jnp.where(valid, (model - y_safe) * weight, 0)
        return Objective(residual=r, cost=cost)
    raw = jnp.where(valid, model - y, 0)
    r = _whiten(cfg.sigma_kind, raw, sigma_term)
    if cfg.sigma_kind == "std":
        r = jnp.where(valid, r, 0)
    if cfg.loss == "linear":
        return r
    fs = jnp.asarray(cfg.f_scale, r.dtype)
    z = (r / fs) ** 2
    rho0, rho1, rho2 = _robust(cfg.loss, z)
    cost = 0.5 * fs**2 * jnp.sum(rho0)
    rho2 = rho2 / fs**2
    eps = jnp.finfo(r.dtype).eps
    rs = jax.lax.stop_gradient(r)
    j_scale = jax.lax.stop_gradient(jnp.sqrt(jnp.maximum(rho1 + 2 * rho2 * rs**2, eps)))
    # value r·ρ'/J_scale (scipy's rescaled residual), derivative J_scale·J
    shift = jax.lax.stop_gradient(rs * (jax.lax.stop_gradient(rho1) / j_scale - j_scale))
    return Objective(residual=j_scale * r + shift, cost=cost)


@dataclasses.dataclass(frozen=True)
class _FreeResidual:
    """The residual of one curve in the free variables u (hashable: a jit cache key)."""

    cfg: _Config

    def __call__(self, u, x, y, sigma_term, valid, p0, lo, hi, fixed):
        return _objective(self.cfg, _to_params(u, p0, lo, hi, fixed), x, y, sigma_term, valid)


def _fit_one(cfg: _Config, x, y, p0, sigma, mask, lo, hi, fixed) -> FitResult:
    u0, args, n_valid = _prepare_one(cfg, x, y, p0, sigma, mask, lo, hi, fixed)
    sol = _solve(cfg.solver, _FreeResidual(cfg), cfg.implicit_hessian, cfg.failed_grad, u0, args)
    return _finish_one(cfg, sol.params, sol.cost, sol.status, sol.n_steps, sol.n_fev, args, n_valid)


def _prepare_one(cfg: _Config, x, y, p0, sigma, mask, lo, hi, fixed):
    """Start ``u0`` and the solver's ``args`` for one curve (weights, mask, bounds)."""
    dtype = y.dtype
    m = y.shape[0]
    valid = jnp.ones((m,), bool) if mask is None else mask
    if cfg.masked:  # masked points may hold NaN: keep them out of every derivative
        y = jnp.where(valid, y, 0)
        x = jnp.where(jnp.broadcast_to(valid, x.shape) | jnp.isfinite(x), x, 0)
    if cfg.sigma_kind == "std":
        sigma_term = 1 / jnp.where(valid, sigma, 1)
    elif cfg.sigma_kind == "cov":
        pair = valid[:, None] & valid[None, :]
        cov = jnp.where(pair, sigma, jnp.eye(m, dtype=dtype))
        sigma_term = jnp.linalg.cholesky(cov)
    else:
        sigma_term = None
    n_valid = jnp.sum(valid).astype(jnp.int32)
    return _to_free(p0, lo, hi), (x, y, sigma_term, valid, p0, lo, hi, fixed), n_valid


def _prepared_axes(cfg: _Config, mask_batched: bool):
    """Which of :func:`_prepare_one`'s ``args`` differ per member (0) or are shared (None)."""
    per_fit = lambda flag: 0 if flag else None  # noqa: E731
    x_ax = per_fit(cfg.x_batched or (cfg.masked and mask_batched))
    sigma_ax = None if cfg.sigma_kind == "none" else per_fit(cfg.sigma_batched or mask_batched)
    return (x_ax, 0, sigma_ax, per_fit(mask_batched), 0, 0, 0, 0)


def _finish_one(cfg: _Config, u, cost, status, n_steps, n_fev, args, n_valid) -> FitResult:
    """Parameters, covariance, χ², dof and the fit-layer statuses of one solved curve."""
    x, y, sigma_term, valid, p0, lo, hi, fixed = args
    dtype = y.dtype
    n = p0.shape[0]
    params = _to_params(u, p0, lo, hi, fixed)

    # covariance from the model's Jacobian in p at the solution
    def r_of_p(p):
        out = _objective(cfg, p, x, y, sigma_term, valid)
        return out.residual if isinstance(out, Objective) else out

    jac = jax.jacfwd(r_of_p)(params)
    jac = jnp.where(fixed[None, :], 0, jac)
    chi2 = 2 * cost
    n_free = n - jnp.sum(fixed).astype(jnp.int32)
    dof = n_valid - n_free
    pcov = _covariance(jac, fixed)
    free_pair = ~(fixed[:, None] | fixed[None, :])
    if cfg.estimator == "lse" and not cfg.absolute_sigma:
        # scipy: without dof the scale χ²/dof is unknown, and every entry is +inf
        s_sq = chi2 / jnp.maximum(dof, 1).astype(dtype)
        pcov = jnp.where(free_pair, jnp.where(dof > 0, pcov * s_sq, jnp.inf), pcov)
    pcov = jnp.where(free_pair & (dof < 0), jnp.inf, pcov)  # more free parameters than points
    perr = jnp.sqrt(jnp.diagonal(pcov))

    if cfg.estimator == "poisson":
        mu0 = jnp.asarray(cfg.f(x, *[p0[i] for i in range(n)])).astype(dtype)
        nonpositive = jnp.any(valid & ((mu0 < 0) | ((mu0 == 0) & (y > 0))))
        status = jnp.where((status == Status.NONFINITE) & nonpositive, Status.NONPOSITIVE_MODEL, status)
    no_data = n_valid == 0
    status = jnp.where(dof < 0, Status.UNDERDETERMINED, status)
    status = jnp.where(no_data, Status.NO_DATA, status).astype(jnp.int32)
    params = jnp.where(no_data, p0, params)
    return FitResult(
        params=params,
        pcov=pcov,
        perr=perr,
        chi2=chi2,
        dof=dof,
        cost=cost,
        status=status,
        success=is_success(status),
        n_steps=n_steps,
        n_fev=n_fev,
    )


def _covariance(jac, fixed):
    """``(JᵀJ)⁻¹`` over the free parameters, 0 rows/columns for fixed ones.

    As scipy's ``curve_fit``: if the free columns of J are rank deficient (a parameter
    the data do not determine, or two that only act together) every free entry is
    ``inf``.  The SVD is of the column-equilibrated J, so the rank test does not depend
    on the parameters' units; fixed columns are replaced by unit columns orthogonal to
    the rest (extra identity rows), which leaves the free block's inverse unchanged.
    """
    m, n = jac.shape
    dtype = jac.dtype
    eps = jnp.finfo(dtype).eps
    norms = jnp.sqrt(jnp.sum(jac * jac, axis=0))
    zero = norms == 0
    scale = jnp.where(fixed | zero, 1, 1 / jnp.where(zero, 1, norms))
    j_eq = jnp.concatenate(
        [jnp.where(fixed[None, :], 0, jac * scale[None, :]), jnp.diag(fixed.astype(dtype))], axis=0
    )
    _, s, vt = jnp.linalg.svd(j_eq, full_matrices=False)
    singular = s[-1] <= eps * max(m, n) * s[0]
    s_safe = jnp.where(singular, 1, s)
    cov = (vt.T / s_safe[None, :] ** 2) @ vt * scale[:, None] * scale[None, :]
    cov = jnp.where(singular | ~jnp.all(jnp.isfinite(cov)), jnp.inf, cov)
    return jnp.where(fixed[:, None] | fixed[None, :], 0, cov)


def _weighted_residuals(fn, xdata, ydata, popt, sigma):
    """scipy's ``infodict['fvec']`` of a single fit: (f − y)/σ or L⁻¹(f − y) at the solution."""
    if popt.ndim != 1:
        return None
    x, y = jnp.asarray(xdata), jnp.asarray(ydata)
    r = jnp.asarray(fn(x, *[popt[i] for i in range(popt.shape[0])])) - y
    if sigma is None:
        return r
    s = jnp.asarray(sigma)
    if s.ndim <= 1:
        return _whiten("std", r, 1 / s)
    return _whiten("cov", r, jnp.linalg.cholesky(s))
