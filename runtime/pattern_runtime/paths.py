"""Where the project's folders are, for code run from a checkout (tests, CLI, launcher)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("TRITON_PATTERNS_ROOT", Path(__file__).resolve().parents[2]))
MODEL_REPOSITORY = PROJECT_ROOT / "model_repository"
BACKENDS = PROJECT_ROOT / "backends"
BUILD = PROJECT_ROOT / "build"
REPORTS = PROJECT_ROOT / "reports"
