"""Command line: `python -m export [--only NAME ...] [--force] [--repository PATH]`.

NAME is a family (iris, digits, text, heavy, edge) or a model (e.g. iris_web_single); a selected
model's dependencies are exported too (and skipped when up to date). The edge family (INT8
models for devices, export/edge.py) goes to build/edge beside the repository, the heavy family
(benchmark models) to the test models' repository beside it (`model_repository_test/`). A summary table
(model, version, status, size, parity error, headline metric, time) ends the run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import edge
from . import manifest as mf
from .report import format_table, human_size


def all_specs(repo: Path) -> list[mf.Spec]:
    from . import digits, heavy, iris, text

    return [*(s for family in (iris, digits, text) for s in family.specs(repo)),
            *heavy.specs(mf.test_repository(repo)), *edge.specs(repo)]


def output_repository(spec: mf.Spec, repo: Path) -> Path:
    """Where a spec's artifact goes: the model repository, the test models' repository beside it,
    or build/edge for edge bundles."""
    if spec.family == edge.FAMILY:
        return edge.edge_repository(repo)
    return mf.test_repository(repo) if spec.family in mf.TEST_FAMILIES else repo


def run(specs, repo: Path, force: bool = False, forced: set[str] | None = None, stream=None,
        seconds: dict[str, float] | None = None) -> dict[str, str]:
    """Run specs in order; returns {label: 'exported'|'skipped'} (and each one's wall time in
    `seconds`). Raises ExportError."""
    statuses = {}
    for spec in specs:
        t0 = time.perf_counter()
        if spec.family == edge.FAMILY:
            runner, into = edge.run_spec, repo
        else:
            runner, into = mf.run_spec, output_repository(spec, repo)
        statuses[spec.label] = runner(spec, into, force=force and (forced is None or spec.label in forced),
                                      stream=stream)
        if seconds is not None:
            seconds[spec.label] = time.perf_counter() - t0
    return statuses


def headline_metric(metrics: dict) -> str:
    """The metric a reader looks for first: an accuracy if there is one, else the first number."""
    keys = sorted((k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)),
                  key=lambda k: ("accuracy" not in k, list(metrics).index(k)))
    if not keys:
        return "-"
    value = metrics[keys[0]]
    return f"{keys[0]} {value:.3f}" if isinstance(value, float) else f"{keys[0]} {value}"


def summary_rows(specs, repo: Path, statuses: dict[str, str], seconds: dict[str, float]) -> list[list[str]]:
    """One row per spec run: model, version, status, size, parity error, metric, time."""
    rows = []
    for spec in specs:
        if spec.label not in statuses:
            continue
        m = mf.read_manifest(output_repository(spec, repo) / spec.name / str(spec.version)) or {}
        parity = m.get("parity", {}).get("max_abs_diff")
        rows.append([spec.name, str(spec.version), statuses[spec.label], human_size(m.get("size_bytes")),
                     "-" if parity is None else f"{parity:.1e}", headline_metric(m.get("metrics", {})),
                     f"{seconds.get(spec.label, 0.0):.1f} s"])
    return rows


SUMMARY_HEADER = ["model", "version", "status", "size", "parity err", "metric", "time"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="NAME", help="families or models to export")
    p.add_argument("--force", action="store_true", help="re-export even when up to date")
    p.add_argument("--repository", type=Path, default=mf.DEFAULT_REPOSITORY,
                   help=f"model repository (default: {mf.DEFAULT_REPOSITORY})")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    repo = args.repository.resolve()
    specs, chosen = mf.resolve(all_specs(repo), args.only)
    t0 = time.perf_counter()
    statuses: dict[str, str] = {}
    seconds: dict[str, float] = {}
    try:
        for spec in specs:  # one at a time, so the table shows what finished before a failure
            statuses.update(run([spec], repo, force=args.force, forced=chosen, seconds=seconds))
    except mf.ExportError as exc:
        sys.stdout.write("\n")
        if statuses:
            print(format_table(SUMMARY_HEADER, summary_rows(specs, repo, statuses, seconds)))
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    print("\n" + format_table(SUMMARY_HEADER, summary_rows(specs, repo, statuses, seconds)))
    report = edge.write_report(repo) if any(s.family == edge.FAMILY for s in specs) else None
    if report is not None:
        print(f"edge models against FP32: {os.path.relpath(report)}")
    n_exp = sum(s == "exported" for s in statuses.values())
    print(f"done: {len(statuses)} models ({n_exp} exported, {len(statuses) - n_exp} up to date) "
          f"in {time.perf_counter() - t0:.1f} s -> {repo}"
          + (f", {mf.test_repository(repo)}" if any(s.family in mf.TEST_FAMILIES for s in specs) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
