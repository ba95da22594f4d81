"""Classic least-squares test problems (Moré, Garbow & Hillstrom 1981).

Each :class:`MGHProblem` has the residual function ``fun(x) -> r`` of MGH's paper, the
standard starting point ``x0`` (MINPACK's test driver also starts from 10·x0 and
100·x0, see :func:`starts`) and the smallest sum of squares ``f* = ‖r‖²`` reported in
the paper (other local minima are listed in ``local_minima`` where the paper gives
them).

Reference: J. J. Moré, B. S. Garbow, K. E. Hillstrom, "Testing unconstrained
optimization software", ACM Trans. Math. Software 7(1):17–41, 1981.  Numbers in
parentheses below are the paper's problem numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from jaxlm.problems import _mgh_residuals as _r


@dataclass(frozen=True, eq=False)
class MGHProblem:
    name: str
    fun: Callable
    x0: tuple
    fmin: float
    local_minima: tuple = ()

    @property
    def n(self) -> int:
        return len(self.x0)


PROBLEMS: tuple[MGHProblem, ...] = (
    MGHProblem("Rosenbrock", _r.rosenbrock, (-1.2, 1.0), 0.0),
    MGHProblem("FreudensteinRoth", _r.freudenstein_roth, (0.5, -2.0), 0.0, (48.9842536792400,)),
    MGHProblem("PowellBadlyScaled", _r.powell_badly_scaled, (0.0, 1.0), 0.0),
    MGHProblem("BrownBadlyScaled", _r.brown_badly_scaled, (1.0, 1.0), 0.0),
    MGHProblem("Beale", _r.beale, (1.0, 1.0), 0.0),
    MGHProblem("JennrichSampson", _r.jennrich_sampson, (0.3, 0.4), 124.362182355),
    MGHProblem("HelicalValley", _r.helical_valley, (-1.0, 0.0, 0.0), 0.0),
    MGHProblem("Bard", _r.bard, (1.0, 1.0, 1.0), 8.21487730657e-3, (17.4286,)),
    MGHProblem("Gaussian", _r.gaussian, (0.4, 1.0, 0.0), 1.12793276961e-8),
    MGHProblem("Meyer", _r.meyer, (0.02, 4000.0, 250.0), 87.9458551718),
    MGHProblem("Gulf", _r.gulf, (5.0, 2.5, 0.15), 0.0),
    MGHProblem("Box3D", _r.box3d, (0.0, 10.0, 20.0), 0.0),
    MGHProblem("PowellSingular", _r.powell_singular, (3.0, -1.0, 0.0, 1.0), 0.0),
    MGHProblem("Wood", _r.wood, (-3.0, -1.0, -3.0, -1.0), 0.0),
    MGHProblem(
        "KowalikOsborne", _r.kowalik_osborne, (0.25, 0.39, 0.415, 0.39), 3.07505603849e-4, (1.02734e-3,)
    ),
    MGHProblem("BrownDennis", _r.brown_dennis, (25.0, 5.0, -5.0, -1.0), 85822.2016263),
    MGHProblem("Osborne1", _r.osborne1, (0.5, 1.5, -1.0, 0.01, 0.02), 5.46489469748e-5),
    MGHProblem("BiggsEXP6", _r.biggs_exp6, (1.0, 2.0, 1.0, 1.0, 1.0, 1.0), 0.0, (5.65565e-3,)),
    MGHProblem(
        "Osborne2", _r.osborne2, (1.3, 0.65, 0.65, 0.7, 0.6, 3.0, 5.0, 7.0, 2.0, 4.5, 5.5), 4.01377362935e-2
    ),
    MGHProblem("Watson6", _r.watson, (0.0,) * 6, 2.28767005355e-3),
    MGHProblem("Watson9", _r.watson, (0.0,) * 9, 1.39976140442e-6),
    MGHProblem("Watson12", _r.watson, (0.0,) * 12, 4.72238110408e-10),
    MGHProblem("ExtendedRosenbrock", _r.extended_rosenbrock, (-1.2, 1.0) * 5, 0.0),
    MGHProblem("ExtendedPowellSingular", _r.extended_powell_singular, (3.0, -1.0, 0.0, 1.0) * 3, 0.0),
    MGHProblem("PenaltyI", _r.penalty1, (1.0, 2.0, 3.0, 4.0), 2.24997750086e-5),
    MGHProblem("PenaltyII", _r.penalty2, (0.5,) * 4, 9.37629300735e-6),
    MGHProblem("VariablyDimensioned", _r.variably_dimensioned, tuple(1 - j / 8 for j in range(1, 9)), 0.0),
    MGHProblem("Trigonometric", _r.trigonometric, (0.2,) * 5, 0.0),
    MGHProblem("BrownAlmostLinear", _r.brown_almost_linear, (0.5,) * 5, 0.0, (1.0,)),
    MGHProblem(
        "DiscreteBoundaryValue", _r.discrete_bv, tuple((j / 9) * (j / 9 - 1) for j in range(1, 9)), 0.0
    ),
    MGHProblem(
        "DiscreteIntegral", _r.discrete_integral, tuple((j / 11) * (j / 11 - 1) for j in range(1, 11)), 0.0
    ),
    MGHProblem("BroydenTridiagonal", _r.broyden_tridiagonal, (-1.0,) * 8, 0.0),
    MGHProblem("BroydenBanded", _r.broyden_banded, (-1.0,) * 10, 0.0),
    MGHProblem("LinearFullRank", _r.linear_full_rank, (1.0,) * 5, 5.0),
    # rank-deficient linear problems: f* = m(m − 1)/(2(2m + 1)) and (m² + 3m − 6)/(2(2m − 3)), m = 10
    MGHProblem("LinearRank1", _r.linear_rank1, (1.0,) * 5, 90 / 42),
    MGHProblem("LinearRank1ZeroColumns", _r.linear_rank1_zero, (1.0,) * 5, 124 / 34),
    # f* for n = 8 and 10: the paper's 3.51687e-3 and 6.50395e-3, to 12 digits by MINPACK at
    # xtol = ftol = gtol = 1e-15 from x0
    MGHProblem("Chebyquad8", _r.chebyquad, tuple(j / 9 for j in range(1, 9)), 3.51687372568e-3),
    MGHProblem("Chebyquad9", _r.chebyquad, tuple(j / 10 for j in range(1, 10)), 0.0),
    MGHProblem("Chebyquad10", _r.chebyquad, tuple(j / 11 for j in range(1, 11)), 6.50395480088e-3),
)

BY_NAME = {p.name: p for p in PROBLEMS}


def starts(problem: MGHProblem, factors=(1.0, 10.0, 100.0)) -> list[np.ndarray]:
    """MINPACK's test-driver starts: ``factor · x0``, or ``factor`` in every component
    when x0 = 0 and factor ≠ 1 (MINPACK's ``initpt``)."""
    x0 = np.asarray(problem.x0, dtype=np.float64)
    out = []
    for f in factors:
        if np.any(x0 != 0) or f == 1.0:
            out.append(x0 * f)
        else:
            out.append(np.full_like(x0, f))
    return out


def solved(problem: MGHProblem, sum_of_squares: float, rtol: float = 1e-6, atol: float = 1e-10) -> bool:
    """True when ``‖r‖²`` reaches the paper's global ``f*`` within tolerance."""
    f = float(sum_of_squares)
    return bool(np.isfinite(f) and f <= problem.fmin * (1 + rtol) + atol)
