"""The spec registry: a pattern backend is one folder, `<backends>/<name>/model.py` with its spec
beside it, `<backends>/<name>/spec.py`, a module defining `SPEC = BackendSpec("<name>", ...)`
(`pattern_kernel.spec`). The same folder is found in the checkout (`backends/`), in the server's
backend directory (the launcher's links, the image's /opt/tritonserver/backends) and in a copy of
a pattern, so the backend reads its spec where Triton loaded its model.py (`PatternModel`) and the
tools read every spec of a backends folder (`load_specs`).

A spec module imports `pattern_kernel.spec` (and other Triton-free kernel modules) only.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

from pattern_kernel.spec import BackendSpec


def load_spec(folder: Path | str) -> BackendSpec:
    """The spec of the backend folder `folder` (its `spec.py`); ImportError saying what is wrong
    when there is none or it declares another backend."""
    folder = Path(folder)
    path = folder / "spec.py"
    if not path.is_file():
        raise ImportError(f"backend folder {folder} has no spec.py (a pattern backend declares its spec beside "
                          f"its model.py)")
    module_name = f"pattern_backend_specs.{folder.name}"
    found = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(found)
    sys.modules[module_name] = module
    found.loader.exec_module(module)
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, BackendSpec):
        raise ImportError(f"{path} defines no SPEC = BackendSpec(...)")
    if spec.name != folder.name:
        raise ImportError(f"{path} declares the spec of {spec.name!r}, not of its folder {folder.name!r}")
    return spec


@functools.cache
def _load_specs(root: Path) -> dict[str, BackendSpec]:
    folders = sorted(p for p in root.iterdir() if (p / "model.py").is_file() and (p / "spec.py").is_file())
    return {folder.name: load_spec(folder) for folder in folders}


def load_specs(root: Path | str) -> dict[str, BackendSpec]:
    """Backend name -> spec, for every folder of `root` that holds a model.py and a spec.py."""
    return dict(_load_specs(Path(root).resolve()))
