"""The server side of the admin key file: the launcher and `serve` create it the first time (mode
0600, random), clients read it (`triton_patterns.credentials`). Its place is
`$TRITON_PATTERNS_ADMIN_KEY_FILE`, by default the checkout's `build/admin.key` (paths.py)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pattern_kernel.access import ADMIN_KEY_FILE_ENV, check_key, new_key
from pattern_runtime.paths import ADMIN_KEY_FILE
from triton_patterns import credentials


def admin_key_file() -> Path:
    return Path(os.environ.get(ADMIN_KEY_FILE_ENV) or ADMIN_KEY_FILE)


def configured_admin_key(create: bool = False) -> str | None:
    """The admin key as a client reads it (`$TRITON_PATTERNS_ADMIN_KEY`, else the key file's); with
    `create`, a new random key is written to the key file when there is none (0600, atomically:
    concurrent creators agree)."""
    key = credentials.configured_admin_key()
    if key is not None or not create:
        return key
    path = admin_key_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(new_key() + "\n")
    try:
        os.link(tmp, path)  # fails if another process created it first: then use theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return check_key(path.read_text().strip(), str(path))
