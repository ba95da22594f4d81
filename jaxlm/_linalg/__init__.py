"""The damped linear solve at the heart of every Levenberg–Marquardt step.

Each step solves

    (A + μ D) h = −g,        A = JᵀJ,  g = Jᵀr,  D diagonal, positive,

which is the normal-equation form of the augmented least-squares problem

    min_h ‖ [J; √μ D^½] h + [r; 0] ‖²

(expand the square: the gradient in h is JᵀJh + Jᵀr + μDh).  Two ways to solve it are
offered, one class each with the same interface (:class:`LinearSolver`):

:class:`~jaxlm._linalg._cholesky.Cholesky` (``"cholesky"``)
    Factor the n×n matrix ``A + μD`` (after symmetric diagonal equilibration).  Cheapest;
    squares the condition number of J.
:class:`~jaxlm._linalg._qr.QR` (``"qr"``)
    Work with the triangular factor of ``J = QR`` and solve the 2n×n augmented problem
    ``[R; √μ D^½] h ≈ [−Qᵀr; 0]`` by a second QR, as MINPACK's ``lmpar``/``qrsolv`` do.
    Never forms JᵀJ, so it keeps the accuracy of J.

Both only ever hold an n×n *model* of the linearisation, never the m×n Jacobian, so the
solver state stays small whatever the number of data points:

* cholesky: ``matrix = JᵀJ``, ``vector = Jᵀr``;
* qr:       ``matrix = R`` (upper triangular, ``RᵀR = JᵀJ``), ``vector = Qᵀr``.

Everything the solver needs from the model — ``diag(A)``, ``g``, the predicted reduction
and the damped step — is derived by the method's class from ``(matrix, vector)``, so the
rest of the code does not care which method is in use.  A failed factorisation is
*reported* (the factor's ``ok`` is False), never raised, so one singular member of a
batch cannot disturb the others.
"""

from __future__ import annotations

from typing import Protocol

import jax

from jaxlm._linalg._cholesky import Cholesky
from jaxlm._linalg._model import GaussNewtonModel
from jaxlm._linalg._qr import QR

__all__ = ["GaussNewtonModel", "LINEAR_SOLVERS", "LinearSolver", "method"]


class LinearSolver(Protocol):
    """What the solver asks of a method.  Every function is pure and ``vmap``-able; the
    factor type is the method's own, with a boolean ``ok`` field."""

    def compress(self, jac_t: jax.Array, res: jax.Array) -> GaussNewtonModel:
        """The n×n model of the Jacobian (given transposed, (n, m)) and the residual."""

    def combine(self, a: GaussNewtonModel, b: GaussNewtonModel) -> GaussNewtonModel:
        """The model of the points of ``a`` and of ``b`` together (a residual evaluated
        in blocks, :mod:`jaxlm._blocks`)."""

    def zero_model(self, n: int, dtype) -> GaussNewtonModel:
        """The model of no points at all (what :meth:`combine` starts from)."""

    def normal_diag(self, model: GaussNewtonModel) -> jax.Array:
        """diag(JᵀJ): the squared column norms of J."""

    def gradient(self, model: GaussNewtonModel) -> jax.Array:
        """g = Jᵀr, the gradient of ½‖r‖²."""

    def curvature(self, model: GaussNewtonModel, h: jax.Array) -> jax.Array:
        """hᵀJᵀJh = ‖Jh‖²."""

    def model_product(self, model: GaussNewtonModel, h: jax.Array) -> jax.Array:
        """JᵀJ h."""

    def scale_model(self, model: GaussNewtonModel, factor: jax.Array) -> GaussNewtonModel:
        """The model of the residual ``factor·r`` (``factor`` a power of two: exact)."""

    def factor(self, model: GaussNewtonModel, mu: jax.Array, diag: jax.Array):
        """Factor ``A + μD`` once for a step (failure in the factor's ``ok``)."""

    def step(self, model: GaussNewtonModel, factor) -> tuple[jax.Array, jax.Array]:
        """The LM step ``(A + μD) h = −g`` and whether it is finite and solved."""

    def solve(self, factor, rhs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(A + μD) y = rhs`` for any right-hand side, and whether it succeeded."""


_METHODS = {"cholesky": Cholesky(), "qr": QR()}
_ALONE = {"cholesky": Cholesky(batched=False), "qr": _METHODS["qr"]}
LINEAR_SOLVERS = tuple(_METHODS)


def method(name: str, batched: bool = True) -> LinearSolver:
    """The method called ``name`` (one of :data:`LINEAR_SOLVERS`); ``batched=False``: its
    form for a problem solved on its own, outside any ``vmap`` (same results to
    rounding, a smaller program)."""
    try:
        return (_METHODS if batched else _ALONE)[name]
    except KeyError:
        raise ValueError(f"linear_solver must be one of {LINEAR_SOLVERS}, got {name!r}") from None
