"""Reading Triton's Prometheus metrics endpoint (`nv_*` and the pattern backends' custom
metrics), and the metric names a Grafana dashboard's PromQL queries use (so a test can check
them against what a running server exposes).

    samples = scrape("http://127.0.0.1:8002/metrics")
    value(samples, "circuit_breaker_state", model="iris_breaker")   # 0 closed, 1 half-open, 2 open
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

# PromQL words that look like metric names: aggregation modifiers, operators, keywords.
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                 "unless", "offset", "inf", "nan"}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict = field(hash=False)
    value: float


def parse(text: str) -> list[Sample]:
    """Samples of the Prometheus text exposition format (comments skipped)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(2) or "")}
            samples.append(Sample(m.group(1), labels, float(m.group(3))))
    return samples


def scrape(url: str, timeout: float = 5.0) -> list[Sample]:
    """GET a metrics endpoint, e.g. http://127.0.0.1:8002/metrics (a bare host:port works too)."""
    if not url.startswith("http"):
        url = f"http://{url}"
    if not url.rstrip("/").endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return parse(resp.read().decode())


def value(samples: Iterable[Sample], name: str, **labels: str) -> float | None:
    """Sum of the samples named `name` whose labels include `labels`; None when there is none."""
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found) if found else None


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (functions, label matchers, grouping labels,
    ranges and Grafana variables left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\{?[a-zA-Z_][a-zA-Z0-9_]*\}?", "", expr)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", expr):
        word, call = m.group(1), m.group(2)
        if not call and word.lower() not in _PROMQL_WORDS:
            names.add(word)
    return names


def dashboard_queries(dashboard: dict) -> list[str]:
    """Every PromQL expression of a Grafana dashboard (panels, rows' panels, template queries)."""
    exprs = []

    def panels(items):
        for panel in items or ():
            exprs.extend(t["expr"] for t in panel.get("targets", ()) if t.get("expr"))
            panels(panel.get("panels"))

    panels(dashboard.get("panels"))
    for var in dashboard.get("templating", {}).get("list", ()):
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if var.get("type") == "query" and query:
            m = re.match(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", query)
            exprs.append(m.group(1) if m else query)
    return exprs


def dashboard_metric_names(path: Path | str) -> set[str]:
    names = set()
    for expr in dashboard_queries(json.loads(Path(path).read_text())):
        names |= promql_metric_names(expr)
    return names


def ensemble_steps(repository: Path | str, ensemble: str) -> list[str]:
    """The step models of an ensemble, in the order of its config (models appearing once)."""
    from pattern_tools.repo_check import load_config

    config = load_config(Path(repository) / ensemble / "config.pbtxt")
    if config.platform != "ensemble":
        raise ValueError(f"model '{ensemble}' is not an ensemble (platform {config.platform!r})")
    return list(dict.fromkeys(step.model_name for step in config.ensemble_scheduling.step))


def ensemble_step_failures_query(repository: Path | str, ensemble: str, window: str = "5m") -> str:
    """PromQL: the failures of an ensemble's step models by model and reason, over `window`.
    An ensemble's own failures carry reason="OTHER" in Triton (the step is not named); its steps'
    counts say which one failed (they include the steps' direct callers, if any)."""
    steps = "|".join(re.escape(name) for name in ensemble_steps(repository, ensemble))
    return (f'sum by (model, reason) (increase(pattern_request_failures_total{{model=~"{steps}", '
            f'reason!="fallback"}}[{window}]))')
