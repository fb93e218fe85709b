"""Triton's trace files (triton mode) as trees of spans, and their waterfall as text and as a PNG.

A trace file is a JSON list of records `{"id", "model_name", "model_version", "request_id",
"parent_id"}` and `{"id", "timestamps": [{"name", "ns"}]}`; one id is one model's handling of one
request: the request the client sent, an ensemble's step, or a BLS call made by a Python model
(whose backend passed the parent's trace on, as the pattern backends do). `parent_id` nests them.
Each span's phases: queue (QUEUE_START..COMPUTE_START), compute input (..COMPUTE_INPUT_END), infer
(..COMPUTE_OUTPUT_START) and output (..COMPUTE_END); an ensemble has no compute of its own.

Triton records no error in a trace: `mark_failures` marks the failed steps from what the answer
says (the error message, which the pattern backends make name the step's model and version; the
serial backend's STEPS and the parallel backend's REPORT outputs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PHASES = (  # name, from, to, colour
    ("queue", "QUEUE_START", "COMPUTE_START", "#f2b134"),
    ("input", "COMPUTE_START", "COMPUTE_INPUT_END", "#7fb3d5"),
    ("infer", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START", "#2e86c1"),
    ("output", "COMPUTE_OUTPUT_START", "COMPUTE_END", "#85c1e9"),
)
FAILED = ("failed", "timed_out", "skipped")


@dataclass
class Span:
    id: int
    model: str = ""
    version: int = -1
    parent_id: int | None = None
    request_id: str = ""
    times: dict[str, int] = field(default_factory=dict)  # activity -> ns (the first of each)
    children: list[Span] = field(default_factory=list)
    status: str = "ok"  # or one of FAILED
    note: str = ""  # why it is marked

    @property
    def start(self) -> int:
        return self.times.get("REQUEST_START",
                              self.times.get("HTTP_RECV_START", self.times.get("GRPC_WAITREAD_START", 0)))

    @property
    def end(self) -> int:
        return self.times.get("REQUEST_END", max(self.times.values(), default=self.start))

    def phase_ms(self, begin: str, end: str) -> float | None:
        if begin in self.times and end in self.times:
            return (self.times[end] - self.times[begin]) / 1e6
        return None

    @property
    def ms(self) -> float:
        return (self.end - self.start) / 1e6

    def walk(self, depth: int = 0) -> Iterable[tuple[int, Span]]:
        """This span and its descendants, depth first, children in start order."""
        yield depth, self
        for child in sorted(self.children, key=lambda s: s.start):
            yield from child.walk(depth + 1)

    def find(self, model: str, version: int = -1) -> list[Span]:
        """Direct children of `model` (any version when -1)."""
        return [c for c in self.children if c.model == model and version in (-1, c.version)]


def read_records(paths: Iterable[Path | str]) -> list[dict]:
    """The records of trace files (a file being written may be cut short: it is skipped)."""
    records: list[dict] = []
    for path in paths:
        try:
            records += json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return records


def build_trees(records: Iterable[dict]) -> list[Span]:
    """The root spans (no parent among the records) with their descendants nested."""
    spans: dict[int, Span] = {}
    for record in records:
        span = spans.setdefault(record["id"], Span(record["id"]))
        if "model_name" in record:
            span.model, span.version = record["model_name"], int(record.get("model_version", -1))
            span.request_id = record.get("request_id", "")
            span.parent_id = record.get("parent_id") or None
        for stamp in record.get("timestamps", []):
            span.times.setdefault(stamp["name"], int(stamp["ns"]))
    roots = []
    for span in spans.values():
        parent = spans.get(span.parent_id) if span.parent_id is not None else None
        (parent.children if parent is not None else roots).append(span)
    return roots


def trace_of(request_id: str, paths: Iterable[Path | str]) -> Span | None:
    """The tree of the request the client sent with `request_id`, if the files have it."""
    return next((r for r in build_trees(read_records(paths)) if r.request_id == request_id), None)


# "step 'audit' (model 'iris_failing' version 1) failed: ..." (pattern_kernel.errors.StepError)
_STEP_ERROR = re.compile(r"step '(?:[^()]*)' \(model '([^']+)'(?: version (\d+))?\) failed")


def _mark(span: Span, status: str, note: str) -> None:
    span.status, span.note = status, note


def mark_failures(root: Span, error: str | None = None, outputs: dict | None = None) -> None:
    """Mark the failed steps under `root` from the request's `error` message and the decoded JSON
    outputs STEPS (serial) and REPORT (parallel) of its answer."""
    if error:
        _mark(root, "failed", error)
        node, named = root, False
        for model, version in _STEP_ERROR.findall(error):  # outermost step first
            candidates = node.find(model, int(version) if version else -1)
            if not candidates:
                break
            node, named = max(candidates, key=lambda s: s.start), True
            _mark(node, "failed", error)
        if not named and root.children:  # an ensemble's error names no step (server #4786): its last one
            last = max(root.children, key=lambda s: s.start)
            _mark(last, "failed", "the ensemble's last step to run (Triton's error names no step)")
    for entry in (outputs or {}).get("STEPS") or []:
        if entry.get("status") == "skipped":
            for span in root.find(entry["model"], entry.get("version", -1)):
                _mark(span, "skipped", entry.get("error", ""))
    for entry in ((outputs or {}).get("REPORT") or {}).get("targets", []):
        if entry.get("status") in FAILED:
            for span in root.find(entry["target"], entry.get("version", -1)):
                _mark(span, entry["status"], entry.get("error", ""))


def _label(span: Span) -> str:
    return f"{span.model} v{span.version}" if span.model else f"request {span.id}"


def text(root: Span, width: int = 40) -> str:
    """The waterfall as text: one line per span, indented under its caller, with its start and
    duration (ms from the request's start), its phases and a bar."""
    origin, total = root.start, max(root.ms, 1e-6)
    lines = [f"{'span':<34} {'start':>8} {'total':>8} {'queue':>7} {'input':>7} {'infer':>8} {'output':>7}  "
             f"{'':<{width}}  status"]
    for depth, span in root.walk():
        begin = (span.start - origin) / 1e6
        phases = [span.phase_ms(a, b) for _, a, b, _ in PHASES]
        cells = " ".join(f"{'-' if v is None else f'{v:.1f}':>{w}}" for v, w in zip(phases, (7, 7, 8, 7), strict=True))
        first = int(begin / total * width)
        bar = " " * first + "#" * max(1, int(span.ms / total * width))
        status = span.status.upper() + (f": {span.note[:90]}" if span.note else "") if span.status != "ok" else "ok"
        lines.append(f"{'  ' * depth + _label(span):<34} {begin:>8.1f} {span.ms:>8.1f} {cells}  "
                     f"{bar[:width]:<{width}}  {status}")
    return "\n".join(lines)


def png(root: Span, path: Path | str, title: str = "") -> Path:
    """The waterfall as a PNG: a row per span (indented under its caller), its whole time as an
    outline and its phases as coloured segments; failed steps outlined and labelled in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = list(root.walk())
    origin = root.start
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(rows) + 1.6))
    for y, (_, span) in enumerate(rows):
        begin = (span.start - origin) / 1e6
        failed = span.status != "ok"
        ax.barh(y, span.ms, left=begin, height=0.7, color="#eeeeee", edgecolor="#c0392b" if failed else "#888888",
                linewidth=2 if failed else 0.8)
        for _, a, b, colour in PHASES:
            ms = span.phase_ms(a, b)
            if ms is not None:
                ax.barh(y, ms, left=(span.times[a] - origin) / 1e6, height=0.45, color=colour)
        note = f"{span.ms:.1f} ms" + (f"  {span.status.upper()}" if failed else "")
        ax.text(begin + span.ms, y, "  " + note, va="center", fontsize=8, color="#c0392b" if failed else "#333333")
    labels = ["\u2007\u2007" * d + ("\u2514 " if d else "") + _label(s) for d, s in rows]  # figure spaces
    ax.set_yticks(range(len(rows)), labels, fontsize=9, ha="left")
    ax.tick_params(axis="y", pad=6 + 5.6 * max(len(label) for label in labels))
    ax.invert_yaxis()
    ax.set_xlabel("ms since the request reached the model")
    ax.set_xlim(0, max((s.end - origin) / 1e6 for _, s in rows) * 1.2)
    ax.legend(handles=[Patch(color=c, label=n) for n, _, _, c in PHASES], loc="lower right", fontsize=8)
    ax.set_title(title or f"{_label(root)}: request {root.request_id}", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
