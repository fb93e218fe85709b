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
# the models that exist for tests, the demo and benchmarks; served beside MODEL_REPOSITORY from a
# checkout, never copied into an image (docs/architecture.md, "Two model repositories")
TEST_MODEL_REPOSITORY = PROJECT_ROOT / "model_repository_test"
MODEL_REPOSITORIES = (MODEL_REPOSITORY, TEST_MODEL_REPOSITORY)
BACKENDS = PROJECT_ROOT / "backends"
BUILD = PROJECT_ROOT / "build"
REPORTS = PROJECT_ROOT / "reports"
ADMIN_KEY_FILE = BUILD / "admin.key"

os.environ.setdefault(ADMIN_KEY_FILE_ENV, str(ADMIN_KEY_FILE))


def model_folder(name: str, repositories=MODEL_REPOSITORIES) -> Path:
    """A model's folder in the first of `repositories` that has it (the first's path if none does)."""
    folders = [Path(r) / name for r in repositories]
    return next((f for f in folders if (f / "config.pbtxt").is_file()), folders[0])
