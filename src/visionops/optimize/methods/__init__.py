"""The optimisation methods, one module each: every module in this folder registers itself.

Adding a method is adding a file here that decorates its ``build(ctx)`` with
``visionops.optimize.method.register_method``.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
