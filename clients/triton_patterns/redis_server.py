"""A throwaway `redis-server` (the system package) on a free local port, for tests, demos and `serve`.

    with RedisServer(maxmemory="64mb", maxmemory_policy="allkeys-lru") as redis_server:
        redis_server.client().set("k", "v")
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

from .processes import ManagedProcess, describe_returncode, free_port, wait_for

LOG = logging.getLogger(__name__)
LOG_TAIL_LINES = 40
START_ATTEMPTS = 3
_ADDRESS_IN_USE = "Address already in use"
# The environment variable through which a server's backends (prediction cache, ...) find Redis.
REDIS_URL_ENV = "TRITON_PATTERNS_REDIS_URL"


class RedisStartError(RuntimeError):
    """redis-server is missing, exited, or did not answer PING in time (message has its log tail)."""


def redis_server_binary(binary: str = "redis-server") -> str:
    path = shutil.which(binary)
    if path is None:
        raise RedisStartError(
            f"{binary} not found on PATH; install the system package: apt-get install redis-server"
        )
    return path


class RedisServer:
    """A `redis-server` child process in its own directory; only what it started is stopped.

    No persistence by default (`--save ""`, `--appendonly no`); `maxmemory` (bytes or
    "64mb") and `maxmemory_policy` (e.g. "allkeys-lru") are passed through when given.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        maxmemory: int | str | None = None,
        maxmemory_policy: str | None = None,
        persistence: bool = False,
        extra_args: Sequence[str] = (),
        directory: Path | str | None = None,
        startup_timeout: float = 30.0,
        binary: str = "redis-server",
    ):
        self.host = host
        self._port_chosen = not port
        self.port = port or free_port(host)
        self.maxmemory = maxmemory
        self.maxmemory_policy = maxmemory_policy
        self.persistence = persistence
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.binary = binary
        self._own_directory = directory is None
        self.directory = Path(directory) if directory else None
        self._proc: ManagedProcess | None = None

    # -- what is run

    def command(self) -> list[str]:
        args = [
            redis_server_binary(self.binary),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.directory or "."),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]
        if not self.persistence:
            args += ["--save", "", "--appendonly", "no"]
        if self.maxmemory is not None:
            args += ["--maxmemory", str(self.maxmemory)]
        if self.maxmemory_policy is not None:
            args += ["--maxmemory-policy", self.maxmemory_policy]
        return args + self.extra_args

    # -- endpoints

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path | None:
        return self.directory / "redis.log" if self.directory else None

    def client(self, **kwargs):
        """A `redis.Redis` connected to this server (decode_responses etc. pass through)."""
        import redis

        return redis.Redis(host=self.host, port=self.port, db=0, **kwargs)

    def _control_client(self):
        """A client that fails at once (redis-py retries refused connections for seconds by default)."""
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return self.client(socket_timeout=2, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))

    def ping(self) -> bool:
        import redis

        try:
            with contextlib.closing(self._control_client()) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.is_running()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return self._proc.log_tail(lines) if self._proc else ""

    # -- lifecycle

    def start(self) -> RedisServer:
        if self.is_running():
            raise RuntimeError(f"redis-server already running (pid {self.pid})")
        redis_server_binary(self.binary)  # fail before creating anything
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="triton-patterns-redis-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, START_ATTEMPTS + 1):
            proc = self._proc = ManagedProcess(self.command(), self.log_path, cwd=self.directory)
            started = time.monotonic()
            if wait_for(self.ping, self.startup_timeout, interval=0.05, abort=lambda: not proc.is_running()):
                return self
            state = (
                f"exited ({describe_returncode(proc.returncode)})"
                if not proc.is_running()
                else f"did not answer PING within {time.monotonic() - started:.0f}s"
            )
            tail_text = proc.log_tail(LOG_TAIL_LINES)
            proc.terminate(timeout=2)
            # a port chosen free that another process bound first: choose another one
            if self._port_chosen and attempt < START_ATTEMPTS and _ADDRESS_IN_USE in tail_text.rsplit("\n=== ", 1)[-1]:
                LOG.warning("redis-server port %s taken by another process: trying a new free port", self.port)
                self.port = free_port(self.host)
                continue
            message = (f"redis-server on {self.host}:{self.port} (pid {proc.pid}) {state}; "
                       f"last lines of {self.log_path}:\n{tail_text}")
            self.stop(timeout=2)
            raise RedisStartError(message)
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 10.0) -> None:
        """SHUTDOWN NOSAVE, falling back to SIGTERM (then SIGKILL) of the pid this object started."""
        proc = self._proc
        if proc is not None:
            if proc.is_running():
                self._shutdown_nosave()
            if proc.wait(timeout) is None:
                proc.terminate(timeout)
            proc.kill_leftovers()
        if self._own_directory and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        self._proc = None

    def _shutdown_nosave(self) -> None:
        import redis

        try:
            with contextlib.closing(self._control_client()) as client:
                client.shutdown(nosave=True)
        except redis.RedisError:  # the connection drops as the server exits; or it never answered
            pass

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
