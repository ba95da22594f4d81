"""One registry of small test problems and one of solver configurations."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True, eq=False)
class Problem:
    name: str
    fun: object  # fun(params, *args) -> residuals
    x0: np.ndarray
    args: tuple
    solution: np.ndarray  # known minimiser


def _exp_decay(p, t, y):
    return p[0] * jnp.exp(-p[1] * t) + p[2] - y


def _rosenbrock(p):
    return jnp.stack([10 * (p[1] - p[0] ** 2), 1 - p[0]])


def _gaussian(p, x, y):
    return p[0] * jnp.exp(-0.5 * ((x - p[1]) / p[2]) ** 2) - y


def make_problems():
    rng = np.random.default_rng(0)
    t = np.linspace(0.0, 4.0, 40)
    true = np.array([2.5, 1.3, 0.4])
    y_exact = true[0] * np.exp(-true[1] * t) + true[2]
    x = np.linspace(-3.0, 3.0, 64)
    g_true = np.array([1.7, 0.3, 0.8])
    g_y = g_true[0] * np.exp(-0.5 * ((x - g_true[1]) / g_true[2]) ** 2)
    y_noisy = y_exact + 0.01 * rng.standard_normal(t.shape)
    return {
        "exp_decay_exact": Problem(
            "exp_decay_exact", _exp_decay, np.array([1.0, 0.5, 0.0]), (t, y_exact), true
        ),
        "exp_decay_noisy": Problem(
            "exp_decay_noisy", _exp_decay, np.array([1.0, 0.5, 0.0]), (t, y_noisy), None
        ),
        "rosenbrock": Problem("rosenbrock", _rosenbrock, np.array([-1.2, 1.0]), (), np.array([1.0, 1.0])),
        "gaussian": Problem("gaussian", _gaussian, np.array([1.0, 0.0, 1.0]), (x, g_y), g_true),
    }


PROBLEMS = make_problems()

SOLVER_CONFIGS = [
    dict(damping=d, update=u, linear_solver=s, geodesic=g)
    for d, u, s, g in itertools.product(
        ("levenberg", "marquardt", "more"), ("nielsen", "marquardt"), ("qr", "cholesky"), (False, True)
    )
] + [
    dict(damping="relative", update="nielsen", linear_solver=s, geodesic=g, restart=r)
    for s, g, r in (
        ("qr", False, "more"),
        ("cholesky", True, "more"),
        ("cholesky", False, None),
        ("qr", True, None),
    )
]


def config_id(c):
    return "-".join(
        f"{v}" if not isinstance(v, bool) else ("geo" if v else "nogeo") for v in c.values() if v is not None
    )


def as_args(problem, dtype=jnp.float64):
    return tuple(jnp.asarray(a, dtype) for a in problem.args)


class Compiles(logging.Handler):
    """Collects JAX's "Compiling …" log lines while active (``with Compiles() as c:``;
    ``c.lines`` afterwards), through ``jax.log_compiles``."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        if "ompiling" in record.getMessage():
            self.lines.append(record.getMessage())

    def __enter__(self):
        self._log = jax.log_compiles(True)
        self._log.__enter__()
        logging.getLogger("jax").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("jax").removeHandler(self)
        self._log.__exit__(*exc)
