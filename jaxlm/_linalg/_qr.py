"""Never form JᵀJ: the model is ``(R, Qᵀr)`` from ``J = QR``, and each step solves the
augmented least-squares problem ``[R; √μD^½] h ≈ [−Qᵀr; 0]`` by a second QR, as MINPACK's
``lmpar``/``qrsolv`` do.  Keeps the accuracy of J."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from jaxlm._linalg._model import GaussNewtonModel


class QRFactor(NamedTuple):
    """``r``: the upper triangular ``R₂`` of ``[R; √μD^½] = Q₂R₂`` (so ``R₂ᵀR₂ = A + μD``);
    ``q``: the ``Q₂`` (2n, n) the step's least-squares solve needs; ``ok``: False when a
    diagonal entry of ``R₂`` is zero."""

    r: jax.Array
    q: jax.Array
    ok: jax.Array


class QR:
    """Triangular factors only: slower than cholesky, but never squares J's condition."""

    name = "qr"

    def compress(self, jac_t: jax.Array, res: jax.Array) -> GaussNewtonModel:
        """``GaussNewtonModel(R, Qᵀr)`` from one QR of ``[J | r]`` (its last column above
        the diagonal is Qᵀr); for m < n the factor is zero-padded to n×n."""
        n, m = jac_t.shape
        aug = jnp.concatenate([jac_t.T, res[:, None]], axis=1)
        if m < n + 1:
            aug = jnp.concatenate([aug, jnp.zeros((n + 1 - m, n + 1), aug.dtype)], axis=0)
        r_aug = jnp.linalg.qr(aug, mode="r")
        return GaussNewtonModel(r_aug[:n, :n], r_aug[:n, n])

    def combine(self, a: GaussNewtonModel, b: GaussNewtonModel) -> GaussNewtonModel:
        """The model of two sets of points together: the QR of ``[R_a, Qᵀr_a; R_b,
        Qᵀr_b]`` (TSQR: each block's factor is exact, so the stacked one is)."""
        return self.compress(jnp.concatenate([a.matrix, b.matrix]).T, jnp.concatenate([a.vector, b.vector]))

    def zero_model(self, n: int, dtype) -> GaussNewtonModel:
        return GaussNewtonModel(jnp.zeros((n, n), dtype), jnp.zeros((n,), dtype))

    def normal_diag(self, model: GaussNewtonModel) -> jax.Array:
        return jnp.sum(model.matrix * model.matrix, axis=0)

    def gradient(self, model: GaussNewtonModel) -> jax.Array:
        return model.matrix.T @ model.vector

    def curvature(self, model: GaussNewtonModel, h: jax.Array) -> jax.Array:
        rh = model.matrix @ h
        return rh @ rh

    def model_product(self, model: GaussNewtonModel, h: jax.Array) -> jax.Array:
        return model.matrix.T @ (model.matrix @ h)

    def scale_model(self, model: GaussNewtonModel, factor: jax.Array) -> GaussNewtonModel:
        return GaussNewtonModel(model.matrix * factor, model.vector * factor)

    def factor(self, model: GaussNewtonModel, mu: jax.Array, diag: jax.Array) -> QRFactor:
        aug = jnp.concatenate([model.matrix, jnp.diag(jnp.sqrt(mu * diag))], axis=0)
        q, r = jnp.linalg.qr(aug, mode="reduced")
        # A zero pivot means [R; √μD^½] is rank deficient: report instead of dividing by it.
        ok = jnp.all(jnp.abs(jnp.diagonal(r)) > jnp.finfo(r.dtype).tiny)
        return QRFactor(r, q, ok)

    def step(self, model: GaussNewtonModel, factor: QRFactor) -> tuple[jax.Array, jax.Array]:
        n = factor.r.shape[0]
        rhs = jnp.concatenate([-model.vector, jnp.zeros((n,), model.vector.dtype)])
        h = solve_triangular(factor.r, factor.q.T @ rhs, lower=False)
        return h, factor.ok & jnp.all(jnp.isfinite(h))

    def solve(self, factor: QRFactor, rhs: jax.Array) -> tuple[jax.Array, jax.Array]:
        z = solve_triangular(factor.r, rhs, lower=False, trans="T")
        y = solve_triangular(factor.r, z, lower=False)
        return y, factor.ok & jnp.all(jnp.isfinite(y))
