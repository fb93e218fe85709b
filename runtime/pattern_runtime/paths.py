"""Where the project's folders are, for code run from a checkout (tests, CLI, launcher, jobs).

Importing it also names the checkout's admin key file (`ADMIN_KEY_FILE`, which the launcher
creates) in `$TRITON_PATTERNS_ADMIN_KEY_FILE` unless that is set: the SDK, which knows nothing of
the checkout, reads the key from there in this process and in the processes it starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from pattern_kernel.access import ADMIN_KEY_FILE_ENV

PROJECT_ROOT = Path(os.environ.get("TRITON_PATTERNS_ROOT", Path(__file__).resolve().parents[2]))
MODEL_REPOSITORY = PROJECT_ROOT / "model_repository"
BACKENDS = PROJECT_ROOT / "backends"
BUILD = PROJECT_ROOT / "build"
REPORTS = PROJECT_ROOT / "reports"
ADMIN_KEY_FILE = BUILD / "admin.key"

os.environ.setdefault(ADMIN_KEY_FILE_ENV, str(ADMIN_KEY_FILE))
