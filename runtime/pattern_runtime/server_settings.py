"""`ServerSettings`: how the embedded tritonserver (`launcher.TritonServer`) is run, in one frozen value.

Built by the CLI (`triton-patterns serve`), the stack, the tests and the tools; a variant is
`dataclasses.replace(settings, field=value)`. Each field's default is the one documented beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pattern_kernel.access import GrpcTls
from pattern_kernel.server_command import DEFAULT_CACHE_SIZE_BYTES
from pattern_kernel.trace_config import TraceConfig
from pattern_runtime import paths

if TYPE_CHECKING:
    from pattern_runtime.supervision import ServerDied


@dataclass(frozen=True)
class ServerSettings:
    """Every option of the embedded server; the defaults serve the checkout's repository on free
    ports of 127.0.0.1, every model loaded (explicit model control), admin APIs behind the admin key."""

    # -- what is served
    # one folder or several served together (default: the project's model_repository and model_repository_test)
    model_repository: Path | str | Sequence[Path | str] = paths.MODEL_REPOSITORIES
    project_backends: Path | str = paths.BACKENDS  # backend folders (`<name>/model.py`) linked into the server
    backend_directory: Path | str | None = None  # None: build/backends-pyX.Y, or a temporary one for other backends
    server_venv: Path | str | None = None  # the stubs' Python; None: `server_env.server_venv()` (.venv-server)
    # -- where: a port left None is a free port on `host`, kept for the server's life (restarts reuse it)
    host: str = "127.0.0.1"
    http_port: int | None = None
    grpc_port: int | None = None
    metrics_port: int | None = None
    # -- models: "explicit" loads `load_models` (None or "*": every model) and lets the repository API
    # load and unload them (the stub watchdog needs it); "none"; "poll" every `repository_poll_secs`
    model_control_mode: str = "explicit"
    load_models: Sequence[str] | None = None
    repository_poll_secs: int = 5
    exit_on_error: bool = True  # a model that fails to load at start stops the server (the start says why)
    cache_size_bytes: int | None = DEFAULT_CACHE_SIZE_BYTES  # Triton's local response cache; None: no cache
    startup_timeout: float = 180.0  # seconds for the server and every model it loads at start to be ready
    extra_args: Sequence[str] = ()  # tritonserver flags after the launcher's own (so they win)
    env: Mapping[str, str] = field(default_factory=dict)  # added to the server's environment
    # -- logs and traces: the log (stdout and stderr, appended across restarts) is `log_file`, by
    # default `log_dir/tritonserver-<time>-<HTTP port>.log` (`log_dir` default build/logs)
    log_dir: Path | str | None = None
    log_file: Path | str | None = None
    log_verbose: int = 0
    # request tracing (a `TraceConfig` or its text, e.g. "rate=1000"); None: off, in triton mode with a
    # file beside the log, so the trace API can turn it on per model (`triton-patterns trace`)
    trace: TraceConfig | str | None = None
    # -- supervision: a death not caused by `stop()` is appended to `TritonServer.deaths`, passed to
    # `on_death`, and with `restart_on_death` followed by a restart on the same ports, at most
    # `max_restarts` times, after `restart_backoff` seconds doubled for each death soon after a start
    restart_on_death: bool = False
    max_restarts: int = 5
    restart_backoff: float = 1.0
    on_death: Callable[[ServerDied], None] | None = None
    die_with_parent: bool = True  # SIGTERM from the kernel when the starting thread ends: no server left behind
    # -- access (`pattern_kernel.access`): the admin APIs need `admin_key` (None: the configured admin key,
    # created on first use) unless `restrict_admin_apis` is False; with `api_key`, inference needs it too
    admin_key: str | None = None
    api_key: str | None = None
    restrict_admin_apis: bool = True
    grpc_tls: GrpcTls | None = None  # gRPC over TLS

    def __post_init__(self) -> None:
        # own copies: a caller's list or dict changed later does not change these settings
        if self.load_models is not None:
            object.__setattr__(self, "load_models", tuple(self.load_models))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        object.__setattr__(self, "env", dict(self.env or {}))
        if isinstance(self.trace, str):
            object.__setattr__(self, "trace", TraceConfig.parse(self.trace))
