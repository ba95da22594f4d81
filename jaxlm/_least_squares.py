"""``jaxlm.least_squares``: the single-problem entry point (batch it with ``jax.vmap``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import _check, _explicit, _implicit, _programs, _restart
from jaxlm._solver import LevenbergMarquardt, LMState, is_success


class Solution(NamedTuple):
    """Result of :func:`least_squares` (a pytree: under ``vmap`` every field is batched).

    Attributes:
      params: the solution, same pytree structure as ``x0``.
      cost: ½‖r(params)‖², as scipy's ``least_squares`` reports it.
      status: :class:`jaxlm.Status` code (int32).
      success: True where status is one of the ``CONVERGED_*`` codes.
      n_steps: trial steps taken.
      n_fev: residual evaluations (each with its Jacobian).
      state: the final :class:`jaxlm.LMState`, for inspection or to resume stepping.
    """

    params: Any
    cost: jax.Array
    status: jax.Array
    success: jax.Array
    n_steps: jax.Array
    n_fev: jax.Array
    state: LMState


def least_squares(
    fun: Callable,
    x0,
    args: tuple = (),
    *,
    solver: LevenbergMarquardt | None = None,
    implicit_hessian: str = "exact",
    failed_grad: str = "nan",
    **options,
) -> Solution:
    """Minimise ``½‖fun(params, *args)‖²`` by Levenberg–Marquardt.

    Works under ``jax.jit`` and ``jax.vmap``: vmapping over ``x0`` and/or ``args`` fits
    a batch of independent problems, each with its own status; a member that failed
    (NaN data, infinite start, singular system) never disturbs the others, and a member
    that has stopped stays frozen while the others iterate.  Compiled once per
    ``fun``, options and input shapes: pass the same function object (not a fresh
    lambda) to reuse the compilation.

    Args:
      fun: ``fun(params, *args) -> residuals`` (an array, or any pytree of arrays).
      x0: starting point, an array or any pytree of floating-point arrays.  Its dtype
        sets the working precision (float32, or float64 when x64 is enabled).
      args: extra arguments passed to ``fun`` (data, hyperparameters).
      solver: a :class:`jaxlm.LevenbergMarquardt` holding the solver options; or give
        them as keywords instead (``**options``), one for one: ``damping`` (``"more"``,
        ``"relative"``, ``"levenberg"``, ``"marquardt"``), ``restart`` (a damping, or
        None), ``update``, ``linear_solver``, ``jac``
        (``"fwd"``, ``"rev"`` or ``jac(params, *args) -> (m, n)``), ``geodesic``,
        ``geodesic_alpha``, ``ftol``/``xtol``/``gtol`` (None: ``eps^(3/4)`` of the
        dtype), ``max_steps``, ``tau`` — see :class:`jaxlm.LevenbergMarquardt`.
      implicit_hessian: the Hessian of the implicit derivative: ``"exact"`` (default,
        ∇²½‖r‖²) or ``"gauss_newton"`` (JᵀJ, with the matching Jᵀ∂r on the right side;
        exact for zero-residual problems, cheaper).
      failed_grad: the derivative of a member that did not converge: ``"nan"``
        (default), ``"zero"`` (drop it from a shared gradient) or ``"ift"`` (apply the
        implicit formula at the returned point anyway).

    Returns:
      A :class:`Solution`.

    Raises:
      TypeError: ``fun`` is not callable, ``args`` is not a tuple, or ``x0`` is not
        numeric.
      ValueError: an option is unknown or out of range, ``x0`` is empty, or ``fun``
        returns no floating-point residuals.

    Example:
      >>> import jax.numpy as jnp, jaxlm
      >>> t = jnp.linspace(0.0, 1.0, 20)
      >>> y = 3.0 * jnp.exp(-2.0 * t)
      >>> sol = jaxlm.least_squares(lambda p, t, y: p[0] * jnp.exp(-p[1] * t) - y,
      ...                           jnp.array([1.0, 1.0]), args=(t, y))
      >>> bool(sol.success), [round(float(v), 4) for v in sol.params]
      (True, [3.0, 2.0])

    References:
      Moré, "The Levenberg–Marquardt algorithm: implementation and theory" (1978).
      Madsen, Nielsen & Tingleff, "Methods for non-linear least squares problems" (2004).
      Transtrum & Sethna, "Improvements to the Levenberg–Marquardt algorithm for
      nonlinear least-squares minimization", arXiv:1201.5885 (2012).
    """
    solver = solver_from(solver, options)
    _check.choice("implicit_hessian", implicit_hessian, _implicit.HESSIANS)
    _check.choice("failed_grad", failed_grad, _implicit.FAILED_GRADS)
    x0 = validate_problem(fun, x0, args)
    fun, args = hoist_closure(_programs.same_function(fun), x0, args)
    solve = lambda s: _solve(s, fun, implicit_hessian, failed_grad, x0, args)  # noqa: E731
    if not _programs.traced((x0, args)):  # a problem on its own, not in a vmap
        return _restart.one_problem(solver.alone(), solve)
    return solve(solver)


def solver_from(solver, options) -> LevenbergMarquardt:
    """The one way solver options arrive: a :class:`LevenbergMarquardt`, or keywords
    mapping one for one to its fields (checked there) — not both."""
    if solver is None:
        return LevenbergMarquardt(**options)  # an unknown keyword is a TypeError naming it
    if not isinstance(solver, LevenbergMarquardt):
        raise TypeError(f"solver must be a jaxlm.LevenbergMarquardt, got {type(solver).__name__}")
    if options:
        raise TypeError(
            "solver options go either in solver= or as keywords, not both: got solver and "
            + ", ".join(sorted(options))
        )
    return solver


def hoist_closure(fun, x0, args):
    """``fun`` with the values it closes over that may carry derivatives (tracers of an
    enclosing ``jax.grad``/``jvp``/``jit``) made explicit trailing ``args``, by
    ``jax.closure_convert``; unchanged when there are none.

    The solver differentiates through ``args`` only (implicitly), so without this a
    closed-over θ would get derivative 0.  JAX caches the converted function per
    ``fun`` and shapes, so a plain call still compiles once.
    """
    converted, consts = jax.closure_convert(fun, x0, *args)
    if not consts:
        return fun, args
    return converted, (*args, *consts)


def validate_problem(fun, x0, args):
    """Check the caller's input before anything is compiled; return x0 as float arrays."""
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    if not isinstance(args, tuple):
        raise TypeError(f"args must be a tuple, got {type(args).__name__}")
    leaves, treedef = jax.tree_util.tree_flatten(x0)
    if not leaves:
        raise ValueError("x0 must contain at least one parameter, got an empty pytree")
    converted = [
        leaf if isinstance(leaf, jax.ShapeDtypeStruct) else jnp.asarray(leaf, dtype=_param_dtype(leaf))
        for leaf in leaves
    ]
    if sum(math.prod(leaf.shape) for leaf in converted) == 0:
        raise ValueError("x0 must contain at least one parameter, got size 0")
    x0 = jax.tree_util.tree_unflatten(treedef, converted)
    check_residuals(fun, x0, args)
    return x0


def check_residuals(fun, x0, args):
    """Raise unless ``fun(x0, *args)`` traces to at least one floating-point residual
    (the trace is kept per function and shapes: :func:`jaxlm._programs.eval_shape`)."""
    out = _programs.eval_shape(fun, x0, *args)
    out_leaves = jax.tree_util.tree_leaves(out)
    if not out_leaves or sum(int(np.prod(o.shape)) for o in out_leaves) == 0:
        raise ValueError("fun must return at least one residual, got an empty result")
    for o in out_leaves:
        if not jnp.issubdtype(o.dtype, jnp.floating):
            raise ValueError(f"fun must return floating-point residuals, got dtype {o.dtype}")


@_programs.program(4, hot=True)
def _solve(solver: LevenbergMarquardt, fun: Callable, implicit_hessian, failed_grad, x0, args) -> Solution:
    # The iterations see constants only (no derivative flows through the loop); the
    # derivative of the result comes from the implicit function theorem instead.
    state = solver.run(fun, jax.lax.stop_gradient(x0), *jax.lax.stop_gradient(args))
    params, cost = _implicit.attach(
        fun, implicit_hessian, failed_grad, state.params, state.caller_cost(), state.status, args
    )
    state = state._replace(params=params)
    return Solution(
        params=params,
        cost=cost,
        status=state.status,
        success=is_success(state.status),
        n_steps=state.n_steps,
        n_fev=state.n_fev,
        state=state,
    )


@_explicit.auto_axes
def least_squares_batch(
    fun: Callable,
    x0,
    args: tuple = (),
    *,
    in_axes=0,
    compact: bool = True,
    chunk_size: int | None = None,
    progress: bool = False,
    devices=None,
    solver: LevenbergMarquardt | None = None,
    **options,
) -> Solution:
    """Solve a batch of independent problems ``min ½‖fun(x0[i], *args_i)‖²`` fast.

    The same answer as ``jax.vmap(least_squares)``, member by member, but the work
    follows each member's own step count: members still running are compacted into
    smaller batches as the others converge, so a few stragglers cannot hold the whole
    batch to the step limit (see :mod:`jaxlm._batch`).  Also streams batches larger
    than device memory in chunks, shards over devices and shows progress.

    Args:
      fun: ``fun(params, *args) -> residuals`` for *one* problem.
      x0: starts with a leading batch axis (every leaf ``(B, ...)``).
      args: extra arguments of ``fun``.
      in_axes: ``0`` (every arg is batched along its leading axis), ``None`` (every
        arg shared) or a tuple with one ``0``/``None`` per arg, as ``jax.vmap``.
      compact: compact running members between phases (default True; False, or a
        batch under 256 members, runs one vmapped while loop, as
        ``jax.vmap(least_squares)``).
      chunk_size: solve at most this many problems at a time (inputs may be numpy
        arrays in host memory; results are returned as numpy arrays).  Ctrl-C then
        raises :class:`jaxlm.Interrupted` holding the chunks already finished.
      progress: show a tqdm progress bar with fits/s and the status tally.
      devices: shard the batch over these devices (``jax.devices()``, say).  Inputs
        already sharded along the batch axis with ``jax.sharding`` stay where they are
        and the results come back sharded the same way.
      solver, **options: the solver options, as :func:`least_squares` (not the
        differentiation options).

    Returns:
      A batched :class:`Solution`.  Under a JAX transformation (``jit``, ``vmap``,
      ``grad``) the batch runs as one vmapped while loop instead (compaction needs
      concrete values; ``chunk_size``, ``progress`` and ``devices`` are then an error),
      with implicit derivatives as :func:`least_squares`.

    Raises:
      TypeError, ValueError: as :func:`least_squares`, plus a bad ``in_axes``, batch
        sizes that disagree, or a driver option out of range.
    """
    from jaxlm import _batch

    driver = _batch.Options(compact=compact, chunk_size=chunk_size, progress=progress, devices=devices)
    driver = driver.validate()
    solver = solver_from(solver, options)
    fun = _programs.same_function(fun)  # a new but identical lambda reuses the programs
    if not isinstance(args, tuple):
        raise TypeError(f"args must be a tuple, got {type(args).__name__}")
    axes = _arg_axes(in_axes, len(args))
    x0 = jax.tree_util.tree_map(_as_float_batch, x0)
    size = _batch_size(x0, args, axes)

    def member(tree, dtype):  # one member's shapes: nothing computed or moved to check it
        return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], dtype(a)), tree)

    validate_problem(
        fun,
        member(x0, _param_dtype),
        tuple(member(a, _leaf_dtype) if ax == 0 else a for a, ax in zip(args, axes, strict=True)),
    )

    traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((x0, args)))
    if traced and driver.streaming:
        raise ValueError(
            "chunk_size, progress and devices need concrete inputs; under jit/vmap/grad "
            "least_squares_batch runs as one vmapped while loop"
        )
    if traced or not driver.pays(size):
        return _solve_vmapped(solver, fun, axes, x0, args)
    return _solve_driven(solver, fun, axes, x0, args, size, driver)


def _solve_driven(solver, fun, axes, x0, args, size, driver):
    """The batch through the driver: compaction, chunks, devices, progress."""
    from jaxlm import _stream

    def prepare(merged):
        return merged[0], merged[1:], axes, None

    def finish(state, args, _):
        status = state.status
        return Solution(
            state.params, state.caller_cost(), status, is_success(status), state.n_steps, state.n_fev, state
        )

    return _stream.solve_many(solver, fun, (x0, *args), (0, *axes), size, driver, prepare, finish)


@_programs.program(3, hot=True)
def _solve_vmapped(solver, fun, axes, x0, args):
    solve = lambda x, *a: _solve(solver, fun, "exact", "nan", x, a)  # noqa: E731
    return jax.vmap(solve, in_axes=(0, *axes))(x0, *args)


def _param_dtype(leaf):
    """The float dtype a leaf of x0 is solved in (ints → JAX's default float); raises
    for non-numeric or complex leaves."""
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        dtype = np.asarray(leaf).dtype
    if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
        raise TypeError(f"x0 has dtype {dtype}: jaxlm solves in float32 or float64; convert it with .astype")
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        raise TypeError(f"x0 must hold numeric arrays, got dtype {dtype}")
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError("x0 must be real; complex parameters are not supported")
    # as JAX holds it: float64 only where x64 is on (asking for float64 without it would
    # warn on every call; the README says the precision is x0's as JAX sees it)
    return (
        jax.dtypes.canonicalize_dtype(dtype)
        if jnp.issubdtype(dtype, jnp.floating)
        else jnp.result_type(float)
    )


def _leaf_dtype(leaf):
    dtype = getattr(leaf, "dtype", None)
    return np.asarray(leaf).dtype if dtype is None else dtype


def _as_float_batch(leaf):
    """A batched leaf of x0 as floats, left where it is (host numpy stays on the host)."""
    dtype = _param_dtype(leaf)
    return leaf if getattr(leaf, "dtype", None) == dtype else np.asarray(leaf, dtype=dtype)


def _arg_axes(in_axes, n_args):
    if in_axes is None or (isinstance(in_axes, int) and not isinstance(in_axes, bool)):
        in_axes = (in_axes,) * n_args
    if not isinstance(in_axes, tuple | list) or len(in_axes) != n_args:
        raise ValueError(
            f"in_axes must be 0, None or a tuple of {n_args} entries (one per arg), got {in_axes!r}"
        )
    for ax in in_axes:
        if ax not in (0, None) or isinstance(ax, bool):
            raise ValueError(f"in_axes entries must be 0 (batched) or None (shared), got {ax!r}")
    return tuple(in_axes)


def _batch_size(x0, args, axes):
    sizes = set()
    named = [("x0", x0)] + [
        (f"args[{i}]", a) for i, (a, ax) in enumerate(zip(args, axes, strict=True)) if ax == 0
    ]
    for name, tree in named:
        for leaf in jax.tree_util.tree_leaves(tree):
            if np.ndim(leaf) == 0:
                raise ValueError(f"{name} must have a leading batch axis, got a scalar")
            sizes.add((name, np.shape(leaf)[0]))
    if not sizes:
        raise ValueError("x0 must contain at least one parameter, got an empty pytree")
    if len({size for _, size in sizes}) > 1:
        found = ", ".join(f"{name}: {size}" for name, size in sorted(sizes))
        raise ValueError(f"batch sizes disagree along the leading axis ({found})")
    size = sizes.pop()[1]
    if size == 0:
        raise ValueError("x0 has an empty batch (leading axis of size 0)")
    return size
