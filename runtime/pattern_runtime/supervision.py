"""Supervision of the local servers that run beside tritonserver (redis-server, nginx).

    supervisor = Supervisor(on_give_up=note_it)
    supervisor.watch(redis)          # a started LocalServer
    while running:
        supervisor.poll()            # from the thread that started the servers
        time.sleep(0.2)
    supervisor.forget_all()          # before stopping the servers: their stop is no death

A death not asked for (the process ended while watched) is logged with its exit code or signal
and its log tail, and the server is started again on the same port(s) in the same directory, so
with the same data (`LocalServer.restart`). Restarts follow a `RestartPolicy`: a backoff doubled
for each death soon after a start, and a limit, past which the server is given up and
`on_give_up` is called. tritonserver's own supervisor (`launcher.TritonServer`) follows the same
policy and reports a `ServerDied`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pattern_runtime.processes import LocalServer, describe_returncode, signal_name

LOG = logging.getLogger("pattern_runtime.supervision")

QUICK_DEATH_S = 30.0  # a death this soon after a start doubles the next backoff
MAX_BACKOFF_S = 30.0


@dataclass
class ProcessDied:
    """A supervised process that ended without having been asked to stop."""

    pid: int
    returncode: int
    uptime_s: float
    log_tail: str
    restarting: bool
    name: str = "server"
    at: float = field(default_factory=time.time)

    @property
    def description(self) -> str:
        """"killed by SIGKILL", "exit code 1"."""
        return describe_returncode(self.returncode)

    @property
    def signal(self) -> str | None:
        """Signal name (e.g. "SIGSEGV") if a signal ended it."""
        return signal_name(-self.returncode) if self.returncode < 0 else None

    def __str__(self) -> str:
        then = "restarting" if self.restarting else "not restarting"
        return f"{self.name} pid {self.pid} died ({self.description}) after {self.uptime_s:.1f}s; {then}"


@dataclass
class RestartPolicy:
    """At most `max_restarts` restarts; `backoff_s` before each, doubled for each consecutive death
    within QUICK_DEATH_S of its start (at most MAX_BACKOFF_S)."""

    max_restarts: int = 10
    backoff_s: float = 0.5
    restarts: int = 0
    _quick_deaths: int = 0

    def allows_restart(self) -> bool:
        return self.restarts < self.max_restarts

    def next_backoff(self, uptime_s: float) -> float:
        self._quick_deaths = self._quick_deaths + 1 if uptime_s < QUICK_DEATH_S else 0
        return min(self.backoff_s * 2 ** max(0, self._quick_deaths - 1), MAX_BACKOFF_S)


class Supervisor:
    """Watches started `LocalServer`s; each gets its own `RestartPolicy(max_restarts, backoff_s)`.

    It has no thread of its own: its owner calls `poll()` every few tenths of a second from a
    long-lived thread (serve's main loop). A child started with die-with-parent is ended by the
    kernel when the thread that started it ends, so restarts must come from the thread that
    outlives the servers. `poll()` never blocks on a backoff: a dead server is restarted by the
    first poll after its backoff. `deaths` lists every death seen; `gave_up` names the servers given
    up; `on_death(ProcessDied)` and `on_give_up(server)` are called from `poll()`."""

    def __init__(self, *, max_restarts: int = 10, backoff_s: float = 0.5,
                 on_death: Callable[[ProcessDied], None] | None = None,
                 on_give_up: Callable[[LocalServer], None] | None = None):
        self.max_restarts, self.backoff_s = max_restarts, backoff_s
        self.on_death, self.on_give_up = on_death, on_give_up
        self.deaths: list[ProcessDied] = []
        self.gave_up: list[str] = []
        self._watched: dict[int, _Watched] = {}

    def watch(self, server: LocalServer) -> LocalServer:
        self._watched[id(server)] = _Watched(server, RestartPolicy(self.max_restarts, self.backoff_s))
        return server

    def forget(self, server: LocalServer) -> None:
        """Stop watching `server` (before stopping it: its stop is no death)."""
        self._watched.pop(id(server), None)

    def forget_all(self) -> None:
        self._watched.clear()

    def restarts(self, server: LocalServer) -> int:
        entry = self._watched.get(id(server))
        return entry.policy.restarts if entry else 0

    def poll(self) -> None:
        """Note new deaths; restart the dead servers whose backoff has passed."""
        for entry in list(self._watched.values()):
            server, policy = entry.server, entry.policy
            if entry.restart_at is None:
                if server.pid is None or server.is_running():
                    continue
                entry.died = self._report(server, policy)
                if not policy.allows_restart():
                    self._give_up(server)
                    continue
                entry.restart_at = time.monotonic() + policy.next_backoff(entry.died.uptime_s)
            if time.monotonic() < entry.restart_at:
                continue
            policy.restarts += 1
            try:
                server.restart()
            except Exception as err:  # noqa: BLE001 - a failed restart is one more try, not the end
                LOG.error("%s restart %d of %d failed: %s", server.name, policy.restarts, policy.max_restarts, err)
                if not policy.allows_restart():
                    self._give_up(server)
                else:
                    entry.restart_at = time.monotonic() + policy.next_backoff(0.0)
                continue
            entry.restart_at = None
            LOG.warning("%s restarted (restart %d of %d): pid %s on port %s", server.name, policy.restarts,
                        policy.max_restarts, server.pid, server.port)

    def _report(self, server: LocalServer, policy: RestartPolicy) -> ProcessDied:
        proc = server.process
        died = ProcessDied(pid=proc.pid, returncode=proc.returncode, uptime_s=proc.uptime(),
                           log_tail=server.log_tail(), restarting=policy.allows_restart(), name=server.name)
        self.deaths.append(died)
        LOG.error("%s (port %s); last lines of %s:\n%s", died, server.port, server.log_path, died.log_tail)
        _call(self.on_death, died)
        return died

    def _give_up(self, server: LocalServer) -> None:
        LOG.error("%s given up after %d restarts", server.name, self.restarts(server))
        self.gave_up.append(server.name)
        self.forget(server)
        _call(self.on_give_up, server)


@dataclass
class _Watched:
    server: LocalServer
    policy: RestartPolicy
    died: ProcessDied | None = None
    restart_at: float | None = None  # monotonic time of the next restart, while dead


@dataclass
class ServerDied(ProcessDied):
    """A tritonserver process that ended without `stop()` having been called."""

    name: str = "tritonserver"


def _call(callback, *args) -> None:
    if callback is None:
        return
    try:
        callback(*args)
    except Exception:  # a faulty callback must not end supervision
        LOG.exception("supervision callback failed")
