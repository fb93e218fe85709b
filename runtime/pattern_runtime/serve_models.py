"""Which models `triton-patterns serve` loads: every model of its repositories (by default the
project's two, `model_repository` and `model_repository_test`) but the extra ones
(`EXTRA_MODELS`: models no other model calls and no command of the docs or the demo uses, only
benchmarks and tests, which start servers of their own with every model), unless asked for all
(`serve --all-models`). Fewer models: a faster (re)start (docs/reliability.md, "Restart time").
The fault-injection models stay: pattern models call them (iris_slow is the time-difference's
slow model, iris_failing and iris_flaky are targets of the parallel, serial, async and breaker
configs), the demo's load-shedding round calls heavy_breaker over heavy_mlp_guarded and its
shadow round iris_shadow_slow.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pattern_runtime import paths

Repositories = Path | str | Sequence[Path | str]  # one model repository, or several served together

EXTRA_MODELS = ("heavy_mlp",)  # the benchmarks' compute-heavy MLP (117 MB of random weights)


def repository_list(model_repository: Repositories) -> list[Path]:
    """One repository or several, as a list of resolved paths."""
    many = not isinstance(model_repository, (str, Path))
    return [Path(r).resolve() for r in (model_repository if many else [model_repository])]


def repository_models(model_repository: Repositories = paths.MODEL_REPOSITORIES) -> list[str]:
    """The model folders (those with a config.pbtxt) of one repository or several, sorted."""
    return sorted(p.name for r in repository_list(model_repository) if r.is_dir()
                  for p in r.iterdir() if (p / "config.pbtxt").is_file())


def default_serve_models(model_repository: Repositories = paths.MODEL_REPOSITORIES) -> list[str]:
    return [m for m in repository_models(model_repository) if m not in EXTRA_MODELS]
