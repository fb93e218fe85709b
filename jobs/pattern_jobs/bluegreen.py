"""Blue-green release of a model version on a tritonserver in explicit model-control mode.

    triton-patterns bluegreen --to 2 --url 127.0.0.1:8000     # iris via its router iris_live
    triton-patterns bluegreen --to 2                          # on a server started here, under load

Clients call a router model (backends/router, mode split, one arm: `iris_live` -> `iris:1`), never
the bare model, so a new version can be loaded and checked before it gets traffic. Steps:
1. load     the model again with both versions (repository API `load`, config override
            `version_policy: specific [old, new]`); Triton swaps in the reloaded model only once
            it is ready, so the old version serves throughout;
2. warm up  the new version with real requests (one held-out row each);
3. check    every held-out row through both versions (all must answer): the new version's accuracy,
            measured here and recorded in its manifest.json, must not be worse than the old one's
            by more than `tolerance`, and what it serves must match its manifest;
4. switch   reload the router with `targets` overridden to the new version: requests in flight
            finish on the old router instance, new ones go to the new version; checked by requests;
5. drain    wait `drain_s` for requests the old router instance still holds;
6. unload   the old version (`version_policy: specific [new]`).
A failure up to the switch unloads the new version again and leaves the router on the old one.
The switch lives in the server: a restart reads config.pbtxt again (commit the new `targets`
and `version_policy` to the repository to make it durable).
"""

from __future__ import annotations

import argparse
import collections
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

from pattern_kernel.validation import parse_targets
from pattern_runtime import paths
from triton_patterns.credentials import authorize


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    ms: float = 0.0


@dataclass
class Release:
    """What a blue-green run did, step by step; `ok` once the old version is unloaded."""

    model: str
    router: str
    old: int
    new: int
    steps: list[Step] = field(default_factory=list)
    accuracy: dict = field(default_factory=dict)
    ok: bool = False

    def as_dict(self) -> dict:
        return {"model": self.model, "router": self.router, "old": self.old, "new": self.new, "ok": self.ok,
                "accuracy": self.accuracy, "steps": [vars(s) for s in self.steps]}


def heldout_set(model: str, path: Path | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The held-out rows and labels a model's manifest was measured on: an .npz with arrays X and
    y, or for `iris` the export's own test split (export/iris.py, recorded in the manifest)."""
    if path is not None:
        with np.load(path) as data:
            return data["X"].astype(np.float32), data["y"].astype(np.int64)
    if model == "iris":
        from pattern_runtime.datasets.iris import load_split

        _, x_test, _, y_test, _ = load_split()
        return x_test.astype(np.float32), y_test.astype(np.int64)
    raise ValueError(f"no held-out set known for model {model!r}: pass an .npz file with arrays X and y")


def recorded_accuracy(repository: Path, model: str, version: int) -> float | None:
    """The held-out accuracy in `<repository>/<model>/<version>/manifest.json`, if recorded."""
    try:
        manifest = json.loads((Path(repository) / model / str(version) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    value = manifest.get("heldout", {}).get("accuracy", manifest.get("metrics", {}).get("test_accuracy"))
    return float(value) if value is not None else None


def accuracy_gate(old: Mapping, new: Mapping, n: int, tolerance: float = 0.0) -> list[str]:
    """The gate's objections (none: pass). `old`/`new`: {"measured": float, "recorded": float|None}."""
    problems = []
    for name, acc in (("old", old), ("new", new)):
        if acc.get("recorded") is None:
            problems.append(f"the {name} version's manifest records no held-out accuracy")
    if new["measured"] < old["measured"] - tolerance:
        problems.append(f"measured accuracy {new['measured']:.4f} is worse than the old version's "
                        f"{old['measured']:.4f} (tolerance {tolerance:g})")
    if not problems and new["recorded"] < old["recorded"] - tolerance:
        problems.append(f"manifest accuracy {new['recorded']:.4f} is worse than the old version's "
                        f"{old['recorded']:.4f} (tolerance {tolerance:g})")
    if new.get("recorded") is not None and abs(new["measured"] - new["recorded"]) > 1.0 / n + 1e-9:
        problems.append(f"served accuracy {new['measured']:.4f} differs from the manifest's {new['recorded']:.4f}: "
                        "the loaded files are not the ones the manifest describes")
    return problems


class BlueGreen:
    """The steps above against a server's repository API over HTTP, with the admin (and API) key
    headers of `security.client_headers()` unless `headers` are given."""

    def __init__(self, url: str, model: str = "iris", router: str = "iris_live",
                 repository: Path | str = paths.MODEL_REPOSITORY, headers: Mapping[str, str] | None = None,
                 timeout_s: float = 300.0, input_name: str = "FEATURES", label_output: str = "LABEL"):
        self.url, self.model, self.router, self.repository = url, model, router, Path(repository)
        self.input_name, self.label_output = input_name, label_output
        self.client = authorize(httpclient.InferenceServerClient(url, connection_timeout=timeout_s,
                                                                 network_timeout=timeout_s), headers)
        self._batch_limits: dict[str, int] = {}

    def close(self) -> None:
        self.client.close()

    # -- repository API

    def config(self, name: str) -> dict:
        return self.client.get_model_config(name)

    def load(self, name: str, config: dict) -> None:
        self.client.load_model(name, config=json.dumps(config))

    def ready(self, version: int) -> bool:
        return self.client.is_model_ready(self.model, str(version))

    def router_target(self) -> tuple[str, int]:
        targets = parse_targets(self.config(self.router)["parameters"]["targets"]["string_value"])
        if len(targets) != 1:
            raise ValueError(f"router {self.router!r} has {len(targets)} targets; blue-green needs one")
        return targets[0]

    def load_versions(self, versions=None, policy: dict | None = None) -> None:
        """Reload the model with `version_policy` specific `versions` (or the given `policy`)."""
        config = self.config(self.model)
        config["version_policy"] = policy or {"specific": {"versions": sorted(set(versions))}}
        self.load(self.model, config)

    def point_router(self, version: int) -> None:
        config = self.config(self.router)
        config["parameters"]["targets"] = {"string_value": f"{self.model}:{version}"}
        self.load(self.router, config)

    # -- requests

    def predict(self, version: int, rows: np.ndarray, model: str | None = None, outputs=("LABEL",)) -> dict:
        """Rows through `model` (default: this model at `version`) in batches; outputs by name."""
        model = model or self.model
        if model not in self._batch_limits:
            self._batch_limits[model] = int(self.config(model).get("max_batch_size", 0)) or len(rows)
        limit = self._batch_limits[model]
        parts = collections.defaultdict(list)
        for start in range(0, len(rows), limit):
            chunk = np.ascontiguousarray(rows[start:start + limit], dtype=np.float32)
            tensor = httpclient.InferInput(self.input_name, list(chunk.shape), "FP32")
            tensor.set_data_from_numpy(chunk)
            result = self.client.infer(model, [tensor], model_version="" if model != self.model else str(version),
                                       outputs=[httpclient.InferRequestedOutput(o) for o in outputs])
            for name in outputs:
                parts[name].append(result.as_numpy(name).reshape(len(chunk), -1))
        return {name: np.concatenate(arrays) for name, arrays in parts.items()}

    def accuracy(self, version: int, x: np.ndarray, y: np.ndarray) -> float:
        labels = self.predict(version, x, outputs=(self.label_output,))[self.label_output][:, 0]
        return float(np.mean(labels.astype(np.int64) == y))

    def router_targets(self, rows: np.ndarray) -> set[str]:
        targets = self.predict(0, rows, model=self.router, outputs=("TARGET",))["TARGET"][:, 0]
        return {t.decode() if isinstance(t, bytes) else str(t) for t in targets}

    # -- the release

    def run(self, new: int, old: int | None = None, warmup: int = 20, tolerance: float = 0.0,
            heldout: Path | str | None = None, drain_s: float = 1.0,
            on_step: Callable[[Step], None] | None = None) -> Release:
        model, current = self.router_target()
        if model != self.model:
            raise ValueError(f"router {self.router!r} serves {model!r}, not {self.model!r}")
        old = current if old is None else old
        if old == new:
            raise ValueError(f"version {new} is already the one the router serves")
        release = Release(self.model, self.router, old, new)
        x, y = heldout_set(self.model, heldout)

        def step(name: str, action: Callable[[], str]) -> bool:
            started = time.perf_counter()
            try:
                detail, ok = action(), True
            except Exception as exc:  # noqa: BLE001 - a failed step is reported, then undone
                detail, ok = f"{type(exc).__name__}: {exc}", False
            release.steps.append(Step(name, ok, detail, round((time.perf_counter() - started) * 1000, 1)))
            if on_step is not None:
                on_step(release.steps[-1])
            return ok

        policy = self.config(self.model).get("version_policy")  # restored by a roll-back

        def load() -> str:
            self.load_versions({old, new})
            if not (self.ready(new) and self.ready(old)):
                raise RuntimeError(f"versions {old} and {new} are not both ready after the load")
            return f"{self.model} versions {old} and {new} ready (the old one served throughout)"

        def warm_up() -> str:
            times = []
            for i in range(warmup):
                started = time.perf_counter()
                self.predict(new, x[i % len(x): i % len(x) + 1])
                times.append((time.perf_counter() - started) * 1000)
            return f"{warmup} requests to version {new}, median {np.median(times):.1f} ms" if times else "skipped"

        def check() -> str:
            for version in (old, new):
                release.accuracy[str(version)] = {"measured": self.accuracy(version, x, y),
                                                  "recorded": recorded_accuracy(self.repository, self.model, version)}
            problems = accuracy_gate(release.accuracy[str(old)], release.accuracy[str(new)], len(y), tolerance)
            shown = "; ".join(f"v{v}: {a['measured']:.4f} (manifest "
                              f"{'none' if a['recorded'] is None else format(a['recorded'], '.4f')})"
                              for v, a in release.accuracy.items())
            if problems:
                raise RuntimeError(f"accuracy gate failed on {len(y)} held-out rows: {'; '.join(problems)} [{shown}]")
            return f"{len(y)} held-out rows, {shown}: not worse, gate passed"

        def switch() -> str:
            self.point_router(new)
            seen = self.router_targets(x[:8])
            if seen != {f"{self.model}:{new}"}:
                raise RuntimeError(f"after the switch the router answered from {sorted(seen)}")
            return f"{self.router} now routes to {self.model}:{new}"

        def drain() -> str:
            time.sleep(drain_s)
            return f"waited {drain_s:g} s for requests still on the old router instance"

        def unload() -> str:
            self.load_versions({new})
            if self.ready(old) or not self.ready(new):
                raise RuntimeError(f"version {old} still ready or version {new} not ready")
            return f"{self.model} version {old} unloaded; version {new} serves"

        def roll_back() -> str:
            self.load_versions(policy=policy)
            return f"{self.model} back to its version policy {json.dumps(policy)}; {self.router} on {self.model}:{old}"

        if not (step("load", load) and step("warm up", warm_up) and step("check", check)):
            step("roll back", roll_back)
            return release
        if not step("switch", switch):
            step("roll back", lambda: (self.point_router(old), roll_back())[1])
            return release
        release.ok = step("drain", drain) and step("unload", unload)
        return release


class Traffic:
    """Requests to a model from `threads` threads (one client each) until `stop()`: how many
    answered, the errors, and which TARGET answered (for a router)."""

    def __init__(self, url: str, model: str, rows: np.ndarray, threads: int = 2, pause_s: float = 0.005,
                 headers: Mapping[str, str] | None = None):
        self.url, self.model, self.rows, self.pause_s = url, model, rows.astype(np.float32), pause_s
        self.headers = headers
        self.ok = 0
        self.errors: list[str] = []
        self.targets: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, index: int) -> None:
        client = authorize(httpclient.InferenceServerClient(self.url, network_timeout=60), self.headers)
        i = index
        try:
            while not self._stop.is_set():
                row = self.rows[i % len(self.rows)].reshape(1, -1)
                i += 1
                tensor = httpclient.InferInput("FEATURES", list(row.shape), "FP32")
                tensor.set_data_from_numpy(row)
                try:
                    result = client.infer(self.model, [tensor])
                    target = result.as_numpy("TARGET").reshape(-1)[0]
                    target = target.decode() if isinstance(target, bytes) else str(target)
                    with self._lock:
                        self.ok += 1
                        self.targets[target] += 1
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    with self._lock:
                        self.errors.append(str(exc))
                self._stop.wait(self.pause_s)
        finally:
            client.close()

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def summary(self) -> str:
        shown = ", ".join(f"{t}: {n}" for t, n in sorted(self.targets.items()))
        return f"{self.ok + len(self.errors)} requests during the release, {len(self.errors)} failed ({shown})"


def print_step(step: Step) -> None:
    print(f"{'ok  ' if step.ok else 'FAIL'} {step.name:<9} {step.ms:>8.1f} ms  {step.detail}", flush=True)


def run_local(new: int, model: str = "iris", router: str = "iris_live", threads: int = 2,
              on_step: Callable[[Step], None] | None = print_step, **run_options) -> tuple[Release, Traffic]:
    """Start a tritonserver in explicit mode with only `model` and `router` loaded, put `threads`
    clients of load on the router, run the release, stop everything; the release and the load."""
    from pattern_runtime.launcher import TritonServer
    from pattern_runtime.server_settings import ServerSettings

    settings = ServerSettings(model_control_mode="explicit", load_models=[model, router], cache_size_bytes=None)
    with TritonServer(settings) as server:
        server.wait_ready_models([model, router])
        x, _ = heldout_set(model, run_options.get("heldout"))
        bluegreen = BlueGreen(server.http_url, model, router)
        try:
            with Traffic(server.http_url, router, x, threads=threads) as traffic:
                time.sleep(0.5)
                release = bluegreen.run(new, on_step=on_step, **run_options)
                time.sleep(0.5)
        finally:
            bluegreen.close()
    return release, traffic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", type=int, required=True, help="the new version")
    parser.add_argument("--from", dest="old", type=int, default=None, help="the old version (default: the router's)")
    parser.add_argument("--model", default="iris")
    parser.add_argument("--router", default="iris_live", help="the router model clients call")
    parser.add_argument("--url", default=None,
                        help="HTTP address of a server in explicit mode; default: start one here, with load")
    parser.add_argument("--repository", default=str(paths.MODEL_REPOSITORY), help="where the manifests are")
    parser.add_argument("--heldout", default=None, help=".npz with X and y (default: the model's export split)")
    parser.add_argument("--tolerance", type=float, default=0.0, help="accuracy the new version may lose (default 0)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up requests (default %(default)s)")
    parser.add_argument("--drain-s", type=float, default=1.0, help="wait before unloading the old version")
    parser.add_argument("--json", action="store_true", help="print the release as JSON")


def main(args: argparse.Namespace) -> int:
    options = {"old": args.old, "warmup": args.warmup, "tolerance": args.tolerance, "heldout": args.heldout,
               "drain_s": args.drain_s}
    show = None if args.json else print_step
    if args.url:
        bluegreen = BlueGreen(args.url, args.model, args.router, args.repository)
        try:
            release = bluegreen.run(args.to, on_step=show, **options)
        finally:
            bluegreen.close()
        load = None
    else:
        release, traffic = run_local(args.to, args.model, args.router, on_step=show, **options)
        load = {"requests": traffic.ok + len(traffic.errors), "failed": len(traffic.errors),
                "targets": dict(traffic.targets)}
    if args.json:
        print(json.dumps({**release.as_dict(), **({"load": load} if load else {})}))
    else:
        if load:
            print(f"load on {args.router}: {load['requests']} requests, {load['failed']} failed, "
                  f"by target {load['targets']}")
        outcome = "done" if release.ok else "NOT done, the old version serves"
        print(f"release {args.model} v{release.old} -> v{release.new}: {outcome}")
    return 0 if release.ok else 1
