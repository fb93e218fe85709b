"""Every reference in the project resolves inside the project: each relative markdown link, and
each repository path named in the docs (`*.md`) and in code comments and docstrings, exists (or is
one of the few paths made at run time, `RUN_TIME` below, each with its reason); no file cites a
document or tracker the project does not contain or the history of its making (`FORBIDDEN`);
an upstream Triton issue is named as "server #N" and listed, with its link, in docs/upstream.md."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from functools import cache
from pathlib import Path

import pytest

from pattern_runtime import paths

ROOT = paths.PROJECT_ROOT
# made at run time, not in the repository: (prefix or pattern, why)
RUN_TIME = [
    (r"build/", "written by make (edge bundles, TensorRT engines, bench repositories, server venvs)"),
    (r"reports/", "written by the benchmarks, the soak and the tests"),
    (r"\.venv[\w-]*/", "virtualenvs made by make (venv, server-venv, the KServe and model-analyzer ones)"),
    (r"model_repository(_test)?/.+/(model\.onnx|manifest\.json|tokenizer\.json)$", "exported by make models"),
    (r"deploy/compose/tls/", "the compose stack's self-signed certificate, made by tools/stack.sh"),
    (r"backends/python/",
     "the Python backend's folder of a tritonserver install (/opt/tritonserver), not this project's"),
]
# packages named by their import path in the docs: where they live
PACKAGES = {"pattern_kernel": "kernel", "pattern_runtime": "runtime", "pattern_jobs": "jobs",
            "pattern_tools": "tools", "triton_patterns": "clients"}
FORBIDDEN = {
    r"\bDESIGN\b": "a design document the project does not contain",
    r"\.\./shared\b|\bshared/seeds\b": "a folder outside the project",
    r"\b[Ii]ssues?\s+#?\d+": "an issue number: state the fact (an upstream one: \"server #N\", in docs/upstream.md)",
    r"\b(first|second|third|this|previous|earlier|next|last) session\b|other (sessions|helpers)'":
        "the history of the project's making",
    r"\bbefore the fix\b": "the history of the project's making",
}
# the upstream trackers the project names, as "<tracker> #N" ("server #8604, #7230", "podman #16269")
TRACKERS = {"server": "triton-inference-server/server", "podman": "containers/podman",
            "opentelemetry-cpp": "open-telemetry/opentelemetry-cpp"}
UPSTREAM = re.compile(rf"\b({'|'.join(TRACKERS)}) (?:PR )?#\d+(?:, (?:PR )?#\d+)*")
NUMBER = re.compile(r"(?<![\w&/])#(\d{3,})\b")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
PATH = re.compile(r"(?<![\w./:@-])((?:\.?[\w-]+/)+[\w.-]*)")
COMMENTED = {".pbtxt", ".sh", ".yaml", ".yml", ".toml", ".cron", ".template", ".txt"}


@cache
def tracked() -> tuple[str, ...]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return tuple(p for p in out.splitlines() if (ROOT / p).is_file())


def top_names() -> set[str]:
    return {p.split("/", 1)[0] for p in tracked() if "/" in p} | {"build", "reports"}


@cache
def content(path: str) -> str:
    return (ROOT / path).read_text(errors="replace")


@cache
def prose(path: str) -> str:
    """What of a file is written for a reader: a markdown file whole; of code, its comments and
    docstrings."""
    text = content(path)
    suffix = Path(path).suffix
    if suffix == ".md":
        return text
    if suffix == ".py":
        return "\n".join(_python_prose(text))
    if suffix in COMMENTED or Path(path).name in ("Makefile", "Dockerfile", ".gitignore", ".dockerignore") \
            or path.startswith(".ci/"):
        return "\n".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
    if suffix == ".js":
        return "\n".join(line.split("//", 1)[1] for line in text.splitlines() if "//" in line)
    return ""


def _python_prose(text: str) -> list[str]:
    parts = [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            parts.append(ast.get_docstring(node) or "")
    return parts


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", text, re.M)}


def made_at_run_time(rel: str) -> bool:
    return any(re.match(pattern, rel) for pattern, _ in RUN_TIME)


def resolves(rel: str) -> bool:
    rel = rel.rstrip("/")
    head, _, rest = rel.partition("/")
    candidates = [ROOT / rel] + ([ROOT / PACKAGES[head] / rel] if head in PACKAGES else [])
    return any(c.exists() for c in candidates) or made_at_run_time(rel + ("/" if not Path(rel).suffix else ""))


def broken_links(path: str, text: str) -> list[str]:
    found = []
    for m in LINK.finditer(re.sub(r"```.*?```", "", text, flags=re.S)):
        target = m.group(1) or m.group(2)
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (ROOT / path).parent / file_part if file_part else ROOT / path
        try:
            rel = resolved.resolve().relative_to(ROOT.resolve()).as_posix()
        except ValueError:
            found.append(f"{target} (outside the project)")
            continue
        if not resolved.exists() and not made_at_run_time(rel):
            found.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.resolve()):
            found.append(f"{target} (no such heading)")
    return found


def missing_paths(text: str) -> list[str]:
    names = top_names() | set(PACKAGES)
    found = []
    for m in PATH.finditer(text):
        rel = m.group(1)
        if rel.split("/", 1)[0] not in names or re.search(r"[<>*{}$]|\.\.\.|[A-Z]{4}", text[m.start():m.end() + 1]):
            continue  # a pattern: backends/<name>/, backends/*/model.py, tests/e2e/test_model_NAME.py
        if re.fullmatch(r"\w+/s", rel):
            continue  # a rate: jobs/s
        if not resolves(rel.rstrip(".")):
            found.append(rel)
    return found


def files() -> list[str]:
    return [p for p in tracked() if prose(p)]


def test_the_checker_reads_docs_comments_and_docstrings():
    read = files()
    assert {"README.md", "BENCHMARKS.md", "docs/architecture.md", "kernel/pattern_kernel/spec.py",
            "model_repository/iris/config.pbtxt", "Makefile"} <= set(read)
    assert "model_repository/iris/labels.txt" not in read and "tests/unit/test_references.py" in read


def test_every_relative_link_resolves():
    broken = {p: b for p in tracked() if p.endswith(".md") for b in [broken_links(p, prose(p))] if b}
    assert broken == {}


def test_every_repository_path_named_in_docs_comments_and_docstrings_exists():
    missing = {p: m for p in files() for m in [missing_paths(prose(p))] if m}
    assert missing == {}


@pytest.mark.parametrize("pattern", FORBIDDEN)
def test_no_file_cites_what_the_project_does_not_contain(pattern):
    # this file names the patterns it forbids
    hits = [f"{p}:{text[:m.start()].count(chr(10)) + 1}: {m.group(0)!r}" for p in tracked()
            if p != "tests/unit/test_references.py" and Path(p).suffix not in (".png", ".onnx")
            for text in [content(p)] for m in re.finditer(pattern, text)]
    assert hits == [], f"{FORBIDDEN[pattern]}:\n" + "\n".join(hits)


def upstream_problems(text: str, listed: set[str]) -> list[str]:
    """A number not named "<tracker> #N", and a "<tracker> #N" not in `listed` ("<tracker> N")."""
    spans = [m.span() for m in UPSTREAM.finditer(text)]
    named = {f"{m.group(1)} {n}" for m in UPSTREAM.finditer(text) for n in re.findall(r"#(\d+)", m.group(0))}
    return [f"{m.group(0)}: not named as an upstream issue (server #N, podman #N)" for m in NUMBER.finditer(text)
            if not any(a <= m.start() < b for a, b in spans)] + \
        [f"{tracker} #{n}: not in docs/upstream.md" for tracker, n in sorted(s.split() for s in named - listed)]


def test_every_upstream_issue_is_named_as_such_and_listed_with_its_link():
    links = {f"{tracker} {n}" for tracker, repo in TRACKERS.items()
             for n in re.findall(rf"https://github\.com/{repo}/(?:issues|pull)/(\d+)", content("docs/upstream.md"))}
    problems = {p: found for p in files() for found in [upstream_problems(prose(p), links)] if found}
    assert problems == {}


def test_an_unnamed_or_unlisted_upstream_number_is_found():
    text = "loses the code (#7804); server #8604, #7230 and server PR #7423; server #1234"
    listed = {"server 7804", "server 8604", "server 7230", "server 7423", "podman 16269"}
    assert upstream_problems(text + "; podman #16269, podman #1", listed) == [
        "#7804: not named as an upstream issue (server #N, podman #N)", "podman #1: not in docs/upstream.md",
        "server #1234: not in docs/upstream.md"]


@pytest.mark.parametrize("text, missing", [
    ("see `tests/unit/test_spec_docs.py` and docs/nothing.md", ["tests/unit/test_spec_docs.py", "docs/nothing.md"]),
    ("`backends/<name>/model.py`, build/edge/x.onnx, https://x.org/docs/a.md, pattern_kernel/spec.py", []),
    ("20 jobs/s; tools/NAME; docs/architecture.md.", []),
])
def test_a_missing_path_is_found_and_patterns_urls_and_run_time_paths_are_not(text, missing):
    assert missing_paths(text) == missing


def test_a_broken_link_and_a_missing_heading_are_found():
    text = "[a](architecture.md#two-model-repositories) [b](nothing.md) [c](deploy.md#no-such) [d](https://x.org)"
    assert broken_links("docs/x.md", text) == ["nothing.md", "deploy.md#no-such (no such heading)"]
