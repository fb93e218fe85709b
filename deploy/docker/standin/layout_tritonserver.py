"""Lay out the nvidia-pytriton wheel's tritonserver as the NGC image has it (stand-in image, stdlib only).

    python3 layout_tritonserver.py WHEEL /opt/tritonserver

bin/tritonserver, lib/ (the wheel's bundled libraries), caches/, backends/python/ with the Python
backend stub of the running python3.
"""

import stat
import sys
import zipfile
from pathlib import Path

PLACES = {  # wheel folder -> folder under the target
    "pytriton/tritonserver/bin/": "bin/",
    "pytriton/tritonserver/caches/": "caches/",
    "pytriton/tritonserver/backends/python/": "backends/python/",
    "nvidia_pytriton.libs/": "lib/",
    f"pytriton/tritonserver/python_backend_stubs/{sys.version_info[0]}.{sys.version_info[1]}/": "backends/python/",
}


def main(wheel: str, target: str) -> int:
    laid = 0
    with zipfile.ZipFile(wheel) as whl:
        for info in whl.infolist():
            for prefix, place in PLACES.items():
                if info.filename.startswith(prefix) and not info.is_dir() and "__pycache__" not in info.filename:
                    dest = Path(target) / place / info.filename[len(prefix):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(whl.read(info))
                    dest.chmod(stat.S_IMODE(info.external_attr >> 16) or 0o644)
                    laid += 1
    stub = Path(target) / "backends/python/triton_python_backend_stub"
    if not stub.is_file():
        print(f"layout_tritonserver: {wheel} has no Python backend stub for this python3", file=sys.stderr)
        return 1
    for exe in (stub, Path(target) / "bin/tritonserver"):
        exe.chmod(0o755)
    print(f"layout_tritonserver: {laid} files in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
