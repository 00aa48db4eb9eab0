"""SSL methods, one file each, behind a name -> class registry (solo-learn style).

Adding a method: one file here with a subclass of `SSLMethod` decorated with `@register("name")`
(every module of this package is imported below, so nothing else lists it), and its settings class
with one line in `config.METHOD_CONFIGS`.
"""

import importlib
import pkgutil

from finesyn.methods.base import METHODS, SSLMethod, SSLOutput, build_method, register

for _module in pkgutil.iter_modules(__path__):  # registration side effect of each method file
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "SSLMethod", "SSLOutput", "build_method", "register"]
