"""tritonserver in a container: the NGC `tritonserver` image through the Docker SDK.

`DockerTritonServer` has the interface of the embedded `launcher.TritonServer` (`Endpoints`,
`start`, `stop`, `is_running`, `log_tail`) and runs the image with the repository, the project's
pattern backends (not its `onnxruntime` shim: the image has the native backend) and the kernel
package mounted read-only; `docker_container_spec` is what it passes to `containers.run`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pattern_kernel
from pattern_kernel.access import Access, GrpcTls
from pattern_kernel.server_command import (
    CONTAINER_BACKENDS,
    CONTAINER_MODELS,
    DEFAULT_CACHE_SIZE_BYTES,
    container_command,
)
from pattern_runtime import paths
from pattern_runtime.backend_folder import project_backend_folders
from pattern_runtime.endpoints import Endpoints, fill_ports, resolve_access
from pattern_runtime.processes import wait_for
from pattern_runtime.server_env import TritonStartError
from pattern_runtime.triton_log import LOG_TAIL_LINES

DEFAULT_NGC_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
NATIVE_IN_NGC_IMAGE = frozenset({"onnxruntime"})  # project shims the NGC image replaces natively
KERNEL_DIR = Path(pattern_kernel.__file__).resolve().parent  # the only project package the server needs
# Every Debian/Ubuntu python3 (the NGC images' own) searches this folder whatever its minor version.
CONTAINER_PACKAGE = "/usr/lib/python3/dist-packages/pattern_kernel"
CONTAINER_TLS = "/run/triton-patterns/tls"


def _tls_mounts(tls: GrpcTls) -> tuple[GrpcTls, dict[str, dict[str, str]]]:
    """The TLS files as mounted under CONTAINER_TLS (one mount per distinct file), and the mounts."""
    volumes: dict[str, dict[str, str]] = {}
    moved = {}
    for name, path in tls.local_files().items():
        source = str(path.resolve())
        volumes.setdefault(source, {"bind": f"{CONTAINER_TLS}/{name}.pem", "mode": "ro"})
        moved[name] = Path(volumes[source]["bind"])
    return dataclasses.replace(tls, **moved), volumes


def _device_requests(gpus: bool | str | None) -> list:
    if not gpus:
        return []
    import docker

    if gpus is True or gpus == "all":
        return [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    ids = [g.strip() for g in str(gpus).split(",") if g.strip()]
    return [docker.types.DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]


def docker_container_spec(
    image: str = DEFAULT_NGC_IMAGE,
    model_repository: Path | str = paths.MODEL_REPOSITORY,
    project_backends: Path | str = paths.BACKENDS,
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    gpus: bool | str = False,
    shm_size: str = "1g",
    extra_args: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    cache_size_bytes: int | None = DEFAULT_CACHE_SIZE_BYTES,
    model_control_mode: str = "none",
    load_models: Iterable[str] | None = None,
    log_verbose: int = 0,
    name: str | None = None,
    labels: dict[str, str] | None = None,
    auto_remove: bool = True,
    access: Access | None = None,
    grpc_tls: GrpcTls | None = None,
) -> dict[str, Any]:
    """kwargs for `docker.from_env().containers.run(**spec)` running the NGC tritonserver image.

    Mounts (all read-only): the repository at /models; each project pattern backend at
    /opt/tritonserver/backends/<name>, beside the image's native backends, except the
    `onnxruntime` shim (the image has the C++ one); the `triton_patterns` package straight
    into `/usr/lib/python3/dist-packages/`, which the image's python3 searches (so the
    Python stub imports it like any installed package: no entrypoint script, no pip, no
    network). Third-party modules the backends import must be in the image.
    The container's ports 8000/8001/8002 are published on `host` at the given ports;
    `gpus` = True/"all" or "0,1" adds a GPU device request; NGC's recommended ulimits apply.
    `access` (default `resolve_access()`: admin APIs behind the admin key) and `grpc_tls` (its
    files mounted read-only under /run/triton-patterns/tls) as for `TritonServer`.
    """
    from docker.types import Ulimit

    volumes = {str(Path(model_repository).resolve()): {"bind": CONTAINER_MODELS, "mode": "ro"}}
    for backend, folder in project_backend_folders(project_backends).items():
        if backend not in NATIVE_IN_NGC_IMAGE:
            volumes[str(folder)] = {"bind": f"{CONTAINER_BACKENDS}/{backend}", "mode": "ro"}
    volumes[str(KERNEL_DIR)] = {"bind": CONTAINER_PACKAGE, "mode": "ro"}
    if grpc_tls is not None:
        grpc_tls, tls_volumes = _tls_mounts(grpc_tls)
        volumes.update(tls_volumes)

    command = container_command(
        model_control_mode=model_control_mode,
        load_models=load_models,
        cache_size_bytes=cache_size_bytes,
        log_verbose=log_verbose,
        access=access if access is not None else resolve_access(),
        grpc_tls=grpc_tls,
        extra_args=extra_args,
    )
    spec: dict[str, Any] = {
        "image": image,
        "command": command,
        "volumes": volumes,
        "ports": {"8000/tcp": (host, http_port), "8001/tcp": (host, grpc_port), "8002/tcp": (host, metrics_port)},
        "shm_size": shm_size,
        "ulimits": [Ulimit(name="memlock", soft=-1, hard=-1), Ulimit(name="stack", soft=67108864, hard=67108864)],
        "detach": True,
        "auto_remove": auto_remove,
        "name": name or f"triton-patterns-{http_port}",
        "labels": {"app": "triton-patterns", "triton-patterns.http-port": str(http_port), **(labels or {})},
    }
    device_requests = _device_requests(gpus)
    if device_requests:
        spec["device_requests"] = device_requests
    return spec


def docker_available(timeout: float = 3.0) -> tuple[bool, str]:
    """(True, engine version) if a Docker engine answers a ping, else (False, why not)."""
    try:
        import docker
    except ImportError as err:
        return False, f"the docker SDK is not installed ({err})"
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return True, f"Docker engine {client.version().get('Version', '?')}"
    except Exception as err:  # noqa: BLE001 - DockerException, connection errors, timeouts: all mean no engine
        return False, f"no Docker engine reachable: {type(err).__name__}: {err}"


class DockerTritonServer(Endpoints):
    """An NGC tritonserver container with the same interface as `TritonServer`."""

    def __init__(
        self,
        *,
        image: str = DEFAULT_NGC_IMAGE,
        model_repository: Path | str = paths.MODEL_REPOSITORY,
        project_backends: Path | str = paths.BACKENDS,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        host: str = "127.0.0.1",
        gpus: bool | str = False,
        shm_size: str = "1g",
        startup_timeout: float = 300.0,
        name: str | None = None,
        access: Access | None = None,
        **spec_kwargs: Any,
    ):
        self.host = host
        self.access = access if access is not None else resolve_access()
        self.http_port, self.grpc_port, self.metrics_port = fill_ports(host, http_port, grpc_port, metrics_port)
        self.startup_timeout = startup_timeout
        self.spec = docker_container_spec(
            image=image,
            model_repository=model_repository,
            project_backends=project_backends,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            gpus=gpus,
            shm_size=shm_size,
            host=host,
            name=name,
            auto_remove=False,  # keep the container's log until stop(), for start errors
            access=self.access,
            **spec_kwargs,
        )
        self.container = None
        self.log_path = None  # logs live in the container: see log_tail()

    @property
    def pid(self) -> int | None:
        return (self.container.attrs.get("State") or {}).get("Pid") if self.container else None

    def is_running(self) -> bool:
        if self.container is None:
            return False
        import docker

        try:
            self.container.reload()
        except docker.errors.NotFound:
            return False
        return self.container.status == "running"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.container is None:
            return ""
        with contextlib.suppress(Exception):
            return self.container.logs(tail=lines).decode("utf-8", errors="replace")
        return ""

    def start(self) -> DockerTritonServer:
        import docker

        ok, why = docker_available()
        if not ok:
            raise TritonStartError(why)
        self.container = docker.from_env().containers.run(**self.spec)
        started = time.monotonic()
        if not wait_for(self.is_ready, self.startup_timeout, interval=0.5, abort=lambda: not self.is_running()):
            state = "exited" if not self.is_running() else f"not ready after {time.monotonic() - started:.0f}s"
            tail_text = self.log_tail()
            self.stop(timeout=5)
            raise TritonStartError(f"container {self.spec['name']} ({self.spec['image']}) {state}; "
                                   f"last lines:\n{tail_text}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self.container is None:
            return
        import docker

        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self.container.stop(timeout=int(timeout))
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self.container.remove(force=True)
        self.container = None
