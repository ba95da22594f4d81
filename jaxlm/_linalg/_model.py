"""The compressed linearisation shared by every method (see :mod:`jaxlm._linalg`)."""

from __future__ import annotations

from typing import NamedTuple

import jax


class GaussNewtonModel(NamedTuple):
    """The linearisation r(x + h) ≈ r + Jh, compressed to n×n: ``(JᵀJ, Jᵀr)`` for
    cholesky, ``(R, Qᵀr)`` with ``J = QR`` for qr."""

    matrix: jax.Array
    vector: jax.Array
