"""Command line: `python -m export [--only NAME ...] [--force] [--repository PATH]`.

NAME is a family (iris, digits, text, heavy) or a model (e.g. iris_web_single); a selected
model's dependencies are exported too (and skipped when up to date).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import manifest as mf


def all_specs(repo: Path) -> list[mf.Spec]:
    from . import digits, heavy, iris, text

    return [s for family in (iris, digits, text, heavy) for s in family.specs(repo)]


def run(specs, repo: Path, force: bool = False, forced: set[str] | None = None, stream=None) -> dict[str, str]:
    """Run specs in order; returns {label: 'exported'|'skipped'}. Raises ExportError."""
    statuses = {}
    for spec in specs:
        statuses[spec.label] = mf.run_spec(spec, repo, force=force and (forced is None or spec.label in forced),
                                           stream=stream)
    return statuses


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
    try:
        statuses = run(specs, repo, force=args.force, forced=chosen)
    except mf.ExportError as exc:
        sys.stdout.write("\n")
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    n_exp = sum(s == "exported" for s in statuses.values())
    print(f"done: {len(statuses)} models ({n_exp} exported, {len(statuses) - n_exp} up to date) "
          f"in {time.perf_counter() - t0:.1f} s -> {repo}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
