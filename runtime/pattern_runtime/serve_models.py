"""Which models `triton-patterns serve` loads: every model of the repository but the extra ones
(`EXTRA_MODELS`: models no other model calls and no command of the docs or the demo uses, only
benchmarks and tests, which start servers of their own with every model), unless asked for all
(`serve --all-models`). Fewer models: a faster (re)start (docs/reliability.md, "Restart time").
The fault-injection models stay: pattern models call them (iris_slow is the time-difference's
slow model, iris_failing and iris_flaky are targets of the parallel, serial, async and breaker
configs), the demo's load-shedding round calls heavy_breaker over heavy_mlp_guarded and its
shadow round iris_shadow_slow.
"""

from __future__ import annotations

from pathlib import Path

from pattern_runtime import paths

EXTRA_MODELS = ("heavy_mlp",)  # the benchmarks' compute-heavy MLP (117 MB of random weights)


def repository_models(model_repository: Path | str = paths.MODEL_REPOSITORY) -> list[str]:
    """The model folders (those with a config.pbtxt) of a repository, sorted."""
    return sorted(p.name for p in Path(model_repository).iterdir() if (p / "config.pbtxt").is_file())


def default_serve_models(model_repository: Path | str = paths.MODEL_REPOSITORY) -> list[str]:
    return [m for m in repository_models(model_repository) if m not in EXTRA_MODELS]
