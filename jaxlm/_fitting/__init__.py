"""Curve fitting on top of the LM core: ``jaxlm.fit`` and the scipy-compatible ``curve_fit``.

One module per job: :mod:`._api` (fit: dispatch), :mod:`._scipy` (curve_fit), :mod:`._inputs` (reading and
checking the caller's arrays), :mod:`._names` (parameter names, arguments by name),
:mod:`._precision` (the working dtype), :mod:`._transform` (bounds), :mod:`._objective` (weights,
losses, Poisson), :mod:`._result` (pcov, χ², dof, fit-layer statuses) and :mod:`._run`
(one curve under vmap, or the batch through the driver).

What happens to one curve (every member of a batch alike, under ``vmap``):

* **parameters**: the solver works on free variables ``u``; the model sees
  ``p = where(fixed, p0, T(u))`` where T maps ℝ into the bounds (MINUIT/lmfit):
  ``lo + (hi − lo)(sin u + 1)/2`` for two finite bounds, ``lo − 1 + √(u² + 1)`` for a
  lower bound only, ``hi + 1 − √(u² + 1)`` for an upper bound only, identity otherwise.
  So every iterate is inside the bounds; fixed parameters never move.
* **weights**: ``r = (f(x, *p) − y)/σ`` for per-point σ, or ``r = L⁻¹(f − y)`` for a
  covariance ``Σ = LLᵀ`` (scipy's transform).  Masked points contribute nothing: their
  residual is 0 and, for a covariance, their rows and columns of Σ are replaced by the
  identity, so ``rᵀΣ⁻¹r`` runs over the unmasked points exactly.
* **loss** (scipy ``least_squares``): cost ``½ f_scale² Σ ρ((r/f_scale)²)``; the step uses
  scipy's rescaled residual and Jacobian (``J̃ᵀJ̃`` a Gauss–Newton approximation of the
  robust cost's Hessian; Triggs et al. 2000).
* **Poisson** (Laurence & Chromy 2010, Gpufit's MLE): cost = half the deviance
  ``Σ μ − y + y log(y/μ)``, step from ``r̃ = (μ − y)/√μ``, ``J̃ = ∂μ/√μ``: ``J̃ᵀr̃`` is the
  deviance gradient and ``J̃ᵀJ̃`` the Fisher information.
* **covariance**: ``pcov = (J̃ᵀJ̃)⁻¹`` in the model's parameters (not in u), from the SVD
  (one-sided Jacobi, no LAPACK: see ``_covariance``) of the column-equilibrated
  J̃ at the solution, times χ²/dof unless ``absolute_sigma``
  (scipy's rule).  Fixed parameters get 0 rows/columns; if the data do not determine
  the free parameters (J̃ rank deficient) or dof ≤ 0 (without absolute_sigma), every
  free entry is ``inf``, as in scipy.
"""

from jaxlm._fitting._api import fit
from jaxlm._fitting._profile import ConfidenceIntervals, conf_interval
from jaxlm._fitting._result import FitResult
from jaxlm._fitting._scipy import curve_fit

__all__ = ["ConfidenceIntervals", "FitResult", "conf_interval", "curve_fit", "fit"]
