"""Shared export machinery: model specs, hashing, fingerprints, idempotency, parity, manifests.

Every exported model is described by a `Spec`. `run_spec` decides whether the model in the
repository is up to date (manifest present, fingerprint equal, artifact hash equal) and
otherwise calls the spec's `build`, which returns the artifact bytes plus metrics and a
parity record; the artifact and its `manifest.json` are then written atomically.
"""
from __future__ import annotations

import datetime as _dt
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from pattern_runtime.hashing import sha256_bytes, sha256_file

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPOSITORY = REPO_ROOT / "model_repository"
TEST_FAMILIES = ("heavy",)  # benchmark models: exported into the test models' repository


def test_repository(repo: Path) -> Path:
    """The test models' repository beside a model repository: `<repo>_test`."""
    repo = Path(repo).resolve()
    return repo.parent / f"{repo.name}_test"
MANIFEST = "manifest.json"
# ONNX IR 8 / opset <= 17 / ai.onnx.ml <= 3 load in onnxruntime 1.14+, so the same files
# serve in the embedded runtime (onnxruntime 1.31) and in NGC images from 24.10 (ORT 1.19).
IR_VERSION = 8
MAX_OPSETS = {"": 17, "ai.onnx.ml": 3}


class ExportError(RuntimeError):
    """An export step failed; the message names the model."""


class ParityError(ExportError):
    """The exported artifact does not reproduce its reference model within tolerance."""


@dataclass
class Result:
    """What a spec's build returns."""

    artifact: bytes
    source: str
    metrics: dict
    parity: dict
    extra: dict = field(default_factory=dict)  # further top-level manifest fields


@dataclass(frozen=True)
class Spec:
    """One exported model version: `<repository>/<name>/<version>/<artifact>`."""

    name: str
    version: int
    family: str
    build: Callable[[Log], Result]
    params: Mapping[str, Any]
    modules: tuple[ModuleType, ...]  # exporter code whose source goes into the fingerprint
    libraries: tuple[str, ...]  # distributions whose versions go into the fingerprint
    deps: tuple[tuple[str, int], ...] = ()  # specs whose artifacts this one reads
    artifact: str = "model.onnx"
    labels: tuple[str, ...] | None = None  # written to <repository>/<name>/labels.txt

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


class Log:
    """One progress line per model: `iris v1: training... converting... parity ok...`."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stdout
        self._open = False

    def step(self, msg: str) -> None:
        if not self._open:
            self.stream.write(f"{self.label}: ")
            self._open = True
        self.stream.write(f"{msg}... ")
        self.stream.flush()

    def end(self, msg: str) -> None:
        if not self._open:
            self.stream.write(f"{self.label}: ")
        self.stream.write(msg + "\n")
        self.stream.flush()
        self._open = False

    def bar(self, iterable: Iterable, total: int | None = None, desc: str = "", unit: str = "it"):
        """A tqdm bar on its own line(s); the step line resumes afterwards."""
        from tqdm import tqdm

        if self._open:
            self.stream.write("\n")
            self._open = False
        return tqdm(iterable, total=total, desc=f"{self.label}: {desc}", unit=unit, leave=False)


# ---------------------------------------------------------------- hashing and provenance


def library_versions(names: Iterable[str]) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def code_revision(root: Path = REPO_ROOT) -> str:
    """git HEAD of the project, with `-dirty` when the work tree has changes; else 'unknown'."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True,
                               text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "") if head else "unknown"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def fingerprint(spec: Spec, dep_hashes: Mapping[str, str]) -> str:
    """sha256 over exporter source, parameters, library versions and input artifact hashes."""
    modules = {m.__name__: sha256_bytes(inspect.getsource(m).encode()) for m in (*spec.modules, sys.modules[__name__])}
    payload = {
        "model": spec.name,
        "version": spec.version,
        "artifact": spec.artifact,
        "parameters": _jsonable(dict(spec.params)),
        "sources": modules,
        "libraries": library_versions(spec.libraries),
        "inputs": dict(dep_hashes),
    }
    return sha256_bytes(json.dumps(payload, sort_keys=True).encode())


# ---------------------------------------------------------------- files


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    write_atomic(path, text.encode())
    return True


def read_manifest(model_dir: Path) -> dict | None:
    try:
        return json.loads((model_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def is_up_to_date(model_dir: Path, artifact: str, fp: str) -> bool:
    m = read_manifest(model_dir)
    path = model_dir / artifact
    return bool(m) and m.get("fingerprint") == fp and path.is_file() and sha256_file(path) == m.get("sha256")


# ---------------------------------------------------------------- ONNX helpers


def finalize_onnx(model, doc: str, metadata_props: Mapping[str, str] | None = None) -> bytes:
    """Pin IR version/opsets for older onnxruntime builds, check the graph, serialize deterministically."""
    import onnx

    opsets = {o.domain: o.version for o in model.opset_import}
    for domain, version in opsets.items():
        limit = MAX_OPSETS.get(domain)
        if limit is not None and version > limit:
            raise ExportError(f"{model.graph.name}: opset {domain or 'ai.onnx'} {version} > {limit}")
    model.ir_version = min(model.ir_version or IR_VERSION, IR_VERSION)
    # converters build opset_import from a set: fix its order so equal models give equal bytes
    ordered = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    for domain, version in ordered:
        model.opset_import.add(domain=domain, version=version)
    model.doc_string = doc
    del model.metadata_props[:]
    for k, v in sorted((metadata_props or {}).items()):
        model.metadata_props.add(key=k, value=str(v))
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)


def ort_session(model_bytes: bytes, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _signature(args) -> list[dict]:
    return [{"name": a.name, "dtype": a.type, "shape": [d if isinstance(d, int) else -1 for d in a.shape]}
            for a in args]


def onnx_info(model_bytes: bytes) -> dict:
    import onnx

    m = onnx.load_from_string(model_bytes)
    sess = ort_session(model_bytes)
    return {
        "ir_version": m.ir_version,
        "opsets": {o.domain or "ai.onnx": o.version for o in m.opset_import},
        "inputs": _signature(sess.get_inputs()),
        "outputs": _signature(sess.get_outputs()),
    }


def sklearn_to_onnx(model, label: str, input_name: str, n_features: int, n_classes: int, doc: str) -> bytes:
    """Convert a fitted sklearn classifier/pipeline: input [N,n_features] float32 ->
    LABEL int64 [N], PROBABILITIES float32 [N,n_classes] (no ZipMap)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType

    est = model.steps[-1][1] if hasattr(model, "steps") else model
    onx = convert_sklearn(
        model,
        name=label,
        initial_types=[(input_name, FloatTensorType([None, n_features]))],
        final_types=[("LABEL", Int64TensorType([None])), ("PROBABILITIES", FloatTensorType([None, n_classes]))],
        options={type(est): {"zipmap": False}},
        target_opset=dict(MAX_OPSETS),
    )
    return finalize_onnx(onx, doc)


def classifier_parity(label: str, model_bytes: bytes, input_name: str, X: np.ndarray, sk_model,
                      reference: str, atol: float = 1e-5) -> tuple[dict, np.ndarray]:
    """Run the ONNX classifier on X and compare with the sklearn model; returns (parity, onnx labels)."""
    sess = ort_session(model_bytes)
    lab, proba = sess.run(["LABEL", "PROBABILITIES"], {input_name: X.astype(np.float32)})
    parity = check_parity(label, {
        "PROBABILITIES": (proba, sk_model.predict_proba(X), atol, 0.0),
        "LABEL": (lab, sk_model.predict(X), 0.0, 0.0),
    }, reference=reference)
    return parity, lab


# ---------------------------------------------------------------- parity


def check_parity(label: str, outputs: Mapping[str, tuple], reference: str) -> dict:
    """outputs: name -> (actual, expected, atol, rtol). Elementwise |a - e| <= atol + rtol*|e|.

    Returns the parity record for the manifest; raises ParityError naming the model otherwise."""
    record = {"reference": reference, "tolerance": {}, "max_abs_diff": 0.0, "outputs": {}}
    failures = []
    for name, (actual, expected, atol, rtol) in outputs.items():
        a = np.asarray(actual, dtype=np.float64)
        e = np.asarray(expected, dtype=np.float64)
        if a.shape != e.shape:
            failures.append(f"{name}: shape {a.shape} != reference {e.shape}")
            continue
        diff = np.abs(a - e)
        max_abs = float(diff.max()) if diff.size else 0.0
        max_rel = float((diff / np.maximum(np.abs(e), 1e-30)).max()) if diff.size else 0.0
        ok = bool(np.all(diff <= atol + rtol * np.abs(e)))
        record["outputs"][name] = {"max_abs_diff": max_abs, "max_rel_diff": max_rel, "atol": atol, "rtol": rtol,
                                   "n": int(a.size), "ok": ok}
        record["tolerance"][name] = {"atol": atol, "rtol": rtol}
        record["max_abs_diff"] = max(record["max_abs_diff"], max_abs)
        if not ok:
            failures.append(f"{name}: max abs diff {max_abs:.3g}, max rel diff {max_rel:.3g} "
                            f"exceeds atol {atol:g} + rtol {rtol:g}")
    if failures:
        raise ParityError(f"{label}: parity check against {reference} failed: " + "; ".join(failures))
    return record


# ---------------------------------------------------------------- running a spec


def artifact_path(repo: Path, spec_or_name, version: int | None = None, artifact: str = "model.onnx") -> Path:
    if isinstance(spec_or_name, Spec):
        return repo / spec_or_name.name / str(spec_or_name.version) / spec_or_name.artifact
    return repo / spec_or_name / str(version) / artifact


def dep_hashes(spec: Spec, repo: Path) -> dict[str, str]:
    out = {}
    for name, version in spec.deps:
        m = read_manifest(repo / name / str(version))
        if not m or "sha256" not in m:
            raise ExportError(f"{spec.label}: needs {name} v{version}, which has not been exported")
        out[f"{name}/{version}"] = m["sha256"]
    return out


def run_spec(spec: Spec, repo: Path, force: bool = False, stream=None) -> str:
    """Export one spec into `repo` unless up to date. Returns 'exported' or 'skipped'."""
    log = Log(spec.label, stream)
    model_dir = repo / spec.name / str(spec.version)
    if spec.labels is not None:
        write_text_if_changed(repo / spec.name / "labels.txt", "".join(f"{x}\n" for x in spec.labels))
    fp = fingerprint(spec, dep_hashes(spec, repo))
    if not force and is_up_to_date(model_dir, spec.artifact, fp):
        log.end("up to date, skipped")
        return "skipped"
    try:
        result = spec.build(log)
    except ExportError:
        raise
    except Exception as exc:  # name the model in whatever went wrong
        raise ExportError(f"{spec.label}: {type(exc).__name__}: {exc}") from exc
    manifest = {
        "model": spec.name,
        "version": spec.version,
        "artifact": spec.artifact,
        "source": result.source,
        "code_revision": code_revision(),
        "fingerprint": fp,
        "parameters": dict(spec.params),
        "metrics": result.metrics,
        "parity": result.parity,
        **result.extra,
        "sha256": sha256_bytes(result.artifact),
        "size_bytes": len(result.artifact),
        "libraries": library_versions(spec.libraries),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if spec.artifact.endswith(".onnx"):
        manifest["onnx"] = onnx_info(result.artifact)
    write_atomic(model_dir / spec.artifact, result.artifact)
    write_atomic(model_dir / MANIFEST, (json.dumps(_jsonable(manifest), indent=2) + "\n").encode())
    rel = os.path.relpath(model_dir / spec.artifact, Path.cwd())
    n = len(result.artifact)
    log.end(f"wrote {rel} ({n / 1e6:.1f} MB)" if n >= 1e6 else f"wrote {rel} ({n / 1e3:.0f} kB)")
    return "exported"


def parity_note(parity: dict) -> str:
    return f"parity ok (max abs diff {parity['max_abs_diff']:.2g})"


def resolve(specs: Sequence[Spec], only: Sequence[str] | None) -> tuple[list[Spec], set[str]]:
    """Select specs by family or model name, adding their dependencies; returns (ordered specs,
    labels of the explicitly selected ones)."""
    if not only:
        return list(specs), {s.label for s in specs}
    known = {s.family for s in specs} | {s.name for s in specs}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise SystemExit(f"unknown model/family {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    chosen = {s.label for s in specs if s.family in only or s.name in only}
    by_key = {(s.name, s.version): s for s in specs}
    wanted, stack = set(chosen), [s for s in specs if s.label in chosen]
    while stack:
        for dep in stack.pop().deps:
            d = by_key[dep]
            if d.label not in wanted:
                wanted.add(d.label)
                stack.append(d)
    return [s for s in specs if s.label in wanted], chosen
