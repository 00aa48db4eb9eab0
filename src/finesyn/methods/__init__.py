"""SSL methods, one file each, behind a name -> class registry (solo-learn style).

Adding a method: write one file with a subclass of `SSLMethod` decorated with `@register("name")`,
and import it below.
"""

from finesyn.methods.base import METHODS, SSLMethod, SSLOutput, build_method, register
from finesyn.methods import byol, mocov2, simclr, simsiam, supervised  # noqa: F401  (registration side effect)

__all__ = ["METHODS", "SSLMethod", "SSLOutput", "build_method", "register"]
