"""Start, stop and supervise a Triton Inference Server.

Two runtimes with one interface (`start`, `stop`, `http_url`, `grpc_url`, `metrics_url`,
`is_running`, `log_tail`, `wait_ready_models`, context manager):

* `TritonServer` (embedded): the tritonserver 2.51 binary from the `nvidia-pytriton` wheel,
  run as a child process with a backend directory assembled from the wheel's `python`
  backend, the stub for the running Python, and the project's `backends/*`; the stubs run the
  server virtualenv's `python3` (`.venv-server`: the kernel package and the backends' libraries). A daemon
  thread watches the process; a death not asked for by `stop()` is reported (exit code or
  signal, log tail) and, with `restart_on_death`, the server is restarted on the same ports.
* `DockerTritonServer`: an NGC `tritonserver` image through the Docker SDK, with the
  repository and the project's pattern backends mounted (not its `onnxruntime` shim: the
  image has the native backend).

Both restrict the admin APIs (model repository, shared memory, logging, trace) to callers
with the admin key by default, and inference too when given an API key (`pattern_kernel.access`);
their own calls (readiness, `model_index`, `reload_model`) send the keys.

`triton-patterns serve` (`make serve`) runs it with Redis and the gateway: `pattern_runtime.service`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pattern_kernel
from pattern_kernel.access import Access, GrpcTls
from pattern_kernel.trace_config import TraceConfig
from pattern_kernel.server_command import (
    CONTAINER_BACKENDS,
    CONTAINER_MODELS,
    DEFAULT_CACHE_SIZE_BYTES,
    common_server_flags,
    container_command,
)
from pattern_runtime.processes import (
    ManagedProcess,
    StartError,
    describe_returncode,
    free_port,
    free_ports,
    http_status,
    tail,
    wait_for,
)
from pattern_runtime.serve_models import Repositories, repository_list, repository_models
from pattern_runtime.supervision import ProcessDied, RestartPolicy
from triton_patterns import paths
from triton_patterns.credentials import configured_admin_key

LOG = logging.getLogger(__name__)

DEFAULT_NGC_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
NATIVE_IN_NGC_IMAGE = frozenset({"onnxruntime"})  # project shims the NGC image replaces natively
KERNEL_DIR = Path(pattern_kernel.__file__).resolve().parent  # the only project package the server needs
SERVER_VENV_ENV = "TRITON_PATTERNS_SERVER_VENV"
LOG_TAIL_LINES = 60
_ERROR_LINE = re.compile(r"^E\d{4} |unrecognized option|invalid argument|[Ee]rror: ")
_HARMLESS_ON_CPU = re.compile(r"NVML|CudaDriverHelper|DCGM")


class TritonStartError(StartError):
    """The server could not be started, or did not become ready; the message ends with its log tail."""


@dataclass
class ServerDied(ProcessDied):
    """A tritonserver process that ended without `stop()` having been called."""

    name: str = "tritonserver"


# --------------------------------------------------------------------------- the wheel's files


def wheel_dir() -> Path:
    """`site-packages/pytriton/tritonserver` of the installed nvidia-pytriton wheel."""
    spec = importlib.util.find_spec("pytriton")  # locate without importing pytriton
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError("nvidia-pytriton is not installed: pip install nvidia-pytriton==0.7.0")
    return Path(list(spec.submodule_search_locations)[0]) / "tritonserver"


def python_version_tag(version: Sequence[int] | None = None) -> str:
    major, minor = (version or sys.version_info)[:2]
    return f"{major}.{minor}"


def stub_path(python_version: str | None = None) -> Path:
    """The wheel's `triton_python_backend_stub` for a Python version (default: the running one)."""
    version = python_version or python_version_tag()
    stubs = wheel_dir() / "python_backend_stubs"
    stub = stubs / version / "triton_python_backend_stub"
    if not stub.is_file():
        available = sorted(p.name for p in stubs.iterdir() if (p / "triton_python_backend_stub").is_file())
        raise TritonStartError(
            f"the nvidia-pytriton wheel has no Python backend stub for Python {version} "
            f"(it has: {', '.join(available) or 'none'}); run the launcher from a virtualenv "
            f"of one of those versions (project code in Triton must run on 3.10-3.12)"
        )
    return stub


def wheel_libs_dir() -> Path:
    """The wheel's bundled shared libraries (libtritonserver, libcudart, ...)."""
    installed = wheel_dir().parent.parent / "nvidia_pytriton.libs"
    return installed if installed.is_dir() else wheel_dir() / "external_libs"  # editable pytriton


def _temporary_sibling(path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    return tmp


def _symlink(target: Path, link: Path) -> None:
    """Point `link` at `target`, atomically replacing whatever is there."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    tmp = _temporary_sibling(link)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _install_file(source: Path, dest: Path) -> None:
    """Put a copy of `source` at `dest` (atomic; skipped when the copy is there). A copy, not a hard
    link: tritonserver chmods a stub that fails to run to owner-execute only, which a link would pass
    on to the wheel's file."""
    if not dest.is_symlink() and dest.exists() and not os.path.samefile(source, dest):  # a link is replaced
        src_stat, dst_stat = source.stat(), dest.stat()
        if (src_stat.st_size, int(src_stat.st_mtime)) == (dst_stat.st_size, int(dst_stat.st_mtime)):
            return
    tmp = _temporary_sibling(dest)
    shutil.copy2(source, tmp)
    os.replace(tmp, dest)


def project_backend_folders(project_backends: Path | str = paths.BACKENDS) -> dict[str, Path]:
    """Pattern backends of the project: folders of `backends/` holding a `model.py`."""
    root = Path(project_backends)
    if not root.is_dir():
        return {}
    found = {p.name: p.resolve() for p in sorted(root.iterdir()) if (p / "model.py").is_file()}
    if "python" in found:
        raise TritonStartError(f"{root}/python would shadow Triton's python backend; rename it")
    return found


def assemble_backend_directory(
    target: Path | str,
    project_backends: Path | str = paths.BACKENDS,
    python_version: str | None = None,
) -> Path:
    """Make `target` a Triton `--backend-directory` (idempotent, safe to rerun).

    `target/python/` holds the wheel's `libtriton_python.so`, `triton_python_backend_utils.py`
    and the stub for `python_version` (default: the running Python) as real files (copies): for a
    Python-based backend, core rejects a `libtriton_python.so` whose real path "escapes backend
    directory", so a symlink to the wheel does not do. Every project
    backend folder is symlinked as `target/<name>`; links to backends that disappeared are
    removed. Away from the wheel the files' RPATH no longer finds the wheel's libraries:
    `server_env()` puts them on LD_LIBRARY_PATH.
    """
    target = Path(target)
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    wheel_python = wheel_dir() / "backends" / "python"
    _install_file(wheel_python / "libtriton_python.so", python_dir / "libtriton_python.so")
    _install_file(wheel_python / "triton_python_backend_utils.py", python_dir / "triton_python_backend_utils.py")
    _install_file(stub_path(python_version), python_dir / "triton_python_backend_stub")

    wanted = project_backend_folders(project_backends)
    for name, folder in wanted.items():
        _symlink(folder, target / name)
    for entry in target.iterdir():
        if entry.is_symlink() and entry.name not in wanted and not entry.name.startswith("."):
            entry.unlink(missing_ok=True)
    return target


# --------------------------------------------------------------------------- environment and flags


def python_libdir() -> Path | None:
    """Directory of the running interpreter's `libpythonX.Y.so` (None for a static build)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlibrary = f"libpython{python_version_tag()}.so.1.0"
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and (Path(libdir) / ldlibrary).exists():
        return Path(libdir)
    return None


def _prepend(env: dict[str, str], name: str, value: str) -> None:
    env[name] = value + (os.pathsep + env[name] if env.get(name) else "")


def server_venv() -> Path:
    """The server virtualenv, whose `python3` the Python stubs run: `$TRITON_PATTERNS_SERVER_VENV`,
    else the checkout's `.venv-server` (`make server-venv`: the kernel package and the backends'
    pinned libraries, kernel/requirements.txt; nothing else of the project)."""
    return Path(os.environ.get(SERVER_VENV_ENV) or paths.PROJECT_ROOT / ".venv-server")


def server_python_bin(venv: Path | str | None = None) -> Path:
    """`venv/bin` (default `server_venv()`), checked: it has a `python3` of this interpreter's
    version (the stub is chosen for it and links its libpython). There is no fallback to the
    launcher's own virtualenv, where every project package would be importable in the server:
    TritonStartError says how to build the server virtualenv, or to name one."""
    venv = Path(venv) if venv is not None else server_venv()
    python = venv / "bin" / "python3"
    if not python.exists():
        raise TritonStartError(
            f"no server virtualenv at {venv} (its python3 runs the Python stubs): `make server-venv` builds it "
            f"(kernel/requirements.txt + the kernel package); ${SERVER_VENV_ENV}=PATH names another")
    cfg = venv / "pyvenv.cfg"
    version = re.search(r"^version(?:_info)?\s*=\s*(\d+\.\d+)", cfg.read_text(), re.M) if cfg.is_file() else None
    if version and version.group(1) != python_version_tag():
        raise TritonStartError(
            f"the server virtualenv {venv} is Python {version.group(1)}, the launcher {python_version_tag()}: "
            f"the stub is the one for the launcher's Python; rebuild it (rm -rf {venv}; make server-venv)")
    return venv / "bin"


def server_env(extra: dict[str, str] | None = None, python_bin: Path | str | None = None) -> dict[str, str]:
    """Environment for the embedded server, so its Python stubs run the server virtualenv.

    * PATH starts with `python_bin` (default `server_python_bin()`): the stub builds `sys.path`
      from the first `python3` on PATH (it ignores PYTHONPATH), so models import that venv's
      packages, the kernel and the backends' libraries only.
    * LD_LIBRARY_PATH starts with this interpreter's libpython directory: the stub links
      `libpythonX.Y.so.1.0`; without it the system's copy (another patch release, or none)
      is loaded. Then the wheel's `nvidia_pytriton.libs` (as pytriton does): the python
      backend library and stub in the assembled directory find libtritonserver and
      libcudart there, their `$ORIGIN`-relative RPATH pointing nowhere from that place.
    """
    env = dict(os.environ)
    _prepend(env, "PATH", str(python_bin if python_bin is not None else server_python_bin()))
    _prepend(env, "LD_LIBRARY_PATH", str(wheel_libs_dir()))
    libdir = python_libdir()
    if libdir is not None:
        _prepend(env, "LD_LIBRARY_PATH", str(libdir))
    env.pop("PYTHONPATH", None)  # nothing of the launcher's world on the server's path
    env.update(extra or {})
    return env


def resolve_access(admin_key: str | None = None, api_key: str | None = None, restrict_admin: bool = True) -> Access:
    """The launcher's default `Access`: `admin_key`, else the configured one (created if none: see
    `credentials.configured_admin_key`), unless `restrict_admin` is False; `api_key` as given
    (None: inference open)."""
    admin = (admin_key or configured_admin_key(create=True)) if restrict_admin else None
    return Access(admin_key=admin, api_key=api_key or None)


# --------------------------------------------------------------------------- shared client side


_KNOWN_STARTUP_ABORT = "boost::interprocess::lock_exception"
TRITON_EXIT_TIMEOUT_S = 30.0  # tritonserver's --exit-timeout-secs default
STOP_GRACE_S = 15.0  # stop() waits this much beyond the server's exit timeout before a SIGKILL
_EXIT_TIMEOUT_EXPIRED = "Exit timeout expired"
REPOSITORY_CALL_TIMEOUT_S = 300.0  # a load answers once the model is loaded (a text encoder: seconds)
START_ATTEMPTS = 3
# tritonserver 2.51 exits when its HTTP or gRPC port is taken, but only logs a taken metrics port
_PORT_IN_USE = re.compile(r"failed to start \w+ service: .*Socket '[^']*:(\d+)' already in use")


def _this_run(log_path: Path) -> str:
    """The part of a log appended by the latest start (ManagedProcess writes a `=== ` line)."""
    return tail(log_path, 5000).rsplit("\n=== ", 1)[-1]


# What tritonserver counts down for on shutdown, once a second ("Timeout 12: Found 1 HTTP service
# connections"), and why each may never reach 0 in 2.51.
_SHUTDOWN_WAIT = re.compile(r"Timeout \d+: Found (\d+) (HTTP service connections|live models|"
                            r"model versions that have in-flight inferences)")
_SHUTDOWN_WAIT_CAUSES = {
    "HTTP service connections": "a client kept its HTTP connection open",
    "live models": "models still unloading (slow on a busy host), or a Python-based model whose load failed, "
                   "or whose stub died while serving, which is never freed",
    "model versions that have in-flight inferences": "requests still running",
}


def _shutdown_waits(log_text: str) -> str:
    """What a shutdown that ran out its exit timeout waited for (what it counted down for over
    more than one tick; the stages after it get no time and report once), with the likely cause."""
    ticks: dict[str, int] = {}
    last: dict[str, int] = {}
    for count, kind in _SHUTDOWN_WAIT.findall(log_text):
        last[kind] = int(count)
        ticks[kind] = ticks.get(kind, 0) + (int(count) > 0)
    waited = [k for k, n in ticks.items() if n > 1] or [k for k, n in last.items() if n > 0]
    return "; ".join(f"{last[k]} {k} ({_SHUTDOWN_WAIT_CAUSES[k]})" for k in waited) or "something the log does not name"


def _ports_in_use(log_text: str) -> list[int]:
    """Ports that tritonserver reported as already in use."""
    return sorted({int(port) for port in _PORT_IN_USE.findall(log_text)})


# A Python stub that ends before it reaches the server (the loader cannot find its libpython; bash
# cannot run it) leaves its model loading for ever: tritonserver 2.51 logs nothing more and never
# gets ready (docs/reliability.md#a-stub-that-cannot-start). The loader's line or the backend's own.
_STUB_START_FAILURE = re.compile(r"^.*(?:error while loading shared libraries: |Failed to run python backend stub).*$", re.M)
_MISSING_LIBPYTHON = re.compile(r"\b(libpython\d+\.\d+)\.so\.1\.0: cannot open shared object file")


def _stub_start_failure(log_text: str) -> str | None:
    """Why a Python stub could not start, from the server's log (None: no such line)."""
    found = _STUB_START_FAILURE.search(log_text)
    if found is None:
        return None
    reason = f"a Python backend stub cannot start: {found.group(0).strip()}"
    library = _MISSING_LIBPYTHON.search(found.group(0))
    if library:
        reason += (f" (the stub links the shared library of the Python that made the server virtualenv; "
                   f"Debian: apt-get install {library.group(1)})")
    return reason


def python_stub_pids(server_pid: int) -> dict[str, list[int]]:
    """{model name: [pid, ...]} of the Python stubs whose parent is `server_pid` (Linux /proc)."""
    return {model: list(stubs) for model, stubs in python_stubs(server_pid).items()}


def python_stubs(server_pid: int) -> dict[str, dict[int, str]]:
    """{model name: {pid: shared-memory region}} of the Python stubs whose parent is `server_pid`
    (Linux /proc). A stub's argv[1] is `<repository>/<model>/<version>/model.py`, argv[2] the name
    of the /dev/shm region its model instance owns: the server removes it with the instance."""
    stubs: dict[str, dict[int, str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == server_pid and len(argv) > 1 and argv[0].endswith(b"triton_python_backend_stub"):
            region = argv[2].decode() if len(argv) > 2 else ""
            stubs.setdefault(Path(argv[1].decode()).parent.parent.name, {})[int(proc.name)] = region
    return stubs


def _fill_ports(host: str, *ports: int | None) -> list[int]:
    """The given ports, with each None replaced by a distinct free port on `host`."""
    free = iter(free_ports(sum(p is None for p in ports), "127.0.0.1" if host in ("0.0.0.0", "") else host))
    return [p if p is not None else next(free) for p in ports]


class _Endpoints:
    """URLs, readiness checks and context-manager protocol shared by both runtimes."""

    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    access: Access = Access()

    def start(self) -> Any:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def stop(self, timeout: float = 30.0) -> None:  # pragma: no cover
        raise NotImplementedError

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def _connect_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def http_url(self) -> str:
        """host:port, as tritonclient.http expects."""
        return f"{self._connect_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._connect_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._connect_host}:{self.metrics_port}/metrics"

    def _status(self, path: str, method: str = "GET", timeout: float = 2.0) -> int | None:
        return http_status(f"http://{self.http_url}{path}", method=method, headers=self.access.headers(),
                           timeout=timeout)

    def is_ready(self) -> bool:
        return self._status("/v2/health/ready") == 200

    def model_ready(self, name: str, version: str | int | None = None) -> bool:
        version_part = f"/versions/{version}" if version is not None else ""
        return self._status(f"/v2/models/{name}{version_part}/ready") == 200

    def wait_ready_models(self, names: Iterable[str], timeout: float = 60.0) -> None:
        """Wait until `/v2/models/<name>/ready` is 200 for every name; TimeoutError names the rest."""
        pending = list(names)

        def all_ready() -> bool:
            pending[:] = [n for n in pending if not self.model_ready(n)]
            return not pending

        if not wait_for(all_ready, timeout, interval=0.25):
            raise TimeoutError(f"models not ready after {timeout:.0f}s: {', '.join(pending)}")

    def model_index(self) -> list[dict]:
        """The repository index (name, version, state) from `POST /v2/repository/index`."""
        request = urllib.request.Request(f"http://{self.http_url}/v2/repository/index", data=b"{}", method="POST",
                                         headers=self.access.headers())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"[]")

    def reload_model(self, name: str) -> bool:
        """Ask the server to (re)load a model (model-control mode explicit), e.g. after its stub died."""
        # the answer comes once the load is done: a client timeout shorter than the load made callers
        # (the stub watchdog) load again while the first load was still under way
        return self._status(f"/v2/repository/models/{name}/load", method="POST",
                            timeout=REPOSITORY_CALL_TIMEOUT_S) == 200

    def unload_model(self, name: str) -> bool:
        """Ask the server to unload a model (model-control mode explicit)."""
        return self._status(f"/v2/repository/models/{name}/unload", method="POST",
                            timeout=REPOSITORY_CALL_TIMEOUT_S) == 200


# --------------------------------------------------------------------------- embedded server


class TritonServer(_Endpoints):
    """The wheel's tritonserver as a supervised child process (its own process group).

    `model_repository`: one folder or several served together (default: the project's
    `model_repository` and `model_repository_test`); `model_repository` is the first.
    Ports left None are free ports on `host`, fixed for the object's life (restarts reuse
    them). `cache_size_bytes` sizes Triton's local response cache (None: no cache).
    `model_control_mode` "explicit" (default; `load_models`, default "*": every model, and the
    repository API can unload and load them, which `stub_watchdog` needs) | "none" | "poll".
    The log (stdout and stderr, appended across restarts) is `log_file`, by default
    `log_dir/tritonserver-<time>-<HTTP port>.log`.
    `restart_on_death`: a death not caused by `stop()` is appended to `deaths`, passed to
    `on_death`, and followed by a restart on the same ports, at most `max_restarts` times,
    after `restart_backoff` seconds doubled for each death within 30 s of its start.
    `die_with_parent`: the kernel SIGTERMs the server if the thread that started it ends
    (the main thread, usually), so a killed test run leaves no server behind.
    Access (`pattern_kernel.access`): the admin APIs need `admin_key` (default: the configured admin
    key, created on first use) unless `restrict_admin_apis` is False; with `api_key`,
    inference needs it too. `grpc_tls` serves gRPC over TLS.
    The Python stubs run the `python3` of `server_venv` (default `server_venv()`: the checkout's
    `.venv-server`, `make server-venv`), where only the kernel package is of the project.
    `trace` (a `TraceConfig` or its text, e.g. "rate=1000"): request tracing; by default off, in
    triton mode with a file beside the log (`trace_file`), so the trace API can turn it on per
    model (`triton-patterns trace`).
    """

    def __init__(
        self,
        *,
        model_repository: Repositories = paths.MODEL_REPOSITORIES,
        project_backends: Path | str = paths.BACKENDS,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        host: str = "127.0.0.1",
        cache_size_bytes: int | None = DEFAULT_CACHE_SIZE_BYTES,
        model_control_mode: str = "explicit",
        load_models: Iterable[str] | None = None,
        repository_poll_secs: int = 5,
        exit_on_error: bool = True,
        startup_timeout: float = 180.0,
        log_verbose: int = 0,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        log_dir: Path | str | None = None,
        log_file: Path | str | None = None,
        backend_directory: Path | str | None = None,
        restart_on_death: bool = False,
        max_restarts: int = 5,
        restart_backoff: float = 1.0,
        on_death: Callable[[ServerDied], None] | None = None,
        die_with_parent: bool = True,
        admin_key: str | None = None,
        api_key: str | None = None,
        restrict_admin_apis: bool = True,
        grpc_tls: GrpcTls | None = None,
        server_venv: Path | str | None = None,
        trace: TraceConfig | str | None = None,
    ):
        self.model_repositories = repository_list(model_repository)  # served together, in this order
        self.model_repository = self.model_repositories[0]
        self.server_venv = Path(server_venv) if server_venv is not None else None  # None: server_venv()
        self.project_backends = Path(project_backends).resolve()
        self.host = host
        self.http_port, self.grpc_port, self.metrics_port = _fill_ports(host, http_port, grpc_port, metrics_port)
        # the ports this object chose (not the caller): those may be replaced if taken at start
        self._chosen_ports = {name: getattr(self, name) for name, given in
                              (("http_port", http_port), ("grpc_port", grpc_port), ("metrics_port", metrics_port))
                              if given is None}
        self.cache_size_bytes = cache_size_bytes
        self.load_models = list(load_models) if load_models is not None else None
        self.access = resolve_access(admin_key, api_key, restrict_admin_apis)
        self.grpc_tls = grpc_tls
        self.model_control_mode = model_control_mode
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = Path(log_file) if log_file else \
            Path(log_dir or paths.BUILD / "logs") / f"tritonserver-{stamp}-{self.http_port}.log"
        trace = TraceConfig.parse(trace) if isinstance(trace, str) else trace or TraceConfig()
        trace = trace.with_defaults(file=str(self.log_path.with_name(f"trace-{stamp}-{self.http_port}.json")))
        self.trace = dataclasses.replace(trace, file=str(Path(trace.file).absolute()))  # the server runs in log_dir
        self.flags = common_server_flags(
            model_control_mode=model_control_mode,
            load_models=load_models,
            repository_poll_secs=repository_poll_secs,
            cache_size_bytes=cache_size_bytes,
            log_verbose=log_verbose,
            exit_on_error=exit_on_error,
            access=self.access,
            grpc_tls=grpc_tls,
            trace=self.trace,
        )
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.backend_directory = Path(backend_directory) if backend_directory else self._default_backend_directory()
        # the python backend names its /dev/shm regions <prefix><uuid>: ours, to clean after a crash
        self.shm_prefix = f"triton_patterns_{os.getpid()}_{self.http_port}_"
        self.restart_on_death = restart_on_death
        self.max_restarts = max_restarts
        self.restart_backoff = restart_backoff
        self.on_death = on_death
        self.die_with_parent = die_with_parent

        self.deaths: list[ServerDied] = []
        self.restarts = 0
        self._restart_policy = RestartPolicy(max_restarts, restart_backoff)
        self._pending_models: list[str] = []
        self._proc: ManagedProcess | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._given_up = threading.Event()
        self._supervisor: threading.Thread | None = None

    def _default_backend_directory(self) -> Path:
        """build/backends-pyX.Y for the project's own backends, else a private temporary dir."""
        if self.project_backends == paths.BACKENDS.resolve():
            return paths.BUILD / f"backends-py{python_version_tag()}"
        tmp = Path(tempfile.mkdtemp(prefix="triton-backends-"))
        weakref.finalize(self, shutil.rmtree, tmp, True)
        return tmp

    # -- what is run

    def command(self) -> list[str]:
        """The tritonserver command line (nothing is started)."""
        return [
            str(wheel_dir() / "bin" / "tritonserver"),
            *(f"--model-repository={r}" for r in self.model_repositories),
            f"--backend-directory={self.backend_directory}",
            f"--cache-directory={wheel_dir() / 'caches'}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *self.flags,
            *self.extra_args,
        ]

    @property
    def stub_python(self) -> Path:
        """The `python3` whose world the Python stubs run (`server_python_bin`; raises if absent)."""
        return server_python_bin(self.server_venv) / "python3"

    def environment(self) -> dict[str, str]:
        return server_env(self.extra_env, self.stub_python.parent)

    # -- lifecycle

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc else None

    def stub_pids(self) -> dict[str, list[int]]:
        """The Python backend stub processes of the running server: {model name: [pid, ...]},
        one per model instance (from /proc: children of tritonserver named *_backend_stub)."""
        return python_stub_pids(self.pid) if self.pid else {}

    def stubs(self) -> dict[str, dict[int, str]]:
        """{model name: {stub pid: its instance's /dev/shm region}} (`python_stubs`)."""
        return python_stubs(self.pid) if self.pid else {}

    @property
    def gave_up(self) -> bool:
        """True once the server died and will not be restarted (no restart, or limit reached)."""
        return self._given_up.is_set()

    def is_running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.is_running()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_path, lines)

    def start(self) -> TritonServer:
        """Start the server and wait for /v2/health/ready; TritonStartError (with log tail) if not."""
        if self.is_running():
            raise RuntimeError(f"tritonserver already running (pid {self.pid})")
        for repository in self.model_repositories:
            if not repository.is_dir():
                raise TritonStartError(f"model repository {repository} does not exist")
        assemble_backend_directory(self.backend_directory, self.project_backends)
        LOG.info("tritonserver's Python stubs run %s", self.stub_python)
        self._stopping.clear()
        self._given_up.clear()
        for attempt in range(1, START_ATTEMPTS + 1):
            with self._lock:
                self._proc = self._spawn()
            proc = self._proc
            started = time.monotonic()
            ready = self._wait_ready(proc)
            taken = _ports_in_use(_this_run(self.log_path))
            if ready and not taken:
                break
            reason = (f"port {', '.join(map(str, taken))} already in use" if taken
                      else self._not_ready_reason(proc, time.monotonic() - started))
            proc.terminate(timeout=10)
            self._clean_up_after(proc)
            retry = self._retry_reason(proc, taken) if attempt < START_ATTEMPTS else None
            if retry is None:
                raise TritonStartError(self._start_error_message(reason, proc))
            LOG.warning("tritonserver start %d of %d failed (%s): starting it again", attempt, START_ATTEMPTS, retry)
        LOG.info("tritonserver pid %s ready in %.1fs at %s", proc.pid, time.monotonic() - started, self.http_url)
        self._supervisor = threading.Thread(target=self._supervise, name=f"triton-supervisor-{self.http_port}", daemon=True)
        self._supervisor.start()
        return self

    def _retry_reason(self, proc: ManagedProcess, taken: list[int]) -> str | None:
        """Why a failed start is worth another try, or None. Two causes are not the server's
        fault: a port chosen free that another process bound before tritonserver did (new free
        ports are chosen, only for the ports this object chose), and the python backend's
        shared-memory mutex aborting the server while stubs start (intermittent, server #8882)."""
        if taken and all(port in self._chosen_ports.values() for port in taken):
            for name, port in self._chosen_ports.items():
                if port in taken:
                    self._chosen_ports[name] = free_port(self._connect_host)
                    setattr(self, name, self._chosen_ports[name])
            return f"port {', '.join(map(str, taken))} taken by another process: new free ports"
        if not taken and _KNOWN_STARTUP_ABORT in proc.log_tail(LOG_TAIL_LINES):
            return _KNOWN_STARTUP_ABORT
        return None

    @property
    def exit_timeout_s(self) -> float:
        """tritonserver's `--exit-timeout-secs` (from `extra_args`; Triton's default 30)."""
        value = None
        for flag, following in zip(self.extra_args, self.extra_args[1:] + [""]):
            if flag.startswith("--exit-timeout-secs="):
                value = flag.split("=", 1)[1]
            elif flag == "--exit-timeout-secs":
                value = following
        return float(value) if value is not None else TRITON_EXIT_TIMEOUT_S

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM the server this object started and wait for it; SIGKILL its process group only
        after `timeout` seconds (default: the server's own exit timeout plus STOP_GRACE_S). Returns
        its exit code (negative: the signal that ended it; None if it was never started).

        On SIGTERM tritonserver waits up to its exit timeout for in-flight requests and then for
        every model to unload. In 2.51 some models never do: a Python-based model whose load
        through the repository API failed (e.g. model-analyzer's KIND_GPU variant on a CPU-only
        host, a config override the backend refuses), or one that served a request after its stub
        died. The server then logs "Found 1 live models" until the exit timeout and exits by
        itself (exit code 1); waiting less than that (the former fixed 30 s, equal to Triton's
        default) meant a SIGKILL. Such a wait is logged with that reason."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        returncode = None
        if proc is not None:
            returncode = proc.terminate(self.exit_timeout_s + STOP_GRACE_S if timeout is None else timeout)
            self._clean_up_after(proc)
            log = _this_run(self.log_path)
            if _EXIT_TIMEOUT_EXPIRED in log:
                LOG.warning("tritonserver pid %s waited its whole exit timeout (%.0fs) for %s; see %s",
                            proc.pid, self.exit_timeout_s, _shutdown_waits(log), self.log_path)
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(timeout=10)
        self._supervisor = None
        return returncode

    def _clean_up_after(self, proc: ManagedProcess) -> None:
        """Once `proc` has exited: kill what is left of its process group, unlink its /dev/shm regions."""
        proc.kill_leftovers()
        if not proc.is_running():
            for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
                region.unlink(missing_ok=True)

    def _spawn(self) -> ManagedProcess:
        # run in the log folder: the stubs' sys.path gets the working directory, which must not be the checkout
        return ManagedProcess(self.command(), self.log_path, env=self.environment(), cwd=self.log_path.parent,
                              die_with_parent=self.die_with_parent)

    def start_models(self) -> list[str]:
        """The models this server loads at start, which `start()` waits for: `load_models` in
        explicit mode, else (or with "*") every model folder of the repository."""
        if self.model_control_mode == "explicit" and self.load_models is not None and "*" not in self.load_models:
            return list(self.load_models)
        return repository_models(self.model_repositories)

    def _models_ready(self, pending: list[str]) -> bool:
        """Drops the ready ones from `pending` (every version READY in the repository index: one
        request; the launcher holds the admin key; else each model's readiness); True once empty."""
        try:
            states: dict[str, set[str]] = {}
            for entry in self.model_index():
                states.setdefault(entry.get("name", ""), set()).add(entry.get("state", ""))
            pending[:] = [name for name in pending if states.get(name) != {"READY"}]
        except (OSError, ValueError):
            pending[:] = [name for name in pending if not self.model_ready(name)]
        return not pending

    def _wait_ready(self, proc: ManagedProcess) -> bool:
        """Ready: the server ready, every model it loads at start ready (the server's readiness is
        not strict: one model's reload must not take the whole server out of a load balancer, so
        the start waits for the models one by one) and the metrics endpoint answering. Gives up at
        once when the process exits (a model that fails to load stops it: exit_on_error), stop()
        is called, or the log says a port is taken or a Python stub cannot start."""
        self._pending_models = self.start_models()

        def hopeless() -> bool:
            if not proc.is_running() or self._stopping.is_set():
                return True
            run = _this_run(self.log_path)
            return bool(_ports_in_use(run) or _stub_start_failure(run))

        return wait_for(
            lambda: (proc.is_running() and self.is_ready() and self._models_ready(self._pending_models)
                     and http_status(self.metrics_url) == 200),
            self.startup_timeout,
            interval=0.2,
            abort=hopeless,
        )

    def _not_ready_reason(self, proc: ManagedProcess, waited: float) -> str:
        if not proc.is_running():
            return f"tritonserver exited during startup ({describe_returncode(proc.returncode)})"
        if self._stopping.is_set():
            return "tritonserver start interrupted by stop()"
        stub_failure = _stub_start_failure(_this_run(self.log_path))
        if stub_failure:
            return stub_failure
        models = f"; models not ready: {', '.join(self._pending_models)}" if self._pending_models else ""
        return f"tritonserver not ready after {waited:.0f}s (startup_timeout={self.startup_timeout:.0f}s){models}"

    def _start_error_message(self, reason: str, proc: ManagedProcess) -> str:
        """Reason, the run's error lines (a bad flag's is followed by 100 lines of usage), log tail;
        for a stub that cannot start, whose reason is the whole story, the log's path only."""
        run = _this_run(self.log_path)
        errors = [line for line in run.splitlines() if _ERROR_LINE.search(line) and not _HARMLESS_ON_CPU.search(line)][:10]
        parts = [f"{reason} (ports: HTTP {self.http_port}, gRPC {self.grpc_port}, metrics {self.metrics_port}; "
                 f"pid {proc.pid}, {describe_returncode(proc.returncode)})"]
        if _stub_start_failure(run):
            return "\n".join([*parts, f"log: {self.log_path}"])
        if errors:
            parts.append("errors:\n" + "\n".join(errors))
        parts.append(f"last lines of {self.log_path}:\n{proc.log_tail(LOG_TAIL_LINES)}")
        return "\n".join(parts)

    # -- supervision

    def _supervise(self) -> None:
        """Wait on the current process; report deaths not caused by stop(); restart if asked."""
        while True:
            proc = self._proc
            assert proc is not None
            proc.wait()
            if self._stopping.is_set():
                return
            self._clean_up_after(proc)  # Python stubs and shared memory orphaned by a crash
            self._report(proc)
            if not self.deaths[-1].restarting:
                self._given_up.set()
                return
            if self._stopping.wait(self._backoff(proc.uptime())):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.restarts += 1
                self._proc = self._spawn()
            proc = self._proc
            started = time.monotonic()
            if self._wait_ready(proc):
                LOG.warning("tritonserver restarted (restart %d), pid %s ready", self.restarts, proc.pid)
            elif proc.is_running() and not self._stopping.is_set():
                # hung (a stub that cannot start, a port taken, no readiness in time): ended, so that
                # the next proc.wait() reports it as a death instead of waiting on it for ever
                LOG.error("tritonserver restart %d (pid %s) failed: %s; stopping it", self.restarts, proc.pid,
                          self._not_ready_reason(proc, time.monotonic() - started))
                proc.terminate(timeout=10)
            # not ready and exited: the next proc.wait() returns at once and reports it

    def _report(self, proc: ManagedProcess) -> None:
        returncode = proc.returncode
        died = ServerDied(
            pid=proc.pid,
            returncode=returncode,
            uptime_s=proc.uptime(),
            log_tail=proc.log_tail(LOG_TAIL_LINES),
            restarting=self.restart_on_death and self.restarts < self.max_restarts,
        )
        self.deaths.append(died)
        LOG.error("%s; last lines of %s:\n%s", died, self.log_path, died.log_tail)
        if self.on_death is not None:
            try:
                self.on_death(died)
            except Exception:  # a faulty callback must not stop supervision
                LOG.exception("on_death callback failed")

    def _backoff(self, uptime: float) -> float:
        """restart_backoff, doubled for each consecutive death soon after a start (`RestartPolicy`)."""
        return self._restart_policy.next_backoff(uptime)


# --------------------------------------------------------------------------- docker mode

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
    except Exception as err:  # DockerException, connection errors, timeouts
        return False, f"no Docker engine reachable: {type(err).__name__}: {err}"


class DockerTritonServer(_Endpoints):
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
        self.http_port, self.grpc_port, self.metrics_port = _fill_ports(host, http_port, grpc_port, metrics_port)
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
            raise TritonStartError(f"container {self.spec['name']} ({self.spec['image']}) {state}; last lines:\n{tail_text}")
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
