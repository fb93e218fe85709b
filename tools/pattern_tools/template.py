"""Inference template pattern: a new model or pipeline from a template with one command,
loaded into a running server without a restart (`triton-patterns new ...`).

Kinds:
* `onnx NAME --file model.onnx`: the file is copied into NAME/1/; inputs and outputs (names,
  dtypes, dims) are read from the ONNX graph; a leading symbolic dimension on every tensor
  means the model batches (`max_batch_size`, dynamic batching).
* `python NAME --input X:FP32:4 --output Y:FP32:4`: a Python backend model whose NAME/1/model.py
  has a `run(inputs) -> outputs` to fill in (it passes inputs through until then).
* `ensemble NAME --step MODEL[:VERSION] ...`: a chain of existing models; each step's inputs are
  the earlier outputs (or pipeline inputs) of the same name, else the previous step's single
  output; versions are pinned (default: the latest served).
* `pattern NAME --backend B --target MODEL[:VERSION] ...`: any pattern backend over existing
  models (serial, parallel, prediction_cache, circuit_breaker, router, fault_injection, ...):
  inputs from the first target, outputs from the last, the backend's own extra outputs, its
  parameters with defaults (`--param KEY=VALUE` overrides or adds).

Each writes `config.pbtxt` and the version folder, checks the repository (`repo_check`, the new
model must have no errors, else nothing is left behind), writes a smoke test
(`tests/e2e/test_model_NAME.py`: sample inputs from the config, every output back with its
dtype and shape) and, with `--load --url`, loads the model through the repository API of a
server in explicit model-control mode (`load_model`), then runs the smoke check once.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from pattern_kernel.spec import LABELS_FROM, Targets
from pattern_kernel.specs import load_specs
from pattern_runtime import paths
from pattern_tools.repo_check import Model, check_repository, label_source, onnx_signature, parse_targets, type_name

DEFAULT_MAX_BATCH_SIZE = 8
LABELS_FILE = "labels.txt"  # as export writes it: one class name per line
NUMPY = {"TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_UINT16": np.uint16, "TYPE_UINT32": np.uint32,
         "TYPE_UINT64": np.uint64, "TYPE_INT8": np.int8, "TYPE_INT16": np.int16, "TYPE_INT32": np.int32,
         "TYPE_INT64": np.int64, "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
         "TYPE_STRING": np.object_}


class TemplateError(RuntimeError):
    """The template cannot be made (bad arguments, or the result would not pass the checker)."""


@dataclass
class Created:
    name: str
    folder: Path
    config: mc.ModelConfig
    test: Path | None = None
    files: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------- config text


def _list(values) -> str:
    return f"[ {', '.join(map(str, values))} ]" if len(values) else "[ ]"


def tensor_text(t) -> str:
    parts = [f'name: "{t.name}"', f"data_type: {type_name(t.data_type)}", f"dims: {_list(t.dims)}"]
    if t.HasField("reshape"):
        parts.append(f"reshape: {{ shape: {_list(t.reshape.shape)} }}")
    if getattr(t, "optional", False):
        parts.append("optional: true")
    if getattr(t, "label_filename", ""):
        parts.append(f'label_filename: "{t.label_filename}"')
    return "{ " + ", ".join(parts) + " }"


def render_config(cfg: mc.ModelConfig, comment: str = "") -> str:
    """The config in the repository's compact style; fields without a compact form as text_format."""
    one = lambda msg: text_format.MessageToString(msg, as_one_line=True)  # noqa: E731
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    rest = mc.ModelConfig()
    rest.CopyFrom(cfg)
    for key in ("name", "platform", "backend"):
        if getattr(cfg, key):
            lines.append(f'{key}: "{getattr(cfg, key)}"')
        rest.ClearField(key)
    lines.append(f"max_batch_size: {cfg.max_batch_size}")
    rest.ClearField("max_batch_size")
    if cfg.HasField("version_policy"):
        lines.append(f"version_policy: {{ {one(cfg.version_policy)} }}")
        rest.ClearField("version_policy")
    for key in ("input", "output"):
        if getattr(cfg, key):
            lines += [f"{key} [", ",\n".join(f"  {tensor_text(t)}" for t in getattr(cfg, key)), "]"]
        rest.ClearField(key)
    if cfg.instance_group:
        groups = [f"{{ count: {g.count}, kind: {mc.ModelInstanceGroup.Kind.Name(g.kind)} }}"
                  if g.ListFields() == [(g.DESCRIPTOR.fields_by_name[f], getattr(g, f)) for f in ("count", "kind")]
                  else f"{{ {one(g)} }}" for g in cfg.instance_group]
        lines.append("instance_group [ " + ", ".join(groups) + " ]")
        rest.ClearField("instance_group")
    if cfg.HasField("dynamic_batching"):
        lines.append(f"dynamic_batching {{ {one(cfg.dynamic_batching)} }}".replace("{  }", "{ }"))
        rest.ClearField("dynamic_batching")
    if cfg.HasField("ensemble_scheduling"):
        steps = []
        for s in cfg.ensemble_scheduling.step:
            body = [f'      model_name: "{s.model_name}"', f"      model_version: {s.model_version}"]
            body += [f'      input_map {{ key: "{k}", value: "{v}" }}' for k, v in sorted(s.input_map.items())]
            body += [f'      output_map {{ key: "{k}", value: "{v}" }}' for k, v in sorted(s.output_map.items())]
            steps.append("    {\n" + "\n".join(body) + "\n    }")
        lines += ["ensemble_scheduling {", "  step [", ",\n".join(steps), "  ]", "}"]
        rest.ClearField("ensemble_scheduling")
    params = sorted(cfg.parameters.items())  # a protobuf map has no order: sorted, for stable files
    rest.ClearField("parameters")
    other = text_format.MessageToString(rest).strip()
    if other:
        lines.append(other)
    lines += [f'parameters {{ key: "{k}", value: {{ {one(v)} }} }}' for k, v in params]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- building configs


def parse_tensor(text: str) -> tuple[str, str, list[int]]:
    """`NAME:TYPE:DIMS` (e.g. `FEATURES:FP32:4`, `TEXT:STRING:1`, `X:TYPE_INT64:-1,8`)."""
    try:
        name, dtype, dims = text.split(":")
        dtype = dtype.upper() if dtype.upper().startswith("TYPE_") else f"TYPE_{dtype.upper()}"
        mc.DataType.Value(dtype)
        return name, dtype, [int(d) for d in dims.split(",") if d.strip()]
    except ValueError:
        raise TemplateError(f"tensor {text!r}: expected NAME:TYPE:DIMS, e.g. FEATURES:FP32:4 "
                            f"(types: {', '.join(k[5:] for k in mc.DataType.keys() if k != 'TYPE_INVALID')})") from None


def add_tensor(group, name: str, dtype: str, dims: list[int], reshape: list[int] | None = None):
    t = group.add()
    t.name, t.data_type = name, mc.DataType.Value(dtype)
    t.dims.extend(dims)
    if reshape is not None:
        t.reshape.SetInParent()
        t.reshape.shape.extend(reshape)
    return t


def _base(name: str, max_batch_size: int, batching_queue: bool = True) -> mc.ModelConfig:
    cfg = mc.ModelConfig(name=name, max_batch_size=max_batch_size)
    cfg.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    if max_batch_size > 0 and batching_queue:
        cfg.dynamic_batching.SetInParent()
    return cfg


def _name_classes(cfg: mc.ModelConfig, labels: list[str]) -> None:
    """PROBABILITIES reads the labels file (LABELS_FILE, which `create` writes); the `labels` list
    beside it is the SDK's (Triton hands a labels file to clients only inside classification results)."""
    scores = next((t for t in cfg.output if t.name == "PROBABILITIES"), None)
    if scores is None:
        raise TemplateError(f"--labels names the classes of an output PROBABILITIES; the graph's outputs are "
                            f"{', '.join(t.name for t in cfg.output)}")
    if scores.dims and scores.dims[-1] > 0 and scores.dims[-1] != len(labels):
        raise TemplateError(f"--labels: {len(labels)} names, but PROBABILITIES has {scores.dims[-1]} classes")
    scores.label_filename = LABELS_FILE
    cfg.parameters["labels"].string_value = ",".join(labels)


def onnx_config(name: str, path: Path, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                labels: list[str] | None = None) -> mc.ModelConfig:
    """Inputs/outputs from the ONNX graph; batching when every tensor's first dimension is symbolic;
    `labels`: the class names of PROBABILITIES."""
    inputs, outputs = onnx_signature(path)
    unknown = [n for n, dtype, _ in inputs + outputs if not dtype.startswith("TYPE_")]
    if unknown:
        raise TemplateError(f"{path}: tensors {', '.join(unknown)} have data types Triton has no TYPE_ for")
    batching = max_batch_size > 0 and all(shape and shape[0] == -1 for _, _, shape in inputs + outputs)
    cfg = _base(name, max_batch_size if batching else 0)
    cfg.platform = "onnxruntime_onnx"
    for group, tensors in ((cfg.input, inputs), (cfg.output, outputs)):
        for tname, dtype, shape in tensors:
            dims = shape[1:] if batching else shape
            # a batching [N] tensor: dims [1] reshaped to [] (Triton needs non-empty dims)
            add_tensor(group, tname, dtype, dims or [1], [] if not dims else None)
    if labels:
        _name_classes(cfg, labels)
    cfg.parameters["intra_op_thread_count"].string_value = "1"
    return cfg


def python_config(name: str, inputs: list[str], outputs: list[str],
                  max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> mc.ModelConfig:
    if not inputs or not outputs:
        raise TemplateError("a python model needs at least one --input and one --output")
    cfg = _base(name, max_batch_size)
    cfg.backend = "python"
    for group, specs in ((cfg.input, inputs), (cfg.output, outputs)):
        for spec in specs:
            add_tensor(group, *parse_tensor(spec))
    return cfg


PYTHON_MODEL = '''"""{name}: a Python model made by `triton-patterns new python`. Put its logic in `run`."""

import numpy as np

from pattern_kernel.model_config import parse_model_config
from pattern_kernel.triton_glue import execute_requests


class TritonPythonModel:
    def initialize(self, args):
        self.config = parse_model_config(args["model_config"])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One array per output from the input arrays (batch dimension first when batching).
        The template passes input i through as output i when their dims agree, zeros otherwise."""
        rows = next(iter(inputs.values())).shape[0] if self.config.batching else None
        outputs = {{}}
        for i, spec in enumerate(self.config.outputs):
            source = self.config.inputs[i] if i < len(self.config.inputs) else None
            if source is not None and source.dims == spec.dims:
                outputs[spec.name] = np.asarray(inputs[source.name]).astype(spec.dtype)
            else:
                shape = ((rows,) if rows is not None else ()) + tuple(max(d, 1) for d in spec.dims)
                outputs[spec.name] = np.zeros(shape, dtype=spec.dtype)
        return outputs

    def execute(self, requests):
        return execute_requests(requests, self.config.inputs, self.run, self.config.batching)
'''


def resolve_models(repository: Path, specs: list[str]) -> list[tuple[Model, int]]:
    """`MODEL[:VERSION]` items as (model, version), the version defaulting to the latest served."""
    report = check_repository(repository, backends=None, files=False)
    out = []
    for spec in specs:
        for name, version in parse_targets(spec):
            model = report.models.get(name)
            if model is None:
                raise TemplateError(f"model {name!r} is not in {repository} "
                                    f"(it has: {', '.join(sorted(report.models))})")
            if version == -1:
                version = max(model.served) if model.served else 1
            elif model.served and version not in model.served:
                raise TemplateError(f"{name} does not serve version {version} (it serves "
                                    f"{', '.join(map(str, model.served))})")
            out.append((model, version))
    if not out:
        raise TemplateError("name at least one existing model")
    return out


def chain(models: list[Model]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Wire models run in order: per step {callee input: tensor} and {callee output: tensor}.
    An input takes the latest earlier output, or pipeline input, of its name; else, alone
    unmatched, the previous step's single output. Intermediate tensors are `<model>_<output>`,
    the last step's outputs keep their names; outputs nothing reads are left unmapped."""
    available = {t.name: t.name for t in models[0].config.input}
    ins, outs = [], []
    for k, m in enumerate(models):
        imap = {t.name: available[t.name] for t in m.config.input if t.name in available}
        unmatched = [t for t in m.config.input if t.name not in imap and not t.optional]
        previous = outs[-1] if outs else {}
        if len(unmatched) == 1 and len(previous) == 1:
            imap[unmatched[0].name] = next(iter(previous.values()))
        elif unmatched:
            raise TemplateError(f"step {k} ({m.name}): no pipeline input or earlier output named "
                                f"{', '.join(t.name for t in unmatched)}")
        last = k == len(models) - 1
        omap = {t.name: t.name if last else f"{m.name}_{t.name}" for t in m.config.output}
        available.update(omap)
        ins.append(imap)
        outs.append(omap)
    used = {tensor for imap in ins for tensor in imap.values()}
    outs = [o if k == len(outs) - 1 else {c: t for c, t in o.items() if t in used} for k, o in enumerate(outs)]
    return ins, outs


def _copy_tensors(group, tensors, add_batch_dim: bool = False) -> None:
    """Copy tensor specs as other models see them (dims, no reshape); `add_batch_dim`: prepend -1."""
    for t in tensors:
        add_tensor(group, t.name, type_name(t.data_type), ([-1] if add_batch_dim else []) + list(t.dims))


def _max_batch_size(models: list[Model]) -> int:
    sizes = [m.config.max_batch_size for m in models]
    return min(sizes) if all(sizes) else 0


def ensemble_config(name: str, steps: list[tuple[Model, int]]) -> mc.ModelConfig:
    models = [m for m, _ in steps]
    mbs = _max_batch_size(models)
    cfg = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=mbs)
    first, last = models[0], models[-1]
    # a non-batching ensemble over batching steps carries their batch dimension in its dims
    _copy_tensors(cfg.input, first.config.input, mbs == 0 and first.config.max_batch_size > 0)
    _copy_tensors(cfg.output, last.config.output, mbs == 0 and last.config.max_batch_size > 0)
    ins, outs = chain(models)
    for (model, version), imap, omap in zip(steps, ins, outs, strict=True):
        step = cfg.ensemble_scheduling.step.add(model_name=model.name, model_version=version)
        step.input_map.update(imap)
        step.output_map.update(omap)
    return cfg


def pattern_config(name: str, backend: str, targets: list[tuple[Model, int]],
                   params: dict[str, str] | None = None, extra_outputs: list[str] = (),
                   repository_models: dict[str, Model] | None = None) -> mc.ModelConfig:
    """A config of a pattern backend over `targets`: the parameters its spec names models with
    (the first reference: one model, a `targets` list or serial `steps`), `labels_from` the last
    target when its classes have names (followed through `repository_models`), the spec's template
    defaults, then `params`; the spec's extra outputs are the backend's `auto_complete_config`'s."""
    specs = load_specs(paths.BACKENDS)
    spec = specs.get(backend)
    if spec is None or not spec.references:
        raise TemplateError(f"backend {backend!r} is not a pattern backend over target models "
                            f"(those are: {', '.join(n for n, s in specs.items() if s.references)})")
    ref = spec.references[0]
    models = [m for m, _ in targets]
    if ref.kind == "model" and len(targets) > 1:
        raise TemplateError(f"backend {backend!r} wraps one target model; got {len(targets)}")
    first, last = models[0], models[-1]
    cfg = _base(name, _max_batch_size(models), batching_queue=spec.template_batching)
    names_classes = label_source({**(repository_models or {}), last.name: last}, last)[0] is not None
    if names_classes and any(p.name == LABELS_FROM.name for p in spec.parameters):
        cfg.parameters[LABELS_FROM.name].string_value = last.name
    cfg.backend = backend
    _copy_tensors(cfg.input, first.config.input)
    source = last if ref.kind == "steps" else first
    _copy_tensors(cfg.output, source.config.output)
    for text in extra_outputs:
        add_tensor(cfg.output, *parse_tensor(text))
    defaults: dict[str, str] = {}
    if ref.kind == "steps":
        ins, outs = chain(models)
        defaults[ref.parameter] = json.dumps([{"name": f"step{k}_{m.name}", "model": m.name, "version": v,
                                               "inputs": imap, "outputs": omap}
                                              for k, ((m, v), imap, omap)
                                              in enumerate(zip(targets, ins, outs, strict=True))])
    elif ref.kind == "targets":
        defaults[ref.parameter] = ",".join(f"{m.name}:{v}" for m, v in targets)
    else:
        defaults.update({ref.parameter: first.name, ref.version: str(targets[0][1])})
    defaults.update(spec.template_defaults(Targets(tuple(m.name for m in models),
                                                   tuple((t.name, tuple(t.dims)) for t in first.config.output))))
    for key, value in {**defaults, **(params or {})}.items():
        cfg.parameters[key].string_value = value
    return cfg


# --------------------------------------------------------------------------- smoke checks


def sample_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.tile(np.arange(0, 256, 32, dtype=np.uint8), (8, 1))).save(buf, format="PNG")
    return buf.getvalue()


def sample_inputs(cfg: mc.ModelConfig) -> dict[str, np.ndarray]:
    """One row per input: ones for numbers, a PNG for an IMAGE-like string input, else a sentence;
    variable dimensions are 8 long."""
    batching = cfg.max_batch_size > 0
    out = {}
    for t in cfg.input:
        dims = [d if d > 0 else 8 for d in t.dims]
        if not batching and t.dims and t.dims[0] == -1:
            dims[0] = 1
        shape = ([1] if batching else []) + dims
        dtype = type_name(t.data_type)
        if dtype == "TYPE_STRING":
            value = sample_png() if "IMAGE" in t.name.upper() else b"the striker scored twice in the final"
            out[t.name] = np.full(shape, value, dtype=np.object_)
        else:
            out[t.name] = np.ones(shape, dtype=NUMPY[dtype])
    return out


def _client(url: str, protocol: str):
    from triton_patterns.client import PatternClient  # carries the project's access keys, if any

    return PatternClient(url, protocol=protocol)


def server_config(client, name: str, protocol: str) -> mc.ModelConfig:
    """The config the server serves for `name` (with what Triton filled in)."""
    raw = client.get_model_config(name, **({"as_json": True} if protocol == "grpc" else {}))
    return json_format.ParseDict(raw.get("config", raw), mc.ModelConfig(), ignore_unknown_fields=True)


def smoke_check(url: str, model: str, protocol: str = "http",
                sample: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Infer `model` once with sample inputs (from its served config unless given); every output
    must come back with its configured dtype and dims. Returns the outputs."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from pattern_kernel.model_config import numpy_dtype
    from pattern_tools.repo_check import dims_match, full_dims

    mod = grpcclient if protocol == "grpc" else httpclient
    with _client(url, protocol) as pc:
        client = pc.client
        cfg = server_config(client, model, protocol)
        arrays = sample if sample is not None else sample_inputs(cfg)
        inputs = []
        for t in cfg.input:
            arr = arrays[t.name]
            tensor = mod.InferInput(t.name, list(arr.shape), type_name(t.data_type)[5:].replace("STRING", "BYTES"))
            tensor.set_data_from_numpy(arr)
            inputs.append(tensor)
        result = client.infer(model, inputs, outputs=[mod.InferRequestedOutput(t.name) for t in cfg.output])
        outputs = {}
        for t in cfg.output:
            arr = result.as_numpy(t.name)
            if arr is None:
                raise AssertionError(f"{model}: output {t.name} missing from the response")
            want = full_dims(t.dims, cfg.max_batch_size > 0)
            if arr.dtype != np.dtype(numpy_dtype(type_name(t.data_type))) or not dims_match(want, arr.shape):
                raise AssertionError(f"{model}: output {t.name} is {arr.dtype}{list(arr.shape)}, config says "
                                     f"{type_name(t.data_type)}{want}")
            outputs[t.name] = arr
        return outputs


SMOKE_TEST = '''"""Smoke test of model `{name}` (written by `triton-patterns new {kind}`): sample inputs from its
config, every output back with its configured dtype and dims. Runs in the e2e session (the server
of tests/e2e/conftest.py) or against a running server: TRITON_PATTERNS_URL=HOST:PORT pytest FILE."""

import os

import pytest

from pattern_tools.template import smoke_check

pytestmark = pytest.mark.e2e
MODEL = "{name}"
SAMPLE = None  # {{input name: numpy array}} to send instead of the generated sample


@pytest.fixture(scope="module")
def url(request):
    return os.environ.get("TRITON_PATTERNS_URL") or request.getfixturevalue("triton").http_url


def test_{ident}_answers(url):
    outputs = smoke_check(url, MODEL, sample=SAMPLE)
    assert sorted(outputs) == {outputs}
'''


# --------------------------------------------------------------------------- writing and loading


def write_model(repository: Path, cfg: mc.ModelConfig, comment: str, files: dict[str, bytes | Path],
                force: bool = False) -> Created:
    """Write NAME/config.pbtxt and `files` (paths within NAME/, e.g. "1/model.onnx"; NAME/1/ is made
    in any case), then check the repository: on an error in the new model the folder is removed
    and TemplateError lists the problems."""
    folder = repository / cfg.name
    if folder.exists():
        if not force:
            raise TemplateError(f"{folder} exists (use --force to replace it)")
        shutil.rmtree(folder)
    version = folder / "1"
    version.mkdir(parents=True)
    written = []
    for fname, content in files.items():
        target = folder / fname
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_bytes(content)
        written.append(target)
    if not any(version.iterdir()):
        (version / ".gitkeep").touch()
    (folder / "config.pbtxt").write_text(render_config(cfg, comment))
    report = check_repository(repository)
    mine = [p for p in report.errors if folder in p.path.parents or p.path == folder]
    if mine:
        shutil.rmtree(folder)
        raise TemplateError("the new model does not pass the repository check:\n" +
                            "\n".join(p.format(repository.parent) for p in mine))
    # the config as Triton serves it: with the outputs a pattern backend's auto_complete_config adds
    return Created(cfg.name, folder, report.models[folder.name].config, files=[folder / "config.pbtxt", *written])


def write_smoke_test(created: Created, kind: str, tests_dir: Path) -> Path:
    tests_dir.mkdir(parents=True, exist_ok=True)
    path = tests_dir / f"test_model_{created.name}.py"
    path.write_text(SMOKE_TEST.format(name=created.name, kind=kind, ident=created.name.replace("-", "_"),
                                      outputs=sorted(t.name for t in created.config.output)))
    created.test = path
    return path


def load(url: str, name: str, protocol: str = "http", timeout_s: float = 120.0) -> None:
    """Load (or reload) a model through the repository API; the server must run with
    --model-control-mode=explicit. Waits until the model is ready."""
    from tritonclient.utils import InferenceServerException

    with _client(url, protocol) as pc:
        try:
            pc.client.load_model(name)
        except InferenceServerException as exc:
            hint = (" (the server must run with --model-control-mode=explicit)"
                    if "explicit" in exc.message() or "not allowed" in exc.message() else "")
            raise TemplateError(f"loading {name} into {url} failed: {exc.message()}{hint}") from None
        deadline = time.monotonic() + timeout_s
        while not pc.client.is_model_ready(name):
            if time.monotonic() > deadline:
                raise TemplateError(f"{name} loaded but not ready after {timeout_s:.0f} s")
            time.sleep(0.2)


def create(args) -> Created:
    """Build the model `args` describe (see `add_arguments`) and write it."""
    repository = Path(args.repository).resolve()
    name = args.name
    if not name.replace("_", "").replace("-", "").isalnum():
        raise TemplateError(f"model name {name!r}: letters, digits, '_' and '-' only")
    files: dict[str, bytes | Path] = {}
    if args.kind == "onnx":
        source = Path(args.file)
        if not source.is_file():
            raise TemplateError(f"{source} does not exist")
        labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
        cfg = onnx_config(name, source, args.max_batch_size, labels)
        files["1/model.onnx"] = source
        if labels:
            files[LABELS_FILE] = "".join(f"{x}\n" for x in labels).encode()
        comment = f"{name}: ONNX model from {source.name} (triton-patterns new onnx); I/O read from the graph."
    elif args.kind == "python":
        cfg = python_config(name, args.input, args.output, args.max_batch_size)
        files["1/model.py"] = PYTHON_MODEL.format(name=name).encode()
        comment = f"{name}: Python model (triton-patterns new python); its logic is in 1/model.py."
    elif args.kind == "ensemble":
        steps = resolve_models(repository, args.step)
        cfg = ensemble_config(name, steps)
        comment = (f"{name}: ensemble " + " -> ".join(f"{m.name} v{v}" for m, v in steps)
                   + " (triton-patterns new ensemble).")
    else:
        targets = resolve_models(repository, args.target)
        params = dict(p.split("=", 1) for p in args.param)
        repository_models = check_repository(repository, backends=None, files=False).models
        cfg = pattern_config(name, args.backend, targets, params, args.extra_output, repository_models)
        comment = (f"{name}: {args.backend} pattern (backends/{args.backend}) over "
                   + ", ".join(f"{m.name} v{v}" for m, v in targets) + " (triton-patterns new pattern).")
    created = write_model(repository, cfg, comment, files, force=args.force)
    if not args.no_test:
        write_smoke_test(created, args.kind, Path(args.tests))
    return created


def main(args) -> int:
    try:
        created = create(args)
        for path in created.files + ([created.test] if created.test else []):
            print(f"wrote {path}")
        if args.load:
            load(args.url, created.name, args.protocol)
            outputs = smoke_check(args.url, created.name, args.protocol)
            print(f"loaded {created.name} into {args.url}; smoke check ok: "
                  + ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in outputs.items()))
    except (TemplateError, AssertionError) as exc:
        print(f"error: {exc}")
        return 1
    return 0


def add_arguments(new) -> None:
    kinds = new.add_subparsers(dest="kind", required=True)
    onnx = kinds.add_parser("onnx", help="an ONNX model from a file (I/O read from the graph)")
    onnx.add_argument("--file", required=True, help="the .onnx file to copy into NAME/1/model.onnx")
    python = kinds.add_parser("python", help="a Python backend model with a run() to fill in")
    python.add_argument("--input", action="append", default=[], metavar="NAME:TYPE:DIMS", help="e.g. X:FP32:4")
    python.add_argument("--output", action="append", default=[], metavar="NAME:TYPE:DIMS")
    ensemble = kinds.add_parser("ensemble", help="an ensemble chaining existing models")
    ensemble.add_argument("--step", action="append", required=True, metavar="MODEL[:VERSION]")
    pattern = kinds.add_parser("pattern", help="a pattern backend (serial, parallel, cache, breaker, router...) "
                                               "over existing models")
    pattern.add_argument("--backend", required=True, help="a folder of backends/ (e.g. serial, circuit_breaker)")
    pattern.add_argument("--target", action="append", required=True, metavar="MODEL[:VERSION]")
    pattern.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a config parameter")
    pattern.add_argument("--extra-output", action="append", default=[], metavar="NAME:TYPE:DIMS",
                         help="an output the backend adds (known for serial, parallel, caches, breaker, router)")
    for kind in (onnx, python, ensemble, pattern):
        kind.add_argument("name", help="the new model's name (its folder)")
        kind.add_argument("--repository", default=str(paths.MODEL_REPOSITORY), help="default: %(default)s")
        kind.add_argument("--tests", default=str(paths.PROJECT_ROOT / "tests" / "e2e"),
                          help="where the smoke test goes (default: %(default)s)")
        kind.add_argument("--no-test", action="store_true", help="no smoke test")
        kind.add_argument("--force", action="store_true", help="replace an existing model folder")
        kind.add_argument("--load", action="store_true", help="load it into the server at --url (explicit mode)")
        kind.add_argument("--url", default="127.0.0.1:8000", help="server for --load (default %(default)s)")
        kind.add_argument("--protocol", choices=("http", "grpc"), default="http")
    for kind in (onnx, python):
        kind.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                          help="0: no batching (default %(default)s)")
    onnx.add_argument("--labels", default=None, help=f"comma list of the class names of PROBABILITIES "
                                                     f"(written to NAME/{LABELS_FILE}, its label_filename)")
