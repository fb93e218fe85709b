"""One declared spec per pattern backend (`pattern_kernel.spec.BackendSpec`), a module each,
named as the backend's folder; `SPECS` maps the backend name to its spec. A new backend adds
its module here and nothing else."""

from __future__ import annotations

import importlib
import pkgutil

from pattern_kernel.spec import BackendSpec


def _load() -> dict[str, BackendSpec]:
    specs = {}
    for module in pkgutil.iter_modules(__path__):
        spec = importlib.import_module(f"{__name__}.{module.name}").SPEC
        if spec.name != module.name:
            raise ImportError(f"{__name__}.{module.name} declares the spec of {spec.name!r}")
        specs[spec.name] = spec
    return dict(sorted(specs.items()))


SPECS: dict[str, BackendSpec] = _load()
