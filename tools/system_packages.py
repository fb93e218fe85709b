"""The Debian packages `make demo` and `make test` need, installed when missing.

    python3 tools/system_packages.py demo|test [--dry-run]

Each package is checked by what it provides (a program, a shared library the loader finds, a
file), so a machine that has them all does nothing and prints nothing. The missing ones are
installed with `apt-get update` then `apt-get install --no-install-recommends`: as root, else
through `sudo -n` where that needs no password; otherwise it stops at once, printing the one
command to run. Standard library only: the Makefile runs it with the base python3, before any
virtualenv (and any pip install) exists.
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

# Debian's libnginx-mod-http-js; the gateway loads it from there (pattern_runtime.gateway.DEBIAN_NJS_MODULE)
NJS_MODULE = "/usr/lib/nginx/modules/ngx_http_js_module.so"
# where Debian puts daemons (nginx) and ldconfig, off a normal user's PATH
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


@dataclass(frozen=True)
class Need:
    """A Debian package (`package`: an apt-get argument, a version pin allowed) and what shows it is there."""

    package: str
    why: str
    programs: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()  # sonames the loader must find
    files: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        """What of it is absent (empty: present)."""
        return ([p for p in self.programs if not find_program(p)]
                + [lib for lib in self.libraries if lib not in loader_libraries()]
                + [f for f in self.files if not Path(f).is_file()])


def find_program(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN])
    return shutil.which(name, path=path)


@functools.cache
def loader_libraries() -> frozenset[str]:
    """Sonames in the loader's cache (`ldconfig -p`), plus those in the running Python's own LIBDIR
    (a shared build outside the system paths, e.g. pyenv's: the launcher puts it on LD_LIBRARY_PATH)."""
    found: set[str] = set()
    ldconfig = find_program("ldconfig")
    if ldconfig:
        listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=False).stdout
        found.update(line.split()[0] for line in listing.splitlines()[1:] if line.strip())
    libdir = sysconfig.get_config_var("LIBDIR")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and Path(libdir).is_dir():
        found.update(p.name for p in Path(libdir).glob("libpython*.so*"))
    return frozenset(found)


def libpython_need(version: tuple[int, int] = sys.version_info[:2]) -> Need:
    """The Python backend stub links `libpythonX.Y.so.1.0` of the Python that builds the virtualenvs
    (this one); Debian's python3 and python3-venv do not pull it in."""
    tag = f"{version[0]}.{version[1]}"
    return Need(f"libpython{tag}", "the Python backend stub links it", libraries=(f"libpython{tag}.so.1.0",))


def needs(target: str) -> list[Need]:
    demo = [
        Need("redis-server", "the patterns' Redis", programs=("redis-server",)),
        Need("nginx", "the gateway", programs=("nginx",)),
        Need("libnginx-mod-http-js", "the gateway's njs module", files=(NJS_MODULE,)),
        libpython_need(),
        Need("openssl", "the TLS certificates", programs=("openssl",)),
        Need("curl", "the docs' commands", programs=("curl",)),
        Need("logrotate", "serve's logs", programs=("logrotate",)),
    ]
    if target == "demo":
        return demo
    return demo + [
        # Debian 12's 2.42, with promtool; no recommends: no node exporter service
        Need("prometheus=2.42.*", "the monitoring test's Prometheus", programs=("prometheus", "promtool")),
        Need("libb64-0d", "perf_analyzer", libraries=("libb64.so.0d",)),
        Need("wrk", "the benchmark's HTTP load", programs=("wrk",)),
        Need("make", "the Makefile", programs=("make",)),
    ]


def _can_sudo() -> bool:
    sudo = find_program("sudo")
    return bool(sudo) and subprocess.run([sudo, "-n", "true"], capture_output=True, check=False).returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=("demo", "test"))
    parser.add_argument("--dry-run", action="store_true", help="print what is missing and the command; install nothing")
    args = parser.parse_args(argv)

    missing = [need for need in needs(args.target) if need.missing()]
    if not missing:
        return 0
    packages = [need.package for need in missing]
    what = ", ".join(f"{need.package} ({need.why}: {' '.join(need.missing())})" for need in missing)
    command = ["apt-get", "install", "--no-install-recommends", *packages]
    as_root = ["sudo", "-n", "env", "DEBIAN_FRONTEND=noninteractive"] if _can_sudo() else None
    prefix = [] if os.geteuid() == 0 else as_root
    to_run = f"sudo apt-get update && sudo {shlex.join(command)}"
    if args.dry_run or prefix is None or not find_program("apt-get"):
        print(f"make {args.target} needs Debian packages that are missing: {what}", file=sys.stderr)
        if not find_program("apt-get"):
            print("no apt-get here: install the equivalents with your package manager", file=sys.stderr)
        else:
            print(f"run: {to_run}", file=sys.stderr)
        return 0 if args.dry_run else 1

    print(f"make {args.target}: installing the missing Debian packages: {what}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-qq"], [*command[:2], "-y", "-q", *command[2:]]):
        if subprocess.run([*prefix, *step], env=env, check=False).returncode != 0:
            print(f"make {args.target}: `{shlex.join(step)}` failed; run: {to_run}", file=sys.stderr)
            return 1
    loader_libraries.cache_clear()
    still = [need for need in missing if need.missing()]
    if still:
        print(f"make {args.target}: installed, but still missing: "
              + ", ".join(f"{need.package} ({' '.join(need.missing())})" for need in still), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
