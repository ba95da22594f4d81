"""jaxlm: batched, differentiable Levenberg–Marquardt least squares in JAX."""

from jaxlm import models as models
from jaxlm._fitting import ConfidenceIntervals as ConfidenceIntervals
from jaxlm._fitting import FitResult as FitResult
from jaxlm._fitting import conf_interval as conf_interval
from jaxlm._fitting import curve_fit as curve_fit
from jaxlm._fitting import fit as fit
from jaxlm._least_squares import Solution as Solution
from jaxlm._least_squares import least_squares as least_squares
from jaxlm._least_squares import least_squares_batch as least_squares_batch
from jaxlm._plot import plot as plot
from jaxlm._residual import Objective as Objective
from jaxlm._solver import LevenbergMarquardt as LevenbergMarquardt
from jaxlm._solver import LMState as LMState
from jaxlm._solver import default_tolerance as default_tolerance
from jaxlm._status import Status as Status
from jaxlm._status import is_success as is_success
from jaxlm._stream import Interrupted as Interrupted

__version__ = "0.1.0"

__all__ = [
    "ConfidenceIntervals",
    "FitResult",
    "Interrupted",
    "LMState",
    "LevenbergMarquardt",
    "Objective",
    "Solution",
    "Status",
    "__version__",
    "conf_interval",
    "curve_fit",
    "default_tolerance",
    "fit",
    "is_success",
    "least_squares",
    "least_squares_batch",
    "models",
    "plot",
]
