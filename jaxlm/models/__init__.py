"""Built-in models for :func:`jaxlm.fit` / :func:`jaxlm.curve_fit` and ``jaxlm fit``.

Each is a :class:`Model`: a pure ``f(x, *params)``, its ``param_names`` and a batched
``guess(x, y)`` used when ``p0`` is omitted::

    import jaxlm
    res = jaxlm.fit("gaussian", x, ys)               # by name, or jaxlm.models.gaussian
    dict(zip(jaxlm.models.gaussian.param_names, res.params[0]))

1-D models take ``x`` of shape ``(m,)``; the 2-D spot models take points ``(2, m)``
(row 0: x, row 1: y), e.g. a flattened pixel grid.
"""

from jaxlm.models import _library  # noqa: F401  (registers the models)
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
]
