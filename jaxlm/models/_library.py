"""The built-in models besides the peaks (:mod:`._peaks`): decays, sigmoids, power laws,
polynomials."""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxlm.models._base import (
    Model,
    area,
    broadcast_x,
    correlation_sign,
    crossing,
    fallback,
    line,
    median,
    percentile,
    positive,
    register,
    spacing,
    stack,
    valid_x,
    x_span,
)


# --------------------------------------------------------------------------- decays
def _decay_basics(x, y):
    """Offset (late level), initial excess over it, first x, and a 1/e time from the area."""
    xv = valid_x(x, y)
    x_first = jnp.nanmin(xv, -1)
    order_late = xv >= (x_first + 0.8 * x_span(x, y))[..., None]
    c = fallback(median(jnp.where(order_late, y, jnp.nan)), 0.0)
    y_first = median(jnp.where(xv <= (x_first + 0.05 * x_span(x, y))[..., None], y, jnp.nan))
    excess = fallback(y_first - c, 1.0)
    tau = positive(area(x, y, c) / excess, 0.3 * x_span(x, y))
    tau = jnp.minimum(tau, x_span(x, y))
    return excess, tau, c, fallback(x_first, 0.0)


def _exponential(x, amplitude, tau, offset):
    return amplitude * jnp.exp(-x / tau) + offset


def _exponential_guess(x, y):
    excess, tau, c, x0 = _decay_basics(x, y)
    return stack(excess * jnp.exp(x0 / tau), tau, c)


def _biexponential(x, amplitude1, tau1, amplitude2, tau2, offset):
    return amplitude1 * jnp.exp(-x / tau1) + amplitude2 * jnp.exp(-x / tau2) + offset


def _biexponential_guess(x, y):
    excess, tau, c, x0 = _decay_basics(x, y)
    t1, t2 = tau / 3, 2 * tau
    return stack(0.5 * excess * jnp.exp(x0 / t1), t1, 0.5 * excess * jnp.exp(x0 / t2), t2, c)


def _triexponential(x, amplitude1, tau1, amplitude2, tau2, amplitude3, tau3, offset):
    return (
        amplitude1 * jnp.exp(-x / tau1)
        + amplitude2 * jnp.exp(-x / tau2)
        + amplitude3 * jnp.exp(-x / tau3)
        + offset
    )


def _triexponential_guess(x, y):
    excess, tau, c, x0 = _decay_basics(x, y)
    t1, t2, t3 = tau / 6, tau, 3 * tau
    a = excess / 3
    return stack(a * jnp.exp(x0 / t1), t1, a * jnp.exp(x0 / t2), t2, a * jnp.exp(x0 / t3), t3, c)


def _safe_power(base, exponent):
    """``base ** exponent`` for base ≥ 0 whose derivatives stay finite at base = 0
    (``d/dβ 0^β = 0·log 0`` would be NaN and poison the Jacobian).  As ``exp(β·log b)``:
    its derivatives reuse the one ``log`` and ``exp`` (``pow``'s own derivative rule
    calls ``pow`` and ``log`` again), a third less time for a Hill model's Jacobian.
    The relative error is about ``|β·log b|`` ulp: under 90 for any finite float32
    result, ~10 for a Hill curve over two decades of x."""
    positive_base = base > 0
    safe = jnp.where(positive_base, base, 1)
    return jnp.where(positive_base, jnp.exp(exponent * jnp.log(safe)), 0)


def _stretched_exponential(x, amplitude, tau, beta, offset):
    return amplitude * jnp.exp(-_safe_power(x / tau, beta)) + offset


def _stretched_exponential_guess(x, y):
    """The levels and 1/e time of :func:`_decay_basics`, then the exponent and time from
    the line log(−log f) = beta·(log x − log tau), f = (y − offset)/amplitude, through the
    decay (0.1 < f < 0.9).  From it a fit of beta = 1.6 takes 4 steps (median) where it
    took 13 from beta = 1; for beta < 1 the late level that the median of the last fifth
    of x gives is too high, and the start is about as far as beta = 1."""
    excess, tau, c, _ = _decay_basics(x, y)
    f = (y - c[..., None]) / excess[..., None]
    beta, log_tau = _through_the_transition(x, y, f, lambda f: jnp.log(-jnp.log(f)))
    return stack(excess, positive(jnp.exp(log_tau), tau), beta, c)


def _damped_sine(x, amplitude, tau, frequency, phase, offset):
    return amplitude * jnp.exp(-x / tau) * jnp.sin(2 * math.pi * frequency * x + phase) + offset


def _damped_sine_guess(x, y):
    """Frequency and phase from the largest discrete-Fourier component (uniform x
    assumed); the decay time and amplitude from the mean squares of the two halves of x.
    From these a fit takes 4 steps (median) where it took 13 from τ = the span of x;
    where the halves do not show a decay (τ < 0, no decay, under a period per half) τ
    starts at the span of x and the amplitude at the largest |y − offset|."""
    c = fallback(jnp.nanmean(y, -1), 0.0)
    yc = jnp.nan_to_num(y - c[..., None], nan=0.0)
    x_first = jnp.nanmin(valid_x(x, y), -1)
    m = y.shape[-1]
    dx = positive(spacing(x, y), 1.0)
    spectrum = jnp.fft.rfft(yc, axis=-1)
    k = jnp.argmax(jnp.abs(spectrum[..., 1:]), axis=-1) + 1
    freq = k.astype(y.dtype) / (m * dx)
    # phase of sin(2πf(x − x_first) + φ') from the DFT coefficient, then referred to x = 0
    coef = jnp.take_along_axis(spectrum, k[..., None], -1)[..., 0]
    phase = jnp.angle(coef) + math.pi / 2 - 2 * math.pi * freq * x_first
    span = positive(x_span(x, y), 1.0)
    x_first = fallback(x_first, 0.0)
    # the decay from the mean squares of the two halves of x, ∝ exp(−2x/τ) half a span
    # apart (each half holding a period or more): τ = span / log(ms₁/ms₂)
    first = ~jnp.isnan(y) & (broadcast_x(x, y) < (x_first + 0.5 * span)[..., None])
    second = ~jnp.isnan(y) & ~first
    count = lambda half: jnp.maximum(jnp.sum(half, -1), 1).astype(y.dtype)  # noqa: E731
    ms1 = jnp.sum(jnp.where(first, yc**2, 0), -1) / count(first)
    ms2 = jnp.sum(jnp.where(second, yc**2, 0), -1) / count(second)
    ratio = ms1 / jnp.where(ms2 > 0, ms2, 1)
    decays = (ms2 > 0) & (ratio > 1.05) & (freq * span >= 2)
    tau = jnp.where(decays, span / jnp.log(jnp.where(decays, ratio, 2.0)), span)
    # and A from the mean square over x: A²/2 · mean of exp(−2(x − x_first)/τ)
    spans = 2 * span / tau
    envelope = (1 - jnp.exp(-spans)) / spans
    from_ms = jnp.sqrt(2 * 0.5 * (ms1 + ms2) / envelope)
    decays &= jnp.isfinite(from_ms) & (from_ms > 0)
    peak = positive(jnp.nanmax(jnp.abs(y - c[..., None]), -1), 1.0)
    return stack(
        jnp.where(decays, from_ms, peak) * jnp.exp(x_first / tau),
        tau,
        freq.astype(y.dtype),
        jnp.mod(phase + math.pi, 2 * math.pi) - math.pi,
        c,
    )


register(
    Model(
        "exponential",
        _exponential,
        ("amplitude", "tau", "offset"),
        _exponential_guess,
        1,
        "amplitude·exp(−x/tau) + offset",
    )
)
register(
    Model(
        "biexponential",
        _biexponential,
        ("amplitude1", "tau1", "amplitude2", "tau2", "offset"),
        _biexponential_guess,
        1,
        "Σ₁² amplitude_i·exp(−x/tau_i) + offset",
    )
)
register(
    Model(
        "triexponential",
        _triexponential,
        ("amplitude1", "tau1", "amplitude2", "tau2", "amplitude3", "tau3", "offset"),
        _triexponential_guess,
        1,
        "Σ₁³ amplitude_i·exp(−x/tau_i) + offset",
    )
)
register(
    Model(
        "stretched_exponential",
        _stretched_exponential,
        ("amplitude", "tau", "beta", "offset"),
        _stretched_exponential_guess,
        1,
        "amplitude·exp(−(x/tau)^beta) + offset  (x ≥ 0)",
    )
)
register(
    Model(
        "damped_sine",
        _damped_sine,
        ("amplitude", "tau", "frequency", "phase", "offset"),
        _damped_sine_guess,
        1,
        "amplitude·exp(−x/tau)·sin(2π·frequency·x + phase) + offset",
    )
)


# --------------------------------------------------------------------------- sigmoids, rates
def _logistic(x, amplitude, center, rate, offset):
    return amplitude / (1 + jnp.exp(-rate * (x - center))) + offset


def _logistic_guess(x, y):
    lo, hi = percentile(y, 2.0), percentile(y, 98.0)
    amplitude = positive(hi - lo, 1.0)
    center = crossing(x, y, 0.5 * (lo + hi))
    # for a logistic, x(75 %) − x(25 %) = 2·ln 3 / rate: count the points in between
    inside = (y > (lo + 0.25 * amplitude)[..., None]) & (y < (lo + 0.75 * amplitude)[..., None])
    width = positive(jnp.sum(inside, -1).astype(y.dtype) * spacing(x, y), 0.2 * x_span(x, y))
    rate = correlation_sign(x, y) * 2 * math.log(3.0) / width
    return stack(amplitude, fallback(center, 0.0), rate, fallback(lo, 0.0))


def _hill(x, bottom, top, ec50, hill):
    xn = _safe_power(jnp.abs(x / ec50), hill)
    return bottom + (top - bottom) * xn / (1 + xn)


def _hill_guess(x, y):
    """Levels from the 2nd and 98th percentiles, then the Hill plot: the fraction
    f = (y − bottom)/(top − bottom) obeys log(f/(1 − f)) = hill·(log x − log ec50), a
    straight line fitted by least squares through the points with 0.1 < f < 0.9 and x > 0.
    Where fewer than 3 points lie there, or the slope is not positive, the exponent
    starts at 1 and ec50 at the x where y crosses the midpoint.  From the line, a fit of
    the model's test case takes 5 steps (median) where it took 14 from an exponent of 1
    (``benchmarks/guess_steps.py``)."""
    lo, hi = percentile(y, 2.0), percentile(y, 98.0)
    rising = correlation_sign(x, y) > 0
    bottom, top = jnp.where(rising, lo, hi), jnp.where(rising, hi, lo)
    ec50 = positive(crossing(x, y, 0.5 * (lo + hi)), median(valid_x(x, y)))
    f = (y - bottom[..., None]) / (top - bottom)[..., None]
    slope, log_ec50 = _through_the_transition(x, y, f, lambda f: jnp.log(f / (1 - f)))
    return stack(fallback(bottom, 0.0), fallback(top, 1.0), positive(jnp.exp(log_ec50), ec50), slope)


def _through_the_transition(x, y, f, linearise):
    """Slope and x-intercept (as log x) of the line ``linearise(f)`` against log x through
    the points with 0.1 < f < 0.9 and x > 0: the exponent and log of the scale of a Hill
    curve or a stretched exponential.  A slope of 1 and a NaN intercept where the line is
    not determined or its slope is not positive."""
    xb = broadcast_x(x, y)
    ok = (f > 0.1) & (f < 0.9) & (xb > 0)  # False where f or x is NaN
    lx = jnp.log(jnp.where(ok, xb, 1))
    slope, mx, mf, determined = line(lx, linearise(jnp.where(ok, f, 0.5)), ok)
    rising = determined & (slope > 0)
    slope = jnp.where(rising, slope, 1)
    return slope, jnp.where(rising, mx - mf / slope, jnp.nan)


def _michaelis_menten(x, vmax, km):
    return vmax * x / (km + x)


def _michaelis_menten_guess(x, y):
    vmax = positive(1.2 * jnp.nanmax(y, -1), 1.0)
    km = positive(crossing(x, y, 0.5 * vmax), median(valid_x(x, y)))
    return stack(vmax, km)


def _power_law(x, amplitude, exponent):
    return amplitude * _safe_power(x, exponent)


def _power_law_guess(x, y):
    """Straight line through (log x, log|y|) by least squares over the valid points."""
    ok = ~jnp.isnan(y) & (broadcast_x(x, y) > 0) & (y != 0)
    lx = jnp.log(jnp.where(ok, broadcast_x(x, y), 1))
    ly = jnp.log(jnp.abs(jnp.where(ok, y, 1)))
    slope, mx, my, _ = line(lx, ly, ok, least=2)
    b = fallback(slope, 1.0)
    sign = jnp.sign(median(y))
    a = fallback(jnp.where(sign == 0, 1, sign) * jnp.exp(my - b * mx), 1.0)
    return stack(a, b)


register(
    Model(
        "logistic",
        _logistic,
        ("amplitude", "center", "rate", "offset"),
        _logistic_guess,
        1,
        "amplitude/(1 + exp(−rate·(x−center))) + offset",
    )
)
register(
    Model(
        "hill",
        _hill,
        ("bottom", "top", "ec50", "hill"),
        _hill_guess,
        1,
        "bottom + (top−bottom)·(x/ec50)^hill/(1 + (x/ec50)^hill)  (x ≥ 0)",
    )
)
register(
    Model(
        "michaelis_menten", _michaelis_menten, ("vmax", "km"), _michaelis_menten_guess, 1, "vmax·x/(km + x)"
    )
)
register(
    Model(
        "power_law",
        _power_law,
        ("amplitude", "exponent"),
        _power_law_guess,
        1,
        "amplitude·x^exponent  (x ≥ 0)",
    )
)


# --------------------------------------------------------------------------- polynomials
def polynomial(degree: int) -> Model:
    """``c0 + c1·x + … + c_degree·x^degree``; its guess is the linear least-squares fit."""
    if not isinstance(degree, int) or isinstance(degree, bool) or degree < 0:
        raise ValueError(f"degree must be a non-negative int, got {degree!r}")
    names = tuple(f"c{i}" for i in range(degree + 1))

    def fn(x, *c):
        return sum(ci * x**i for i, ci in enumerate(c))

    def guess(x, y):
        ok = ~jnp.isnan(y)
        xb = jnp.where(ok, broadcast_x(x, y), 0)
        # centred and scaled abscissa keeps the normal equations well conditioned
        xv = valid_x(x, y)
        mid = fallback(0.5 * (jnp.nanmax(xv, -1) + jnp.nanmin(xv, -1)), 0.0)[..., None]
        half = positive(0.5 * x_span(x, y), 1.0)[..., None]
        t = (xb - mid) / half
        v = jnp.stack([jnp.where(ok, t**i, 0) for i in range(degree + 1)], -1)  # (..., m, d+1)
        a = jnp.einsum("...mi,...mj->...ij", v, v)
        rhs = jnp.einsum("...mi,...m->...i", v, jnp.where(ok, y, 0))
        eye = jnp.broadcast_to(jnp.eye(degree + 1, dtype=y.dtype), a.shape)
        reg = 1e-12 * eye * jnp.trace(a, axis1=-2, axis2=-1)[..., None, None]
        q = jnp.linalg.solve(a + reg, rhs[..., None])[..., 0]  # coefficients in t
        # back to x: p(x) = Σ q_k ((x − mid)/half)^k, expanded by the binomial theorem
        coeffs = []
        for i in range(degree + 1):
            ci = 0.0
            for k in range(i, degree + 1):
                ci = ci + q[..., k] * math.comb(k, i) * (-mid[..., 0]) ** (k - i) / half[..., 0] ** k
            coeffs.append(ci)
        return stack(*[fallback(c, 0.0) for c in coeffs])

    return Model(f"poly{degree}", fn, names, guess, 1, " + ".join(f"c{i}·x^{i}" for i in range(degree + 1)))


for _degree in range(1, 6):
    register(polynomial(_degree))
