"""The residual functions of Moré, Garbow & Hillstrom's test problems (the numbers in
parentheses are the paper's); the table of problems, starts and minima is
:mod:`jaxlm.problems.mgh`."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def rosenbrock(x):  # (1)
    return jnp.stack([10 * (x[1] - x[0] ** 2), 1 - x[0]])


def freudenstein_roth(x):  # (2)
    return jnp.stack(
        [
            -13 + x[0] + ((5 - x[1]) * x[1] - 2) * x[1],
            -29 + x[0] + ((x[1] + 1) * x[1] - 14) * x[1],
        ]
    )


def powell_badly_scaled(x):  # (3)
    return jnp.stack([1e4 * x[0] * x[1] - 1, jnp.exp(-x[0]) + jnp.exp(-x[1]) - 1.0001])


def brown_badly_scaled(x):  # (4)
    return jnp.stack([x[0] - 1e6, x[1] - 2e-6, x[0] * x[1] - 2])


def beale(x):  # (5)
    y = jnp.array([1.5, 2.25, 2.625])
    i = np.arange(1, 4, dtype=np.float64)
    return y - x[0] * (1 - x[1] ** i)


def jennrich_sampson(x):  # (6), m = 10
    i = np.arange(1, 11, dtype=np.float64)
    return 2 + 2 * i - (jnp.exp(i * x[0]) + jnp.exp(i * x[1]))


def helical_valley(x):  # (7)
    theta = jnp.arctan2(x[1], x[0]) / (2 * jnp.pi)
    return jnp.stack([10 * (x[2] - 10 * theta), 10 * (jnp.sqrt(x[0] ** 2 + x[1] ** 2) - 1), x[2]])


_BARD_Y = np.array([0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73, 0.96, 1.34, 2.10, 4.39])


def bard(x):  # (8)
    u = np.arange(1, 16, dtype=np.float64)
    v = 16 - u
    w = np.minimum(u, v)
    return _BARD_Y - (x[0] + u / (v * x[1] + w * x[2]))


_GAUSS_Y = np.array(
    [
        0.0009,
        0.0044,
        0.0175,
        0.0540,
        0.1295,
        0.2420,
        0.3521,
        0.3989,
        0.3521,
        0.2420,
        0.1295,
        0.0540,
        0.0175,
        0.0044,
        0.0009,
    ]
)


def gaussian(x):  # (9)
    t = (7 - np.arange(1, 16, dtype=np.float64)) / 2
    return x[0] * jnp.exp(-x[1] * (t - x[2]) ** 2 / 2) - _GAUSS_Y


_MEYER_Y = np.array(
    [34780, 28610, 23650, 19630, 16370, 13720, 11540, 9744, 8261, 7030, 6005, 5147, 4427, 3820, 3307, 2872],
    dtype=np.float64,
)


def meyer(x):  # (10)
    t = 45 + 5 * np.arange(1, 17, dtype=np.float64)
    return x[0] * jnp.exp(x[1] / (t + x[2])) - _MEYER_Y


def gulf(x):  # (11), m = 99
    t = np.arange(1, 100, dtype=np.float64) / 100
    y = 25 + (-50 * np.log(t)) ** (2 / 3)
    return jnp.exp(-(jnp.abs(y - x[1]) ** x[2]) / x[0]) - t


def box3d(x):  # (12), m = 10
    t = 0.1 * np.arange(1, 11, dtype=np.float64)
    return jnp.exp(-t * x[0]) - jnp.exp(-t * x[1]) - x[2] * (np.exp(-t) - np.exp(-10 * t))


def powell_singular(x):  # (13)
    return jnp.stack(
        [
            x[0] + 10 * x[1],
            np.sqrt(5) * (x[2] - x[3]),
            (x[1] - 2 * x[2]) ** 2,
            np.sqrt(10) * (x[0] - x[3]) ** 2,
        ]
    )


def wood(x):  # (14)
    return jnp.stack(
        [
            10 * (x[1] - x[0] ** 2),
            1 - x[0],
            np.sqrt(90) * (x[3] - x[2] ** 2),
            1 - x[2],
            np.sqrt(10) * (x[1] + x[3] - 2),
            (x[1] - x[3]) / np.sqrt(10),
        ]
    )


_KO_Y = np.array([0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323, 0.0235, 0.0246])
_KO_U = np.array([4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625])


def kowalik_osborne(x):  # (15)
    u = _KO_U
    return _KO_Y - x[0] * (u**2 + u * x[1]) / (u**2 + u * x[2] + x[3])


def brown_dennis(x):  # (16), m = 20
    t = np.arange(1, 21, dtype=np.float64) / 5
    a = x[0] + t * x[1] - np.exp(t)
    b = x[2] + x[3] * np.sin(t) - np.cos(t)
    return a**2 + b**2


_OSB1_Y = np.array(
    [
        0.844,
        0.908,
        0.932,
        0.936,
        0.925,
        0.908,
        0.881,
        0.850,
        0.818,
        0.784,
        0.751,
        0.718,
        0.685,
        0.658,
        0.628,
        0.603,
        0.580,
        0.558,
        0.538,
        0.522,
        0.506,
        0.490,
        0.478,
        0.467,
        0.457,
        0.448,
        0.438,
        0.431,
        0.424,
        0.420,
        0.414,
        0.411,
        0.406,
    ]
)


def osborne1(x):  # (17)
    t = 10.0 * np.arange(33, dtype=np.float64)
    return _OSB1_Y - (x[0] + x[1] * jnp.exp(-t * x[3]) + x[2] * jnp.exp(-t * x[4]))


def biggs_exp6(x):  # (18), m = 13
    t = 0.1 * np.arange(1, 14, dtype=np.float64)
    y = np.exp(-t) - 5 * np.exp(-10 * t) + 3 * np.exp(-4 * t)
    return x[2] * jnp.exp(-t * x[0]) - x[3] * jnp.exp(-t * x[1]) + x[5] * jnp.exp(-t * x[4]) - y


_OSB2_Y = np.array(
    [
        1.366,
        1.191,
        1.112,
        1.013,
        0.991,
        0.885,
        0.831,
        0.847,
        0.786,
        0.725,
        0.746,
        0.679,
        0.608,
        0.655,
        0.616,
        0.606,
        0.602,
        0.626,
        0.651,
        0.724,
        0.649,
        0.649,
        0.694,
        0.644,
        0.624,
        0.661,
        0.612,
        0.558,
        0.533,
        0.495,
        0.500,
        0.423,
        0.395,
        0.375,
        0.372,
        0.391,
        0.396,
        0.405,
        0.428,
        0.429,
        0.523,
        0.562,
        0.607,
        0.653,
        0.672,
        0.708,
        0.633,
        0.668,
        0.645,
        0.632,
        0.591,
        0.559,
        0.597,
        0.625,
        0.739,
        0.710,
        0.729,
        0.720,
        0.636,
        0.581,
        0.428,
        0.292,
        0.162,
        0.098,
        0.054,
    ]
)


def osborne2(x):  # (19)
    t = np.arange(65, dtype=np.float64) / 10
    return _OSB2_Y - (
        x[0] * jnp.exp(-t * x[4])
        + x[1] * jnp.exp(-((t - x[8]) ** 2) * x[5])
        + x[2] * jnp.exp(-((t - x[9]) ** 2) * x[6])
        + x[3] * jnp.exp(-((t - x[10]) ** 2) * x[7])
    )


def watson(x):  # (20), m = 31; n = 6, 9, 12
    n = x.shape[0]
    t = np.arange(1, 30, dtype=np.float64) / 29
    j = np.arange(n, dtype=np.float64)
    dpow = np.where(j[None, :] >= 1, j[None, :] * t[:, None] ** np.maximum(j[None, :] - 1, 0.0), 0.0)
    s1 = dpow[:, 1:] @ x[1:]
    s2 = (t[:, None] ** j[None, :]) @ x
    r = s1 - s2**2 - 1
    return jnp.concatenate([r, jnp.stack([x[0], x[1] - x[0] ** 2 - 1])])


def extended_rosenbrock(x):  # (21), n = m = 10
    odd, even = x[0::2], x[1::2]
    return jnp.stack([10 * (even - odd**2), 1 - odd], axis=1).reshape(-1)


def extended_powell_singular(x):  # (22), n = m = 12
    a, b, c, d = x[0::4], x[1::4], x[2::4], x[3::4]
    r = [a + 10 * b, np.sqrt(5) * (c - d), (b - 2 * c) ** 2, np.sqrt(10) * (a - d) ** 2]
    return jnp.stack(r, axis=1).reshape(-1)


def penalty1(x):  # (23), n = 4, m = 5
    a = 1e-5
    return jnp.concatenate([np.sqrt(a) * (x - 1), jnp.stack([x @ x - 0.25])])


def penalty2(x):  # (24), n = 4, m = 8
    n = x.shape[0]
    a = 1e-5
    i = np.arange(2, n + 1, dtype=np.float64)
    y = np.exp(i / 10) + np.exp((i - 1) / 10)
    mid = np.sqrt(a) * (jnp.exp(x[1:] / 10) + jnp.exp(x[:-1] / 10) - y)
    tail = np.sqrt(a) * (jnp.exp(x[1:] / 10) - np.exp(-1 / 10))
    last = (n - np.arange(n, dtype=np.float64)) @ (x**2) - 1
    return jnp.concatenate([jnp.stack([x[0] - 0.2]), mid, tail, jnp.stack([last])])


def variably_dimensioned(x):  # (25), n = 8, m = n + 2
    n = x.shape[0]
    j = np.arange(1, n + 1, dtype=np.float64)
    s = j @ (x - 1)
    return jnp.concatenate([x - 1, jnp.stack([s, s**2])])


def trigonometric(x):  # (26), n = m = 5
    n = x.shape[0]
    i = np.arange(1, n + 1, dtype=np.float64)
    return n - jnp.sum(jnp.cos(x)) + i * (1 - jnp.cos(x)) - jnp.sin(x)


def brown_almost_linear(x):  # (27), n = m = 5
    n = x.shape[0]
    head = x[:-1] + jnp.sum(x) - (n + 1)
    return jnp.concatenate([head, jnp.stack([jnp.prod(x) - 1])])


def discrete_bv(x):  # (28), n = m = 8
    n = x.shape[0]
    h = 1 / (n + 1)
    t = np.arange(1, n + 1, dtype=np.float64) * h
    xp = jnp.concatenate([jnp.zeros(1, x.dtype), x, jnp.zeros(1, x.dtype)])
    return 2 * x - xp[:-2] - xp[2:] + h**2 * (x + t + 1) ** 3 / 2


def discrete_integral(x):  # (29), n = m = 10
    n = x.shape[0]
    h = 1 / (n + 1)
    t = np.arange(1, n + 1, dtype=np.float64) * h
    c = (x + t + 1) ** 3
    lower = np.tril(np.ones((n, n)))  # j <= i
    left = (1 - t) * ((lower * t[None, :]) @ c)
    right = t * (((1 - lower) * (1 - t)[None, :]) @ c)
    return x + h * (left + right) / 2


def broyden_tridiagonal(x):  # (30), n = m = 8
    xp = jnp.concatenate([jnp.zeros(1, x.dtype), x, jnp.zeros(1, x.dtype)])
    return (3 - 2 * x) * x - xp[:-2] - 2 * xp[2:] + 1


def broyden_banded(x):  # (31), n = m = 10, ml = 5, mu = 1
    n = x.shape[0]
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    band = ((j != i) & (j >= i - 5) & (j <= i + 1)).astype(np.float64)
    return x * (2 + 5 * x**2) + 1 - band @ (x * (1 + x))


def linear_full_rank(x):  # (32), n = 5, m = 10
    m = 10
    s = jnp.sum(x)
    head = x - 2 / m * s - 1
    tail = jnp.full((m - x.shape[0],), -2 / m * s - 1)
    return jnp.concatenate([head, tail])


def linear_rank1(x):  # (33), n = 5, m = 10
    i = np.arange(1, 11, dtype=np.float64)
    j = np.arange(1, x.shape[0] + 1, dtype=np.float64)
    return i * (j @ x) - 1


def linear_rank1_zero(x):  # (34), n = 5, m = 10: the first and last columns and rows are zero
    n = x.shape[0]
    i = np.arange(1, 11, dtype=np.float64)
    j = np.arange(1, n + 1, dtype=np.float64)
    inner = (np.where((j > 1) & (j < n), j, 0.0)) @ x
    rows = np.where((i > 1) & (i < 10), i - 1, 0.0)
    return rows * inner - 1


def chebyquad(x):  # (35), n = m
    n = x.shape[0]
    # shifted Chebyshev polynomials T_i(2x − 1) by the three-term recurrence
    u = 2 * x - 1
    t_prev, t_cur = jnp.ones_like(x), u
    rows = []
    for i in range(1, n + 1):
        integral = -1 / (i * i - 1) if i % 2 == 0 else 0.0
        rows.append(jnp.mean(t_cur) - integral)
        t_prev, t_cur = t_cur, 2 * u * t_cur - t_prev
    return jnp.stack(rows)
