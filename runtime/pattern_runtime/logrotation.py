"""Size-capped logs for `triton-patterns serve`, rotated by Debian's `logrotate`.

    rotation = LogRotation(log_dir, max_bytes=10 * 2**20, keep=5)
    while serving:
        rotation.check()        # a stat per log; logrotate when one is over its size

Every `*.log` of the folder is rotated: once over `max_bytes` it is copied to `NAME.1` (the older
ones shift to `.2` ... `.keep`, the oldest is deleted) and truncated in place (`copytruncate`), so a
log and its rotations hold at most (keep + 1) x (max_bytes + what is written between two checks).
In place, because the writers keep their files open: tritonserver's and Redis's stdout is a file
the launcher opened, and nginx's workers, which reopen their logs by path on SIGUSR1, run as
`nobody` under root and cannot reach a private folder (~/.local/state of root). Every writer
appends (O_APPEND), so after the truncation it writes at the start of the file; what it writes
between the copy and the truncation (milliseconds) is lost. logrotate's config (written before
each run) and state are in the folder.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

LOG = logging.getLogger(__name__)

_SIZE = re.compile(r"^(\d+)([kKmMgG]?)$")
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}
LOGROTATE_TIMEOUT_S = 30.0


class LogRotationError(RuntimeError):
    """logrotate is missing, or refused its config."""


def parse_size(text: str | int) -> int:
    """Bytes of a size such as 10M, 512k or 4096 (k, M, G: powers of 1024)."""
    match = _SIZE.match(str(text).strip())
    if not match:
        raise ValueError(f"a log size must be bytes or a number with k, M or G (e.g. 10M), not {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def logrotate_binary() -> str:
    """The logrotate program (Debian's package `logrotate`; /usr/sbin is searched too)."""
    path = shutil.which("logrotate", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if path is None:
        raise LogRotationError("logrotate not found: apt-get install logrotate (or --log-max-size 0: no rotation)")
    return path


class LogRotation:
    """The `*.log` files of `log_dir`, each rotated once it is over `max_bytes`, `keep` rotations kept."""

    def __init__(self, log_dir: Path | str, max_bytes: int, keep: int):
        if max_bytes <= 0 or keep < 1:
            raise ValueError(f"log rotation needs max_bytes > 0 and keep >= 1, not {max_bytes} and {keep}")
        self.log_dir = Path(log_dir)
        self.max_bytes, self.keep = max_bytes, keep
        self.binary = logrotate_binary()
        self.config_path = self.log_dir / "logrotate.conf"
        self.state_path = self.log_dir / "logrotate.state"

    def logs(self) -> list[Path]:
        return sorted(p.absolute() for p in self.log_dir.glob("*.log") if p.is_file())

    def config(self, logs: list[Path]) -> str:
        user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
        body = [f"size {self.max_bytes}", f"rotate {self.keep}", "copytruncate", "missingok", "notifempty",
                "nocompress", f"su {user} {group}"]  # su: a log folder writable by a group is accepted too
        return ("# written by triton-patterns serve before each run: this folder's logs, rotated by size\n"
                + " ".join(f'"{log}"' for log in logs) + " {\n" + "".join(f"    {line}\n" for line in body) + "}\n")

    def check(self) -> bool:
        """Run logrotate if a log is over its size (True); what it says on failure is logged."""
        logs = self.logs()
        if not any(_size(log) > self.max_bytes for log in logs):
            return False
        self.rotate(logs)
        return True

    def rotate(self, logs: list[Path]) -> None:
        # mode 0644: logrotate ignores a config that others may write
        self.config_path.write_text(self.config(logs))
        self.config_path.chmod(0o644)
        try:
            done = subprocess.run([self.binary, "--state", str(self.state_path), str(self.config_path)],
                                  capture_output=True, text=True, timeout=LOGROTATE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            LOG.error("logrotate did not finish within %.0fs (%s)", LOGROTATE_TIMEOUT_S, self.config_path)
            return
        if done.returncode != 0 or done.stderr.strip():
            LOG.error("logrotate %s: exit code %d: %s", self.config_path, done.returncode, done.stderr.strip())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
