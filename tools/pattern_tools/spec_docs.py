"""The docs' parameter tables, generated from the backends' specs (`backends/<name>/spec.py`).

A page of docs/patterns holds a backend's table between markers:

    <!-- spec-table: router -->
    ...generated...
    <!-- /spec-table -->

`python -m pattern_tools.spec_docs` lists the tables that differ from the specs (exit 1);
`--write` rewrites them. tests/unit/test_spec.py fails while one differs.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from pattern_kernel.spec import markdown_table
from pattern_kernel.specs import load_specs
from pattern_runtime import paths

SPECS = load_specs(paths.BACKENDS)

DOCS = paths.PROJECT_ROOT / "docs" / "patterns"
_TABLE = re.compile(r"(<!-- spec-table: (\w+) -->\n)(.*?)(<!-- /spec-table -->)", re.S)


def render(text: str) -> str:
    """`text` with every marked table regenerated; KeyError for a backend without a spec."""
    return _TABLE.sub(lambda m: f"{m.group(1)}{markdown_table(SPECS[m.group(2)])}\n{m.group(4)}", text)


def tables(docs: Path = DOCS) -> dict[str, list[Path]]:
    """Backend -> the pages holding its table."""
    found: dict[str, list[Path]] = {}
    for page in sorted(docs.glob("*.md")):
        for match in _TABLE.finditer(page.read_text()):
            found.setdefault(match.group(2), []).append(page)
    return found


def stale(docs: Path = DOCS) -> list[Path]:
    """Pages whose tables differ from the specs."""
    return [p for p in sorted(docs.glob("*.md")) if render(p.read_text()) != p.read_text()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the tables that differ")
    parser.add_argument("--docs", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    pages = stale(args.docs)
    for page in pages:
        if args.write:
            page.write_text(render(page.read_text()))
        print(f"{'rewrote' if args.write else 'differs from the spec'}: {page}")
    missing = sorted(set(SPECS) - set(tables(args.docs)))
    for name in missing:
        print(f"no table for backend {name!r}: add <!-- spec-table: {name} --><!-- /spec-table --> to a page")
    return 1 if missing or (pages and not args.write) else 0


if __name__ == "__main__":
    sys.exit(main())
