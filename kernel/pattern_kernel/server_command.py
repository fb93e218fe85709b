"""The tritonserver command line of a server image: the flags every runtime passes (model control,
readiness, response cache, access keys, gRPC TLS, tracing) and the container's command.

Stdlib only: the server images run it (`pattern_kernel.container`) without the rest of the project.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pattern_kernel.access import Access, GrpcTls
from pattern_kernel.trace_config import TraceConfig

DEFAULT_CACHE_SIZE_BYTES = 64 * 1024 * 1024
# models loaded at once (Triton's default 4): a Python model's load mostly waits on its stub's
# start, so more at once restart a server with every model in about half the time
# (docs/reliability.md, "Restart time")
MODEL_LOAD_THREADS = 16
CONTAINER_MODELS = "/models"
CONTAINER_BACKENDS = "/opt/tritonserver/backends"


def common_server_flags(
    *,
    model_control_mode: str = "none",
    load_models: Iterable[str] | None = None,
    repository_poll_secs: int = 5,
    cache_size_bytes: int | None = DEFAULT_CACHE_SIZE_BYTES,
    log_verbose: int = 0,
    exit_on_error: bool = True,
    access: Access | None = None,
    grpc_tls: GrpcTls | None = None,
    trace: TraceConfig | None = None,
) -> list[str]:
    """Flags both runtimes pass to tritonserver (everything except paths and ports).

    `--strict-readiness=false`: /v2/health/ready is 200 while the server serves, whatever one
    model is doing; with strict readiness one model's reload (the stub watchdog's) took the
    whole server out of a load balancer. Per model: /v2/models/<m>/ready, and the probes' real
    inference (`pattern_kernel.probe`). Models loaded at start are loaded before the endpoints
    open; the launcher still waits for each. `--exit-on-error=true` (the default): a model that
    fails to load at startup stops the server at once, and the launcher reports the log
    instead of waiting out its deadline on a server that will never be ready.
    `access`: the restricted-API flags (`Access.server_flags`); `grpc_tls`: gRPC over TLS;
    `trace`: request tracing (`TraceConfig.server_flags`).
    """
    if model_control_mode not in ("none", "explicit", "poll"):
        raise ValueError(f"model_control_mode must be none, explicit or poll, not {model_control_mode!r}")
    flags = [
        "--strict-readiness=false",
        f"--exit-on-error={str(exit_on_error).lower()}",
        "--allow-metrics=true",
        f"--model-control-mode={model_control_mode}",
        f"--model-load-thread-count={MODEL_LOAD_THREADS}",
    ]
    if model_control_mode == "explicit":
        flags += [f"--load-model={name}" for name in (load_models if load_models is not None else ["*"])]
    elif load_models:
        raise ValueError("load_models needs model_control_mode='explicit'")
    if model_control_mode == "poll":
        flags.append(f"--repository-poll-secs={repository_poll_secs}")
    if cache_size_bytes:
        flags.append(f"--cache-config=local,size={int(cache_size_bytes)}")
    if log_verbose:
        flags.append(f"--log-verbose={int(log_verbose)}")
    if access is not None:
        flags += access.server_flags()
    if grpc_tls is not None:
        flags += grpc_tls.server_flags()
    if trace is not None:
        flags += trace.server_flags()
    return flags


def container_command(
    model_repository: str = CONTAINER_MODELS,
    *,
    backend_directory: str = CONTAINER_BACKENDS,
    extra_args: Sequence[str] = (),
    **flags: Any,
) -> list[str]:
    """The tritonserver command line in a server container: the Docker mode's, and the one the
    images of deploy/docker run (`python3 -m pattern_kernel.container`). `flags`: those of
    `common_server_flags` (access, TLS, model control, cache, ...)."""
    return [
        "tritonserver",
        f"--model-repository={model_repository}",
        f"--backend-directory={backend_directory}",
        *common_server_flags(**flags),
        *extra_args,
    ]
