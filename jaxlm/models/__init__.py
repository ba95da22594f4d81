"""Built-in models for :func:`jaxlm.fit` / :func:`jaxlm.curve_fit` and ``jaxlm fit``.

Each is a :class:`Model`: a pure ``f(x, *params)``, its ``param_names`` and a batched
``guess(x, y)`` used when ``p0`` is omitted::

    import jaxlm
    res = jaxlm.fit("gaussian", x, ys)               # by name, or jaxlm.models.gaussian
    dict(zip(jaxlm.models.gaussian.param_names, res.params[0]))

1-D models take ``x`` of shape ``(m,)``; the 2-D spot models take points ``(2, m)``
(row 0: x, row 1: y), e.g. a flattened pixel grid.

Two families: Gpufit-style models with their own ``offset`` (``gaussian``,
``lorentzian``, …: one peak on a flat baseline, the common case) and lmfit's offset-free
lineshapes in lmfit's parameterisation (``gaussian_peak``, ``lorentzian_peak``,
``voigt``, ``moffat``, ``skewed_gaussian``, ``step``, ``rectangle``, ``linear``,
``constant``), the parts of composites::

    two_peaks = jaxlm.models.gaussian_peak + jaxlm.models.gaussian_peak + jaxlm.models.linear
    res = jaxlm.fit(two_peaks, x, ys)               # parameters gaussian_peak1_center, …
    curves = two_peaks.eval(x, res)                  # (..., m), one curve per fit
"""

from jaxlm.models import _library, _lineshapes, _peaks  # noqa: F401  (register the models)
from jaxlm.models._base import Model as Model
from jaxlm.models._base import get as get
from jaxlm.models._base import names as names
from jaxlm.models._library import polynomial as polynomial

gaussian = get("gaussian")
lorentzian = get("lorentzian")
pseudo_voigt = get("pseudo_voigt")
gaussian_2d = get("gaussian_2d")
gaussian_2d_elliptic = get("gaussian_2d_elliptic")
gaussian_2d_rotated = get("gaussian_2d_rotated")
exponential = get("exponential")
biexponential = get("biexponential")
triexponential = get("triexponential")
stretched_exponential = get("stretched_exponential")
damped_sine = get("damped_sine")
logistic = get("logistic")
hill = get("hill")
michaelis_menten = get("michaelis_menten")
power_law = get("power_law")
poly1, poly2, poly3, poly4, poly5 = (get(f"poly{d}") for d in range(1, 6))
gaussian_peak = get("gaussian_peak")
lorentzian_peak = get("lorentzian_peak")
voigt = get("voigt")
moffat = get("moffat")
skewed_gaussian = get("skewed_gaussian")
step = get("step")
rectangle = get("rectangle")
linear = get("linear")
constant = get("constant")

__all__ = [
    "Model",
    "get",
    "names",
    "polynomial",
    "gaussian",
    "lorentzian",
    "pseudo_voigt",
    "gaussian_2d",
    "gaussian_2d_elliptic",
    "gaussian_2d_rotated",
    "exponential",
    "biexponential",
    "triexponential",
    "stretched_exponential",
    "damped_sine",
    "logistic",
    "hill",
    "michaelis_menten",
    "power_law",
    "poly1",
    "poly2",
    "poly3",
    "poly4",
    "poly5",
    "gaussian_peak",
    "lorentzian_peak",
    "voigt",
    "moffat",
    "skewed_gaussian",
    "step",
    "rectangle",
    "linear",
    "constant",
]
