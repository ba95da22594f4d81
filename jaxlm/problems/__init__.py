"""Reference least-squares problems with known answers, shared by tests and benchmarks.

* :mod:`jaxlm.problems.nist` — the 27 NIST StRD nonlinear regression problems with
  certified values (data shipped with the package).
* :mod:`jaxlm.problems.mgh` — classic problems from Moré, Garbow & Hillstrom,
  "Testing unconstrained optimization software", ACM TOMS 7 (1981), with their
  standard starting points and scale factors.
"""

from jaxlm.problems import mgh as mgh
from jaxlm.problems import nist as nist

__all__ = ["mgh", "nist"]
