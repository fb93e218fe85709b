"""Start, stop and supervise the embedded Triton Inference Server.

`TritonServer` runs the tritonserver 2.51 binary of the `nvidia-pytriton` wheel as a child process
(its own process group), as its `ServerSettings` say: a backend directory assembled from the
wheel's `python` backend, the stub for the running Python and the project's `backends/*`
(`backend_folder`); the stubs run the server virtualenv's `python3` (`server_env`). `start()`
waits until the server and every model it loads are ready, and says why not from the log
(`triton_log`). A daemon thread watches the process; a death not asked for by `stop()` is
reported (exit code or signal, log tail) and, with `restart_on_death`, the server is restarted on
the same ports.

The admin APIs (model repository, shared memory, logging, trace) need the admin key by default, and
inference too when given an API key (`pattern_kernel.access`); the server's own calls send the keys
(`endpoints`). The same interface in a container: `docker_server.DockerTritonServer`.
`triton-patterns serve` (`make serve`) runs it with Redis and the gateway: `pattern_runtime.service`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path

from pattern_kernel.server_command import common_server_flags
from pattern_kernel.trace_config import TraceConfig
from pattern_runtime import paths
from pattern_runtime.backend_folder import assemble_backend_directory
from pattern_runtime.endpoints import Endpoints, fill_ports, resolve_access
from pattern_runtime.processes import ManagedProcess, describe_returncode, free_port, http_status, tail, wait_for
from pattern_runtime.serve_models import repository_list, repository_models
from pattern_runtime.server_env import TritonStartError, python_version_tag, server_env, server_python_bin, wheel_dir
from pattern_runtime.server_settings import ServerSettings
from pattern_runtime.stub_watchdog import python_stub_pids, python_stubs
from pattern_runtime.supervision import RestartPolicy, ServerDied
from pattern_runtime.triton_log import (
    EXIT_TIMEOUT_EXPIRED,
    KNOWN_STARTUP_ABORT,
    LOG_TAIL_LINES,
    ports_in_use,
    shutdown_waits,
    start_error_message,
    stub_start_failure,
    this_run,
)

LOG = logging.getLogger(__name__)

TRITON_EXIT_TIMEOUT_S = 30.0  # tritonserver's --exit-timeout-secs default
STOP_GRACE_S = 15.0  # stop() waits this much beyond the server's exit timeout before a SIGKILL
START_ATTEMPTS = 3


class TritonServer(Endpoints):
    """The wheel's tritonserver as a supervised child process, run as `settings` say (default
    `ServerSettings()`: the checkout's repository, free ports of 127.0.0.1, every model).

    The ports `settings` leave None are chosen at construction and fixed for the object's life
    (restarts reuse them). `deaths` lists the deaths not caused by `stop()`, `restarts` counts the
    restarts; `gave_up` says the server died and will not be restarted. `extra_env` (from
    `settings.env`) is added to the server's environment at each (re)start.
    """

    def __init__(self, settings: ServerSettings | None = None):
        self.settings = settings = settings if settings is not None else ServerSettings()
        self.model_repositories = repository_list(settings.model_repository)  # served together, in this order
        self.model_repository = self.model_repositories[0]
        self.project_backends = Path(settings.project_backends).resolve()
        self.host = settings.host
        given = {"http_port": settings.http_port, "grpc_port": settings.grpc_port,
                 "metrics_port": settings.metrics_port}
        self.http_port, self.grpc_port, self.metrics_port = fill_ports(self.host, *given.values())
        # the ports this object chose (not the caller): those may be replaced if taken at start
        self._chosen_ports = {name: getattr(self, name) for name, port in given.items() if port is None}
        self.access = resolve_access(settings.admin_key, settings.api_key, settings.restrict_admin_apis)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = Path(settings.log_file) if settings.log_file else \
            Path(settings.log_dir or paths.BUILD / "logs") / f"tritonserver-{stamp}-{self.http_port}.log"
        trace = (settings.trace or TraceConfig()).with_defaults(
            file=str(self.log_path.with_name(f"trace-{stamp}-{self.http_port}.json")))
        self.trace = dataclasses.replace(trace, file=str(Path(trace.file).absolute()))  # the server runs in log_dir
        self.flags = common_server_flags(
            model_control_mode=settings.model_control_mode,
            load_models=settings.load_models,
            repository_poll_secs=settings.repository_poll_secs,
            cache_size_bytes=settings.cache_size_bytes,
            log_verbose=settings.log_verbose,
            exit_on_error=settings.exit_on_error,
            access=self.access,
            grpc_tls=settings.grpc_tls,
            trace=self.trace,
        )
        self.backend_directory = Path(settings.backend_directory) if settings.backend_directory \
            else self._default_backend_directory()
        # the python backend names its /dev/shm regions <prefix><uuid>: ours, to clean after a crash
        self.shm_prefix = f"triton_patterns_{os.getpid()}_{self.http_port}_"
        self.extra_env = dict(settings.env)

        self.deaths: list[ServerDied] = []
        self.restarts = 0
        self._restart_policy = RestartPolicy(settings.max_restarts, settings.restart_backoff)
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
            *self.settings.extra_args,
        ]

    @property
    def stub_python(self) -> Path:
        """The `python3` whose world the Python stubs run (`server_python_bin`; raises if absent)."""
        return server_python_bin(self.settings.server_venv) / "python3"

    def environment(self) -> dict[str, str]:
        return server_env(self.extra_env, self.stub_python.parent)

    @property
    def exit_timeout_s(self) -> float:
        """tritonserver's `--exit-timeout-secs` (from `extra_args`; Triton's default 30)."""
        value = None
        args = list(self.settings.extra_args)
        for flag, following in itertools.pairwise([*args, ""]):  # each flag and the word after it
            if flag.startswith("--exit-timeout-secs="):
                value = flag.split("=", 1)[1]
            elif flag == "--exit-timeout-secs":
                value = following
        return float(value) if value is not None else TRITON_EXIT_TIMEOUT_S

    def start_models(self) -> list[str]:
        """The models this server loads at start, which `start()` waits for: `load_models` in
        explicit mode, else (or with "*") every model folder of the repository."""
        load_models = self.settings.load_models
        if self.settings.model_control_mode == "explicit" and load_models is not None and "*" not in load_models:
            return list(load_models)
        return repository_models(self.model_repositories)

    # -- state

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

    # -- start

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
            taken = ports_in_use(this_run(self.log_path))
            if ready and not taken:
                break
            reason = (f"port {', '.join(map(str, taken))} already in use" if taken
                      else self._not_ready_reason(proc, time.monotonic() - started))
            proc.terminate(timeout=10)
            self._clean_up_after(proc)
            retry = self._retry_reason(proc, taken) if attempt < START_ATTEMPTS else None
            if retry is None:
                ports = f"HTTP {self.http_port}, gRPC {self.grpc_port}, metrics {self.metrics_port}"
                raise TritonStartError(start_error_message(reason, proc, self.log_path, ports))
            LOG.warning("tritonserver start %d of %d failed (%s): starting it again", attempt, START_ATTEMPTS, retry)
        LOG.info("tritonserver pid %s ready in %.1fs at %s", proc.pid, time.monotonic() - started, self.http_url)
        self._supervisor = threading.Thread(target=self._supervise, name=f"triton-supervisor-{self.http_port}",
                                            daemon=True)
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
        if not taken and KNOWN_STARTUP_ABORT in proc.log_tail(LOG_TAIL_LINES):
            return KNOWN_STARTUP_ABORT
        return None

    # -- stop

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
            log = this_run(self.log_path)
            if EXIT_TIMEOUT_EXPIRED in log:
                LOG.warning("tritonserver pid %s waited its whole exit timeout (%.0fs) for %s; see %s",
                            proc.pid, self.exit_timeout_s, shutdown_waits(log), self.log_path)
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
                              die_with_parent=self.settings.die_with_parent)

    # -- readiness

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
            run = this_run(self.log_path)
            return bool(ports_in_use(run) or stub_start_failure(run))

        return wait_for(
            lambda: (proc.is_running() and self.is_ready() and self.models_ready(self._pending_models)
                     and http_status(self.metrics_url) == 200),
            self.settings.startup_timeout,
            interval=0.2,
            abort=hopeless,
        )

    def _not_ready_reason(self, proc: ManagedProcess, waited: float) -> str:
        if not proc.is_running():
            return f"tritonserver exited during startup ({describe_returncode(proc.returncode)})"
        if self._stopping.is_set():
            return "tritonserver start interrupted by stop()"
        stub_failure = stub_start_failure(this_run(self.log_path))
        if stub_failure:
            return stub_failure
        models = f"; models not ready: {', '.join(self._pending_models)}" if self._pending_models else ""
        return (f"tritonserver not ready after {waited:.0f}s "
                f"(startup_timeout={self.settings.startup_timeout:.0f}s){models}")

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
            if self._stopping.wait(self._restart_policy.next_backoff(proc.uptime())):
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
            restarting=self.settings.restart_on_death and self.restarts < self.settings.max_restarts,
        )
        self.deaths.append(died)
        LOG.error("%s; last lines of %s:\n%s", died, self.log_path, died.log_tail)
        if self.settings.on_death is not None:
            try:
                self.settings.on_death(died)
            except Exception:  # a faulty callback must not stop supervision
                LOG.exception("on_death callback failed")
