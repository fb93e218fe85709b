"""Static checks of a Triton model repository before a server starts (`triton-patterns check`).

Several repositories served together (the project's `model_repository` and `model_repository_test`,
the default) are checked as one: a model may call a model of another, and a name in two of them
is an error (tritonserver refuses it).

What is checked, per model folder (every problem names the file and the config field):

* `config.pbtxt` parses as Triton's `ModelConfig` protobuf (tritonclient's `model_config_pb2`),
  its `name` matches the folder, it sets `platform` or a `backend` that exists (a Triton backend
  or a project folder `backends/<name>/model.py`), tensors have a data type and valid dims.
* Versions: the numbered folders the `version_policy` serves exist, and each holds the files its
  platform or backend reads (`model.onnx` for onnxruntime_onnx, `model.plan` for tensorrt_plan,
  `model.py` for python, the project backends' own files). Exported files are build outputs
  (`make models`): the report says so when they are missing. A `manifest.json` beside a model
  file must still describe it (sha256), and an ONNX graph's inputs and outputs must match the
  config's names, dtypes and dims.
* Ensembles: each step names a model (and version) that exists; its `input_map` / `output_map`
  keys are that model's inputs / outputs; every non-optional input is mapped once; tensors
  passed between steps agree in dtype and (wildcard-compatible) dims; every step input and
  ensemble output is produced; `max_batch_size` is at most each batching step's.
* Pattern models (a `backend` with a spec, `backends/<name>/spec.py`) are checked as Triton
  serves them: with the extra outputs their backend's `auto_complete_config` adds
  (`BackendSpec.completed_outputs`), and their parameters read by the spec.
* BLS pattern models: the parameters their backend's spec declares as references
  (one model and its version, a `targets` list, the serial `steps`,
  parsed by the kernel's own parsers) name models that exist and serve the named version;
  serial steps map existing inputs and outputs; reference cycles are errors; a caller's batch (`max_batch_size`,
  else `max_rows`) larger than the callee's `max_batch_size` is a warning (a BLS backend may split
  it, an ensemble cannot: there it is an error).
* Class names: an output's `label_filename` (the labels file export writes, which Triton loads)
  is a file of the model's folder with one line per class; a `labels` list appears only beside
  the labels file of its PROBABILITIES and equals it; `labels_from` leads (through further
  `labels_from` and ensembles' PROBABILITIES steps) to a model with a labels file of as many classes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from pattern_kernel.pipeline import parse_steps
from pattern_kernel.spec import BackendSpec
from pattern_kernel.specs import load_specs
from pattern_kernel.validation import parse_targets as parse_target_list
from pattern_runtime import paths
from pattern_runtime.serve_models import Repositories, repository_list

CONFIG = "config.pbtxt"
MANIFEST = "manifest.json"
# Files `make models` (python -m export) writes; the repository ignores them in git.
EXPORTED_FILES = frozenset({"model.onnx", "tokenizer.json", "model.plan"})
TRITON_PLATFORMS = {
    "ensemble": None,
    "onnxruntime_onnx": "model.onnx",
    "tensorrt_plan": "model.plan",
    "pytorch_libtorch": "model.pt",
    "tensorflow_savedmodel": "model.savedmodel",
    "tensorflow_graphdef": "model.graphdef",
}
TRITON_BACKENDS = {"python": "model.py", "onnxruntime": "model.onnx", "tensorrt": "model.plan",
                   "pytorch": "model.pt", "tensorflow": None, "openvino": "model.xml", "fil": None,
                   "dali": "model.dali", "identity": None, "repeat": None, "square": None}
NGC_ONLY = {"tensorrt_plan", "tensorrt", "pytorch_libtorch", "pytorch", "tensorflow_savedmodel",
            "tensorflow_graphdef", "tensorflow", "openvino", "fil", "dali"}
# Project backends that read a file from each version folder: backend -> (field, default name);
# a parameter's default is its spec's.
VERSION_FILES: dict[str, tuple[str, str | None]] = {
    "web_single": ("default_model_filename", "model.onnx"),
    "text_tokenizer": ("parameters.tokenizer_file", None),
}
ONNX_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16",
              6: "TYPE_INT32", 7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16",
              11: "TYPE_FP64", 12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16"}


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" or "warning"
    path: Path     # the file at fault (a config.pbtxt, or the model file)
    field: str     # the config field, e.g. "ensemble_scheduling.step[1].input_map[PIXELS]"
    message: str
    code: str = ""  # "missing_export" for an exported file `make models` has not written

    def format(self, root: Path | None = None) -> str:
        path = self.path
        if root is not None:
            try:
                path = path.relative_to(root)
            except ValueError:
                pass
        return f"{self.severity}: {path}: {self.field}: {self.message}"


@dataclass
class Model:
    name: str
    folder: Path
    config: mc.ModelConfig
    version_folders: list[int]
    served: list[int]

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG

    @property
    def kind(self) -> str:
        return self.config.platform or self.config.backend

    def parameter(self, key: str, default: str | None = None) -> str | None:
        return self.config.parameters[key].string_value if key in self.config.parameters else default

    def tensor(self, name: str, outputs: bool = False):
        for t in self.config.output if outputs else self.config.input:
            if t.name == name:
                return t
        return None

    def batch(self) -> int | None:
        """Rows this model may send to a callee: max_batch_size, else the `max_rows` parameter."""
        if self.config.max_batch_size > 0:
            return self.config.max_batch_size
        rows = self.parameter("max_rows")
        return int(rows) if rows and rows.strip().isdigit() else None


@dataclass
class Report:
    root: Path  # the first repository; paths are printed relative to its parent
    roots: list[Path] = field(default_factory=list)  # every repository checked
    models: dict[str, Model] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    graph: dict[str, set[str]] = field(default_factory=dict)  # model -> the models it calls directly

    def dependencies(self, name: str) -> list[str]:
        """Every model `name` calls, directly or not (ensemble steps, BLS parameters), sorted."""
        found: set[str] = set()
        pending = [name]
        while pending:
            for callee in self.graph.get(pending.pop(), ()):
                if callee not in found and callee != name:
                    found.add(callee)
                    pending.append(callee)
        return sorted(found)
    missing_exports: list[Path] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        out = [p.format(self.root.parent) for p in self.problems]
        if self.missing_exports:
            n = len(self.missing_exports)
            out.append(f"{n} exported model file{'s are' if n > 1 else ' is'} missing: run `make models` "
                       "(python -m export) to write them")
        out.append(f"{'ok' if self.ok else 'failed'}: {len(self.models)} models in "
                   f"{', '.join(map(str, self.roots or [self.root]))}, "
                   f"{len(self.errors)} errors, {len(self.warnings)} warnings")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"repository": str(self.root), "repositories": [str(r) for r in self.roots],
                "models": sorted(self.models), "ok": self.ok,
                "missing_exports": [str(p) for p in self.missing_exports],
                "problems": [{"severity": p.severity, "path": str(p.path), "field": p.field, "message": p.message,
                              "code": p.code} for p in self.problems]}


# --------------------------------------------------------------------------- small helpers


def type_name(data_type: int) -> str:
    return mc.DataType.Name(data_type)


def dims_text(dims: Iterable[int]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def dims_match(a: Iterable[int], b: Iterable[int]) -> bool:
    """Same rank, and each dimension equal or a wildcard (-1) on either side."""
    a, b = list(a), list(b)
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


def full_dims(dims: Iterable[int], batching: bool) -> list[int]:
    return ([-1] if batching else []) + list(dims)


def shapes_compatible(a_dims, a_batching: bool, b_dims, b_batching: bool) -> bool:
    """Triton's ensemble rule: the dims agree, or the dims with the batch dimension added do
    (a non-batching model's [-1, 4] meets a batching model's [4])."""
    return dims_match(a_dims, b_dims) or dims_match(full_dims(a_dims, a_batching), full_dims(b_dims, b_batching))


def parse_config_text(text: str) -> mc.ModelConfig:
    """A config.pbtxt's text as a ModelConfig; text_format.ParseError when it does not parse."""
    return text_format.Parse(text, mc.ModelConfig())


def load_config(path: Path) -> mc.ModelConfig:
    return parse_config_text(Path(path).read_text())


def complete_config(config: mc.ModelConfig, spec: BackendSpec) -> None:
    """Add the outputs a pattern backend's `auto_complete_config` adds when Triton loads `config`."""
    as_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
    for output in spec.completed_outputs(as_json):
        add = config.output.add(name=output["name"], data_type=mc.DataType.Value(output["data_type"]))
        add.dims.extend(output["dims"])


def parse_targets(text: str) -> list[tuple[str, int]]:
    """The kernel's `model[:version]` comma list, as command lines write it: anything after `=`
    or `@` in an item (e.g. a weight) is ignored."""
    return parse_target_list(",".join(re.split(r"[=@]", item, maxsplit=1)[0] for item in text.split(",")))


def onnx_signature(path: Path) -> tuple[list[tuple[str, str, list[int]]], list[tuple[str, str, list[int]]]]:
    """(inputs, outputs) of an ONNX file as (name, Triton TYPE_*, shape with -1 for symbolic dims);
    initializers are not inputs. Reads the graph without external data."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def sig(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            out.append((v.name, ONNX_TYPES.get(t.elem_type, f"onnx elem type {t.elem_type}"), shape))
        return out

    return sig([i for i in model.graph.input if i.name not in initializers]), sig(model.graph.output)


def label_source(models: dict[str, Model], model: Model) -> tuple[Model | None, str]:
    """The model whose labels file names `model`'s classes, following `labels_from` and, for an
    ensemble, the step that produces PROBABILITIES (as the SDK does); (None, why) when none."""
    trail = [model.name]
    while True:
        scores = model.tensor("PROBABILITIES", outputs=True)
        if scores is not None and scores.label_filename:
            return model, ""
        name = model.parameter("labels_from") or next(
            (s.model_name for s in model.config.ensemble_scheduling.step if "PROBABILITIES" in s.output_map.values()),
            None)
        if name is None:
            return None, f"{model.name} has no labels file and no labels_from"
        if name in trail:
            return None, f"labels_from cycle: {' -> '.join(trail + [name])}"
        if name not in models:
            return None, f"model {name!r} does not exist"
        trail.append(name)
        model = models[name]


# --------------------------------------------------------------------------- the checker


class _Checker:
    def __init__(self, roots: list[Path], backends: Path | None, files: bool):
        self.roots = roots
        self.backends = backends
        self.specs = load_specs(backends or paths.BACKENDS)  # the project's when backends are not checked
        self.files = files
        self.report = Report(roots[0], roots)
        self.broken: set[str] = set()  # folders whose config does not parse (reported once, there)

    def add(self, severity: str, path: Path, field_: str, message: str, code: str = "") -> None:
        self.report.problems.append(Problem(severity, path, field_, message, code))

    def error(self, model: Model | Path, field_: str, message: str, code: str = "") -> None:
        self.add("error", model.config_path if isinstance(model, Model) else model, field_, message, code)

    def warn(self, model: Model | Path, field_: str, message: str) -> None:
        self.add("warning", model.config_path if isinstance(model, Model) else model, field_, message)

    # -- loading

    def load(self) -> None:
        for root in self.roots:
            if root.is_dir():
                self.load_root(root)
            else:
                self.error(root, "repository", "is not a directory")

    def load_root(self, root: Path) -> None:
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            path = folder / CONFIG
            if folder.name in self.report.models or folder.name in self.broken:
                self.error(path, "name", f"model {folder.name} is in more than one repository "
                                         "(tritonserver loads neither)")
                continue
            if not path.is_file():
                self.error(path, CONFIG, f"model folder {folder.name}/ has no {CONFIG}")
                continue
            try:
                config = load_config(path)
            except text_format.ParseError as exc:
                self.broken.add(folder.name)
                named = re.search(r'field named "([^"]+)"', str(exc))
                self.error(path, named.group(1) if named else "syntax", f"does not parse as ModelConfig: {exc}")
                continue
            if config.backend in self.specs:
                complete_config(config, self.specs[config.backend])
            versions = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
            model = Model(folder.name, folder, config, versions, [])
            model.served = self.served_versions(model)
            self.report.models[model.name] = model

    def served_versions(self, model: Model) -> list[int]:
        policy = model.config.version_policy
        choice = policy.WhichOneof("policy_choice") if model.config.HasField("version_policy") else None
        have = model.version_folders
        if not have:
            self.error(model, "version folders", f"{model.name}/ has no numbered version folder (e.g. {model.name}/1/)")
            return []
        if choice == "specific":
            missing = [v for v in policy.specific.versions if v not in have]
            if missing:
                self.error(model, "version_policy.specific.versions",
                           f"version{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} "
                           f"listed but no folder {', '.join(f'{model.name}/{v}/' for v in missing)}")
            return [v for v in policy.specific.versions if v in have]
        if choice == "all":
            return list(have)
        n = policy.latest.num_versions if choice == "latest" else 1
        if choice is None and len(have) > 1:
            self.warn(model, "version_policy", f"{len(have)} version folders but no version_policy: only the "
                                               f"latest ({have[-1]}) is served")
        return have[-max(n, 1):]

    # -- per model

    def check_model(self, model: Model) -> None:
        cfg = model.config
        if cfg.name and cfg.name != model.name:
            self.error(model, "name", f'"{cfg.name}" does not match the folder name "{model.name}"')
        self.check_platform(model)
        if cfg.max_batch_size < 0:
            self.error(model, "max_batch_size", "must be >= 0")
        for kind in ("input", "output"):
            seen = set()
            for i, t in enumerate(getattr(cfg, kind)):
                where = f"{kind}[{i}] ({t.name})" if t.name else f"{kind}[{i}]"
                if not t.name:
                    self.error(model, where, "has no name")
                elif t.name in seen:
                    self.error(model, where, f"duplicate {kind} name {t.name!r}")
                seen.add(t.name)
                if t.data_type == mc.TYPE_INVALID:
                    self.error(model, f"{where}.data_type", "is not set")
                if any(d == 0 or d < -1 for d in t.dims):
                    self.error(model, f"{where}.dims", f"{dims_text(t.dims)}: each dimension must be > 0 or -1")
                if not t.dims and not t.HasField("reshape") and cfg.max_batch_size == 0:
                    self.error(model, f"{where}.dims", "is empty")
        self.check_batching(model)
        self.check_labels(model)
        if self.files:
            self.check_files(model)

    def check_platform(self, model: Model) -> None:
        cfg = model.config
        if not cfg.platform and not cfg.backend:
            self.error(model, "platform", "neither `platform` nor `backend` is set")
            return
        if cfg.platform and cfg.platform not in TRITON_PLATFORMS:
            self.error(model, "platform", f"unknown platform {cfg.platform!r} (one of {', '.join(TRITON_PLATFORMS)})")
        if cfg.backend:
            project = self.backends is not None and (self.backends / cfg.backend / "model.py").is_file()
            if not project and cfg.backend not in TRITON_BACKENDS:
                folder = self.backends or "backends"
                where = f"{folder}/{cfg.backend}/model.py"
                self.error(model, "backend", f"no backend {cfg.backend!r}: neither a Triton backend nor {where}")
        if cfg.platform == "ensemble":
            if not cfg.HasField("ensemble_scheduling") or not cfg.ensemble_scheduling.step:
                self.error(model, "ensemble_scheduling", "an ensemble needs ensemble_scheduling with at least one step")
        elif cfg.HasField("ensemble_scheduling"):
            self.error(model, "ensemble_scheduling", 'is only allowed with platform: "ensemble"')
        if (cfg.platform in NGC_ONLY or cfg.backend in NGC_ONLY) and self.backends is not None:
            self.warn(model, "platform" if cfg.platform else "backend",
                      f"{model.kind} is served only by an NGC image, not by the embedded runtime")
        if model.kind in ("onnxruntime_onnx", "onnxruntime") and not cfg.instance_group:
            self.warn(model, "instance_group", "not stated: the onnxruntime backend defaults to 2 CPU instances")

    def check_batching(self, model: Model) -> None:
        cfg = model.config
        if not cfg.HasField("dynamic_batching"):
            return
        if cfg.max_batch_size == 0:
            self.warn(model, "dynamic_batching", "has no effect with max_batch_size 0")
        for size in cfg.dynamic_batching.preferred_batch_size:
            if cfg.max_batch_size and size > cfg.max_batch_size:
                self.error(model, "dynamic_batching.preferred_batch_size",
                           f"{size} is larger than max_batch_size {cfg.max_batch_size}")

    def check_labels(self, model: Model) -> None:
        """Each output's `label_filename` is a file of the model's folder with one line per class;
        a `labels` list only beside the labels file of its PROBABILITIES, and equal to it."""
        for i, t in enumerate(model.config.output):
            if t.label_filename:
                self.check_label_file(model, f"output[{i}] ({t.name}).label_filename", t)
        listed = model.parameter("labels")
        if listed is None:
            return
        names = [x.strip() for x in listed.split(",") if x.strip()]
        scores = model.tensor("PROBABILITIES", outputs=True)
        if scores is None or not scores.label_filename:
            self.error(model, "parameters.labels", "class names belong in the labels file export writes: give "
                                                   "PROBABILITIES a label_filename, or name that model with "
                                                   "`labels_from`")
        else:
            lines = self.label_lines(model, scores)
            if lines is not None and names != lines:
                self.error(model, "parameters.labels", f"{names} differ from {scores.label_filename} {lines}")

    def label_lines(self, model: Model, tensor) -> list[str] | None:
        path = model.folder / tensor.label_filename
        return path.read_text(encoding="utf-8").splitlines() if path.is_file() else None

    def check_label_file(self, model: Model, field_: str, tensor) -> None:
        name = Path(tensor.label_filename)
        if name.is_absolute() or ".." in name.parts:
            self.error(model, field_, f"{tensor.label_filename!r}: must be a file of the model's folder "
                                      "(Triton refuses paths that leave it)")
            return
        lines = self.label_lines(model, tensor)
        if lines is None:
            self.error(model, field_, f"{model.name}/{tensor.label_filename} does not exist")
        elif tensor.dims and tensor.dims[-1] > 0 and len(lines) != tensor.dims[-1]:
            self.error(model, field_, f"{model.name}/{tensor.label_filename} has {len(lines)} lines, but output "
                                      f"{tensor.name} has {tensor.dims[-1]} classes")

    def check_labels_from(self, model: Model) -> None:
        if not model.parameter("labels_from"):
            return
        source, why = label_source(self.report.models, model)
        scores = model.tensor("PROBABILITIES", outputs=True)
        if source is None:
            self.error(model, "parameters.labels_from", why)
        elif scores is not None and scores.dims and source is not model:
            theirs = source.tensor("PROBABILITIES", outputs=True).dims[-1]
            if scores.dims[-1] > 0 and theirs > 0 and theirs != scores.dims[-1]:
                self.error(model, "parameters.labels_from", f"{source.name} names {theirs} classes, but output "
                                                            f"PROBABILITIES has {scores.dims[-1]}")

    # -- files

    def expected_files(self, model: Model) -> list[tuple[str, str]]:
        """(config field, file name) each served version folder must hold."""
        cfg = model.config
        if cfg.platform == "ensemble":
            return []
        if cfg.backend in VERSION_FILES:
            field_, default = VERSION_FILES[cfg.backend]
            if field_.startswith("parameters."):
                name = field_.split(".", 1)[1]
                return [(field_, model.parameter(name) or self.specs[cfg.backend].parameter(name).default)]
            return [(field_, getattr(cfg, field_) or default)]
        default = TRITON_PLATFORMS.get(cfg.platform) or TRITON_BACKENDS.get(cfg.backend)
        if default is None:
            return []
        kind = "default_model_filename" if cfg.default_model_filename else ("platform" if cfg.platform else "backend")
        return [(kind, cfg.default_model_filename or default)]

    def check_files(self, model: Model) -> None:
        for version in model.served:
            for field_, name in self.expected_files(model):
                path = model.folder / str(version) / name
                if not path.exists():
                    exported = name in EXPORTED_FILES
                    if exported:
                        self.report.missing_exports.append(path)
                    self.error(model, field_, f"version {version}: {model.name}/{version}/{name} does not exist"
                               + (" (an exported file: run `make models`)" if exported else ""),
                               "missing_export" if exported else "")
                    continue
                self.check_manifest(model, path)
                if name.endswith(".onnx") and model.kind in ("onnxruntime_onnx", "onnxruntime") and path.is_file():
                    self.check_onnx_io(model, path)

    def check_manifest(self, model: Model, path: Path) -> None:
        manifest_path = path.parent / MANIFEST
        if not manifest_path.is_file() or not path.is_file():
            return
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as exc:
            self.warn(manifest_path, "manifest", f"is not valid JSON: {exc}")
            return
        if manifest.get("artifact", path.name) != path.name or "sha256" not in manifest:
            return
        from pattern_runtime.hashing import sha256_file

        if sha256_file(path) != manifest["sha256"]:
            self.warn(path, "sha256", f"does not match {model.name}/{path.parent.name}/{MANIFEST}: changed since "
                                      "export; re-run `make models`")

    def check_onnx_io(self, model: Model, path: Path) -> None:
        try:
            inputs, outputs = onnx_signature(path)
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: onnx raises many kinds
            self.error(path, "model file", f"is not a readable ONNX model: {type(exc).__name__}: {exc}")
            return
        batching = model.config.max_batch_size > 0
        for kind, graph in (("input", inputs), ("output", outputs)):
            by_name = {name: (dtype, shape) for name, dtype, shape in graph}
            for i, t in enumerate(getattr(model.config, kind)):
                where = f"{kind}[{i}] ({t.name})"
                if t.name not in by_name:
                    self.error(model, f"{where}.name", f"{path.name} has no {kind} {t.name!r} "
                                                       f"(it has {', '.join(sorted(by_name)) or 'none'})")
                    continue
                dtype, shape = by_name[t.name]
                if dtype != type_name(t.data_type):
                    self.error(model, f"{where}.data_type", f"{type_name(t.data_type)}, but {path.name} has {dtype}")
                dims = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
                if not dims_match(full_dims(dims, batching), shape):
                    field_ = f"{where}.reshape" if t.HasField("reshape") else f"{where}.dims"
                    self.error(model, field_, f"{dims_text(full_dims(dims, batching))} (with the batch dimension) "
                                              f"does not match {path.name}'s {dims_text(shape)}")
            configured = {t.name for t in getattr(model.config, kind)}
            extra = [n for n, _, _ in graph if n not in configured]
            if extra and kind == "input":
                self.error(model, "input", f"{path.name} also needs input{'s' if len(extra) > 1 else ''} "
                                           f"{', '.join(extra)}, not in the config")

    # -- references between models

    def callee(self, model: Model, field_: str, name: str, version: int) -> Model | None:
        target = self.report.models.get(name)
        if target is None:
            if name not in self.broken:
                self.error(model, field_, f"names model {name!r}, which is not in the repository")
            return None
        if version not in (-1, 0) and target.served and version not in target.served:
            self.error(model, field_, f"asks for {name} version {version}, but {name} serves "
                                      f"{', '.join(map(str, target.served))}")
        return target

    def check_batch_fits(self, model: Model, target: Model, field_: str) -> None:
        rows = model.batch()
        limit = target.config.max_batch_size
        if rows and limit and rows > limit:  # a warning: a BLS backend may split a batch, an ensemble cannot
            what = "max_batch_size" if model.config.max_batch_size else "parameters.max_rows"
            self.warn(model, field_, f"{what} {rows} is larger than {target.name}'s max_batch_size {limit}: "
                                     "a request with more rows fails in the callee unless the backend splits it")

    def check_ensemble(self, model: Model) -> None:
        cfg = model.config
        batching = cfg.max_batch_size > 0
        # ensemble tensor name -> (data type, dims, batching, where it came from)
        tensors: dict[str, tuple[int, list[int], bool, str]] = {}
        for t in cfg.input:
            dims = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
            tensors[t.name] = (t.data_type, dims, batching, f"ensemble input {t.name}")
        outputs = {t.name: t for t in cfg.output}
        produced = set(tensors)
        pending, complete = [], True
        for i, step in enumerate(cfg.ensemble_scheduling.step):
            where = f"ensemble_scheduling.step[{i}]"
            target = self.callee(model, f"{where}.model_name", step.model_name, step.model_version)
            if target is None:
                complete = False  # its tensors are unknown: no data-flow errors that only repeat this one
                continue
            if target.name == model.name:
                self.error(model, f"{where}.model_name", "an ensemble cannot call itself")
                continue
            tcfg = target.config
            if tcfg.max_batch_size and cfg.max_batch_size > tcfg.max_batch_size:
                self.error(model, "max_batch_size", f"{cfg.max_batch_size} is larger than step {i} "
                                                    f"({target.name})'s max_batch_size {tcfg.max_batch_size}")
            t_batching = tcfg.max_batch_size > 0
            for key in step.input_map:
                if target.tensor(key) is None:
                    self.error(model, f"{where}.input_map[{key}]",
                               f"{target.name} has no input {key!r} (inputs: {', '.join(t.name for t in tcfg.input)})")
            for t in tcfg.input:
                if t.name not in step.input_map and not t.optional:
                    self.error(model, f"{where}.input_map", f"input {t.name!r} of {target.name} is not mapped")
            for key in step.output_map:
                if target.tensor(key, outputs=True) is None:
                    served = ", ".join(t.name for t in tcfg.output)
                    self.error(model, f"{where}.output_map[{key}]",
                               f"{target.name} has no output {key!r} (outputs: {served})")
            pending.append((i, where, step, target, t_batching))
        # data flow: run steps once their inputs exist; compare dtypes and dims on every edge
        while pending and complete:
            ready = [p for p in pending if all(v in produced for v in p[2].input_map.values())]
            if not ready:
                for _, where, step, _, _ in pending:
                    missing = sorted(v for v in step.input_map.values() if v not in produced)
                    self.error(model, f"{where}.input_map", f"tensor{'s' if len(missing) > 1 else ''} "
                                                           f"{', '.join(missing)} never produced (no ensemble input "
                                                           "or earlier step output, or a cycle)")
                break
            for item in ready:
                pending.remove(item)
                i, where, step, target, t_batching = item
                for key, tensor in step.input_map.items():
                    t = target.tensor(key)
                    if t is not None and tensor in tensors:
                        self.compare(model, f"{where}.input_map[{key}]", tensor, tensors[tensor],
                                     (t.data_type, list(t.dims), t_batching, f"{target.name} input {key}"))
                for key, tensor in step.output_map.items():
                    t = target.tensor(key, outputs=True)
                    if t is None:
                        continue
                    entry = (t.data_type, list(t.dims), t_batching, f"{target.name} output {key}")
                    if tensor in tensors and tensor not in outputs:
                        self.error(model, f"{where}.output_map[{key}]",
                                   f"tensor {tensor!r} is already produced by {tensors[tensor][3]}")
                    tensors.setdefault(tensor, entry)
                    produced.add(tensor)
                    if tensor in outputs:
                        o = outputs[tensor]
                        dims = list(o.reshape.shape) if o.HasField("reshape") else list(o.dims)
                        self.compare(model, f"{where}.output_map[{key}]", tensor,
                                     (o.data_type, dims, batching, f"ensemble output {tensor}"), entry)
        for name in outputs if complete else ():
            if name not in produced:
                self.error(model, f"output ({name})", "no step produces this ensemble output")

    def compare(self, model: Model, field_: str, tensor: str, a, b) -> None:
        (a_type, a_dims, a_batch, a_from), (b_type, b_dims, b_batch, b_from) = a, b
        if a_type != b_type:
            self.error(model, field_, f"tensor {tensor!r}: {a_from} is {type_name(a_type)} but {b_from} "
                                      f"is {type_name(b_type)}")
        elif not shapes_compatible(a_dims, a_batch, b_dims, b_batch):
            self.error(model, field_, f"tensor {tensor!r}: {a_from} has dims {dims_text(full_dims(a_dims, a_batch))} "
                                      f"but {b_from} has {dims_text(full_dims(b_dims, b_batch))}")

    def references(self, model: Model) -> list[tuple[str, str, int]]:
        """(config field, model name, version) for every model a pattern model's parameters name,
        as its backend's spec declares them."""
        spec = self.specs.get(model.config.backend)
        parameters = {key: model.parameter(key) or "" for key in model.config.parameters}
        refs = []
        for ref in spec.references if spec else ():
            try:
                found = ref.models(parameters)
            except ValueError as exc:
                self.error(model, *str(exc).split(": ", 1))
                continue
            refs += found
            if ref.kind == "steps":
                self.check_step_tensors(model, parse_steps(parameters[ref.parameter]), ref.parameter)
        return refs

    def check_step_tensors(self, model: Model, steps, parameter: str) -> None:
        """Serial steps map inputs and outputs their model has."""
        for i, step in enumerate(steps):
            where = f"parameters.{parameter}[{i}] ({step.name})"
            target = self.report.models.get(step.model)
            if target is None:
                continue
            for key in step.inputs:
                if target.tensor(key) is None:
                    self.error(model, f"{where}.inputs[{key}]", f"{target.name} has no input {key!r}")
            for key in step.outputs:
                if target.tensor(key, outputs=True) is None:
                    self.error(model, f"{where}.outputs[{key}]", f"{target.name} has no output {key!r}")

    def check_references(self) -> None:
        graph = self.report.graph
        for model in self.report.models.values():
            if model.config.platform == "ensemble":
                self.check_ensemble(model)
                graph[model.name] = {s.model_name for s in model.config.ensemble_scheduling.step}
                continue
            graph[model.name] = set()
            for field_, name, version in self.references(model):
                target = self.callee(model, field_, name, version)
                if target is None:
                    continue
                graph[model.name].add(name)
                self.check_batch_fits(model, target, field_)
        self.check_cycles(graph)

    def check_cycles(self, graph: dict[str, set[str]]) -> None:
        state: dict[str, int] = {}
        reported = set()

        def visit(name: str, trail: list[str]) -> None:
            state[name] = 1
            for nxt in sorted(graph.get(name, ())):
                if state.get(nxt) == 1:
                    cycle = trail[trail.index(nxt):] + [nxt] if nxt in trail else [name, nxt]
                    key = frozenset(cycle)
                    if key not in reported:
                        reported.add(key)
                        self.error(self.report.models[name], "references", f"reference cycle: {' -> '.join(cycle)}")
                elif nxt in graph and state.get(nxt) is None:
                    visit(nxt, trail + [nxt])
            state[name] = 2

        for name in sorted(graph):
            if state.get(name) is None:
                visit(name, [name])


def check_repository(
    repository: Repositories = paths.MODEL_REPOSITORIES,
    backends: Path | str | None = paths.BACKENDS,
    files: bool = True,
) -> Report:
    """Check a repository, or several served together; `backends`: the project's backend folders
    (None: do not check that backends exist); `files`: also check version folders' model files
    (off before `make models`)."""
    checker = _Checker(repository_list(repository), Path(backends).resolve() if backends else None, files)
    checker.load()
    for model in checker.report.models.values():
        checker.check_model(model)
    checker.check_references()
    for model in checker.report.models.values():
        checker.check_labels_from(model)
    return checker.report


def main(args) -> int:
    """`triton-patterns check`: print the problems; exit 1 on errors (or warnings with --strict)."""
    report = check_repository(args.repository or paths.MODEL_REPOSITORIES,
                              None if args.no_backends else args.backends, files=not args.no_files)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 1 if report.errors or (args.strict and report.warnings) else 0


def add_arguments(p) -> None:
    p.add_argument("--repository", type=Path, action="append",
                   help="a model repository; repeat it for several served together (default: the project's "
                        "two, model_repository and model_repository_test)")
    p.add_argument("--backends", type=Path, default=paths.BACKENDS,
                   help="the project's backend folders (default: %(default)s)")
    p.add_argument("--no-backends", action="store_true", help="do not check that `backend:` folders exist")
    p.add_argument("--no-files", action="store_true",
                   help="configs only: skip the model files of version folders (before `make models`)")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.add_argument("--json", action="store_true", help="the report as JSON")
