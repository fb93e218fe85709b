"""The `--backend-directory` tritonserver is given: the wheel's python backend and the project's backends.

`assemble_backend_directory` puts the wheel's `libtriton_python.so`, `triton_python_backend_utils.py`
and the stub for the running Python in `<target>/python/` (copies), and links every project
backend folder (`backends/<name>/` with a `model.py`) as `<target>/<name>`, so a model's
`backend: "<name>"` reaches `backends/<name>/model.py`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path

from pattern_runtime import paths
from pattern_runtime.server_env import TritonStartError, stub_path, wheel_dir


def _temporary_sibling(path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    return tmp


def _symlink(target: Path, link: Path) -> None:
    """Point `link` at `target`, atomically replacing whatever is there."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    tmp = _temporary_sibling(link)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _install_file(source: Path, dest: Path) -> None:
    """Put a copy of `source` at `dest` (atomic; skipped when the copy is there). A copy, not a hard
    link: tritonserver chmods a stub that fails to run to owner-execute only, which a link would pass
    on to the wheel's file."""
    if not dest.is_symlink() and dest.exists() and not os.path.samefile(source, dest):  # a link is replaced
        src_stat, dst_stat = source.stat(), dest.stat()
        if (src_stat.st_size, int(src_stat.st_mtime)) == (dst_stat.st_size, int(dst_stat.st_mtime)):
            return
    tmp = _temporary_sibling(dest)
    shutil.copy2(source, tmp)
    os.replace(tmp, dest)


def project_backend_folders(project_backends: Path | str = paths.BACKENDS) -> dict[str, Path]:
    """Pattern backends of the project: folders of `backends/` holding a `model.py`."""
    root = Path(project_backends)
    if not root.is_dir():
        return {}
    found = {p.name: p.resolve() for p in sorted(root.iterdir()) if (p / "model.py").is_file()}
    if "python" in found:
        raise TritonStartError(f"{root}/python would shadow Triton's python backend; rename it")
    return found


def assemble_backend_directory(
    target: Path | str,
    project_backends: Path | str = paths.BACKENDS,
    python_version: str | None = None,
) -> Path:
    """Make `target` a Triton `--backend-directory` (idempotent, safe to rerun).

    `target/python/` holds the wheel's `libtriton_python.so`, `triton_python_backend_utils.py`
    and the stub for `python_version` (default: the running Python) as real files (copies): for a
    Python-based backend, core rejects a `libtriton_python.so` whose real path "escapes backend
    directory", so a symlink to the wheel does not do. Every project
    backend folder is symlinked as `target/<name>`; links to backends that disappeared are
    removed. Away from the wheel the files' RPATH no longer finds the wheel's libraries:
    `server_env()` puts them on LD_LIBRARY_PATH.
    """
    target = Path(target)
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    wheel_python = wheel_dir() / "backends" / "python"
    _install_file(wheel_python / "libtriton_python.so", python_dir / "libtriton_python.so")
    _install_file(wheel_python / "triton_python_backend_utils.py", python_dir / "triton_python_backend_utils.py")
    _install_file(stub_path(python_version), python_dir / "triton_python_backend_stub")

    wanted = project_backend_folders(project_backends)
    for name, folder in wanted.items():
        _symlink(folder, target / name)
    for entry in target.iterdir():
        if entry.is_symlink() and entry.name not in wanted and not entry.name.startswith("."):
            entry.unlink(missing_ok=True)
    return target

