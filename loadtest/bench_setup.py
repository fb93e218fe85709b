"""What one `make bench` run measures and how: `Setup` (one thing measured), `Outcome` (its check
and points) and `LoadOptions` (seconds per point, warm-up, quick mode, top concurrency), shared
by the runner (`loadtest.bench`), the report (`loadtest.bench_report`) and the profiler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .loadgen import Point


@dataclass(frozen=True)
class LoadOptions:
    """How long each point runs and how big the run is (defaults: the full run's)."""

    duration: float = 8.0  # seconds measured per point
    warmup: float = 2.0  # seconds of load before each point's measurement
    quick: bool = False  # CI mode: fewer rows, jobs and levels for the batch and async setups
    top: int = 32  # the run's top concurrency: the async setup submits at it


@dataclass
class Setup:
    """One thing measured: `measure(concurrency)` gives a Point, `check()` one correct answer."""

    name: str
    group: str  # "limit", "peer", "triton"
    model: str
    what: str
    measure: Callable[[int], Point]
    check: Callable[[], bool]
    concurrencies: list[int] | None = None  # None: the run's list; in-process: the batch sizes
    server: str = ""  # "triton", "fastapi-1", "fastapi-2" or "" (in-process)
    mirrors: str = ""  # perf_analyzer setups: the own-loadgen setup measuring the same model


@dataclass
class Outcome:
    setup: Setup
    correct: bool = False
    error: str = ""
    points: list[Point] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.correct and not self.error and all(p.requests > 0 and p.errors == 0 for p in self.points)
