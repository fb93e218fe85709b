"""`triton-patterns serve` as a service: its parts started in order, watched from one loop, stopped
in the reverse order, every log in one lasting, size-capped folder.

Start: the local servers it is given (Redis, started by `services.serve_services`) -> tritonserver
(behind the gateway: on 127.0.0.1, free ports) -> the gateway (nginx). Then the main thread loops:
it polls a `Supervisor` of the gateway and the local servers (a death is logged with its log tail
and the server started again on its ports), checks tritonserver's own supervisor, and rotates the
logs (`LogRotation`) once one is over its size. A part given up ends the loop with exit status 1.

Stop (SIGINT/SIGTERM, or a part given up), in this order:
1. the gateway, gracefully (SIGQUIT): it stops listening, closes its idle keep-alive connections to
   clients and to tritonserver at once, and exits when the requests in flight are answered (at most
   the template's `worker_shutdown_timeout` later);
2. tritonserver (SIGTERM): with no connection of the gateway's left it does not wait for
   connections; its exit timeout (`exit_timeout_s`, 5 s here against Triton's 30) cuts what a
   direct client keeps open or still runs, and the models still unloading; SIGKILL of its group
   TRITON_KILL_AFTER_S later;
3. the local servers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pattern_kernel.access import API_KEY_ENV
from pattern_runtime.admin_key import configured_admin_key
from pattern_runtime.gateway import Gateway, is_loopback
from pattern_runtime.launcher import TritonServer
from pattern_runtime.logrotation import LogRotation
from pattern_runtime.processes import LocalServer
from pattern_runtime.serve_banner import gateway_notes, log_note, print_banner
from pattern_runtime.server_settings import ServerSettings
from pattern_runtime.services import default_state_dir
from pattern_runtime.stub_watchdog import StubWatchdog
from pattern_runtime.supervision import Supervisor

LOG = logging.getLogger(__name__)

POLL_S = 0.25  # the main loop's period: supervision and the log sizes
SERVE_EXIT_TIMEOUT_S = 5  # tritonserver's --exit-timeout-secs under serve (Triton's default: 30)
GATEWAY_STOP_TIMEOUT_S = 15.0  # beyond the template's worker_shutdown_timeout (5 s): then SIGKILL
# tritonserver past its exit timeout has said "Exiting immediately" but may unload models for seconds more
TRITON_KILL_AFTER_S = 2.0
DEFAULT_MAX_RESTARTS = 20
DEFAULT_LOG_MAX_BYTES = 10 * 2**20
DEFAULT_LOG_KEEP = 5


def default_log_dir() -> Path:
    return default_state_dir() / "logs"


def serve(settings: ServerSettings | None = None, *, gateway: dict[str, Any] | None = None,
          servers: Sequence[LocalServer] = (), notes: Sequence[str] = (), log_dir: Path | str | None = None,
          log_max_bytes: int = DEFAULT_LOG_MAX_BYTES, log_keep: int = DEFAULT_LOG_KEEP,
          max_restarts: int = DEFAULT_MAX_RESTARTS, exit_timeout_s: int = SERVE_EXIT_TIMEOUT_S) -> int:
    """Run tritonserver as `settings` say (serve sets its log file, restarts, exit timeout and, behind
    the gateway, its address; an API key from $TRITON_PATTERNS_API_KEY when the settings have none),
    behind the gateway when `gateway` is given
    (`Gateway` keyword arguments: host, http_port, grpc_port, tls, rate, ...), with the started
    `servers` supervised beside it, until SIGINT/SIGTERM. Returns 0 after a requested stop, 1 once a
    part was given up. A failed first start raises (TritonStartError, GatewayStartError, ...).

    Every log goes to `log_dir` (default `default_log_dir()`): tritonserver.log, nginx-access.log,
    nginx-error.log, and the servers' own when they log there; with `log_max_bytes` > 0 each is
    rotated past that size, `log_keep` rotations kept. Nothing there is deleted on stop.
    """
    settings = settings if settings is not None else ServerSettings()
    if not settings.restrict_admin_apis and not is_loopback(settings.host):
        raise ValueError(f"the admin APIs can be opened on a loopback address only, not {settings.host!r}: "
                         "they load and run model code")
    log_dir = Path(log_dir or default_log_dir())
    log_dir.mkdir(parents=True, exist_ok=True)
    rotation = LogRotation(log_dir, log_max_bytes, log_keep) if log_max_bytes > 0 else None
    settings = dataclasses.replace(
        settings, api_key=settings.api_key or os.environ.get(API_KEY_ENV) or None,
        extra_args=[*settings.extra_args, f"--exit-timeout-secs={exit_timeout_s}"],
        log_file=log_dir / "tritonserver.log", restart_on_death=True, max_restarts=max_restarts)
    if gateway is not None:  # tritonserver on loopback, on free ports: only the gateway faces clients
        settings = dataclasses.replace(settings, host="127.0.0.1", http_port=None, grpc_port=None)
    server = TritonServer(settings)
    supervisor = Supervisor(max_restarts=max_restarts)
    stop_requested = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop_requested.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    front = watchdog = None
    try:
        for local in servers:
            supervisor.watch(local)
        server.start()
        if settings.model_control_mode == "explicit":  # a model whose Python stub dies is reloaded
            watchdog = StubWatchdog(server).start()
        if gateway is not None:
            front = supervisor.watch(_start_gateway(server, gateway, log_dir))
        print_banner(server, [*notes, *gateway_notes(front), log_note(log_dir, rotation)])
        while not stop_requested.wait(POLL_S):
            supervisor.poll()
            if rotation is not None:
                rotation.check()
            given_up = _given_up(server, supervisor)
            if given_up:
                print(f"serve: {given_up} given up: stopping", file=sys.stderr, flush=True)
                return 1
        return 0
    finally:
        supervisor.forget_all()  # what is stopped now is no death
        if watchdog is not None:
            watchdog.stop()
        _stop_in_order(front, server, servers)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start_gateway(server: TritonServer, options: dict[str, Any], log_dir: Path) -> Gateway:
    """The gateway in front of the started server; keys as the server's (the API key from
    $TRITON_PATTERNS_API_KEY, the configured admin key)."""
    options = dict(options)
    options.setdefault("api_key", os.environ.get(API_KEY_ENV) or None)
    options.setdefault("admin_key", configured_admin_key(create=True))
    front = Gateway(server.http_url, server.grpc_url, **options)
    front.log_dir = log_dir
    return front.start()


def _given_up(server: TritonServer, supervisor: Supervisor) -> str:
    names = [*(["tritonserver"] if server.gave_up else []), *supervisor.gave_up]
    return ", ".join(names)


def _stop_in_order(front: Gateway | None, server: TritonServer, servers: Sequence[LocalServer]) -> None:
    """The gateway (graceful), tritonserver, then the local servers; each stop timed on stdout."""
    parts: list[tuple[str, Any]] = [("gateway", lambda: front.stop(GATEWAY_STOP_TIMEOUT_S))] if front else []
    parts.append(("tritonserver", lambda: server.stop(server.exit_timeout_s + TRITON_KILL_AFTER_S)))
    parts += [(local.name, local.stop) for local in servers]
    for name, stop in parts:
        started = time.monotonic()
        print(f"stopping {name} ...", end=" ", flush=True)
        try:
            stop()
        finally:
            print(f"stopped in {time.monotonic() - started:.1f}s", flush=True)
