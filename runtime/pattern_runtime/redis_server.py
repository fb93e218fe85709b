"""A throwaway `redis-server` (the system package) on a free local port, for tests, demos and `serve`.

    with RedisServer(maxmemory="64mb", maxmemory_policy="allkeys-lru") as redis_server:
        redis_server.client().set("k", "v")
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from pattern_runtime.processes import LocalServer, StartError

LOG_TAIL_LINES = 40
APPENDFSYNC = ("everysec", "always")  # "no" (the OS decides when) is left out: no bound on what a crash loses


class RedisStartError(StartError):
    """redis-server is missing, exited, or did not answer PING in time (message has its log tail)."""


class RedisServer(LocalServer):
    """A `redis-server` child process in its own directory; only what it started is stopped.

    No persistence by default (`--save ""`, `--appendonly no`); `appendfsync` ("everysec" or
    "always") turns on the append-only file (no RDB snapshots) in `directory`, which then keeps
    the data across restarts; `maxmemory` (bytes or "64mb") and `maxmemory_policy` (e.g.
    "allkeys-lru", "noeviction") are passed through when given.
    """

    name = "redis-server"
    package = "redis-server"
    log_name = "redis.log"
    port_taken = "Address already in use"
    start_error = RedisStartError
    log_tail_lines = LOG_TAIL_LINES

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        maxmemory: int | str | None = None,
        maxmemory_policy: str | None = None,
        persistence: bool = False,
        appendfsync: str | None = None,
        extra_args: Sequence[str] = (),
        directory: Path | str | None = None,
        startup_timeout: float = 30.0,
        binary: str = "redis-server",
    ):
        super().__init__(port, host, directory, startup_timeout, binary)
        self.maxmemory = maxmemory
        self.maxmemory_policy = maxmemory_policy
        if appendfsync not in (None, *APPENDFSYNC):
            raise ValueError(f"appendfsync: expected one of {', '.join(APPENDFSYNC)}, got {appendfsync!r}")
        self.persistence = persistence or appendfsync is not None
        self.appendfsync = appendfsync
        self.extra_args = list(extra_args)

    # -- what is run

    def command(self) -> list[str]:
        args = [
            self.binary_path(),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.directory or "."),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]
        if self.appendfsync:
            args += ["--save", "", "--appendonly", "yes", "--appendfsync", self.appendfsync]
        elif not self.persistence:
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

    is_ready = ping

    # -- lifecycle

    def _shutdown(self, proc, timeout: float) -> None:
        """SHUTDOWN NOSAVE, falling back to SIGTERM (then SIGKILL) of the pid this object started."""
        import redis

        try:
            with contextlib.closing(self._control_client()) as client:
                client.shutdown(nosave=True)
        except redis.RedisError:  # the connection drops as the server exits; or it never answered
            pass
        proc.wait(timeout)
