"""What both tritonserver runtimes (embedded, container) offer their callers: ports, URLs, readiness
and the repository API, sent with the launcher's keys (`pattern_kernel.access`).

`Endpoints` is the shared base of `launcher.TritonServer` and `docker_server.DockerTritonServer`:
a subclass sets `host`, the three ports and `access`, and implements `start` and `stop`.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterable
from typing import Any

from pattern_kernel.access import Access
from pattern_runtime.admin_key import configured_admin_key
from pattern_runtime.processes import free_ports, http_status, wait_for

REPOSITORY_CALL_TIMEOUT_S = 300.0  # a load answers once the model is loaded (a text encoder: seconds)


def resolve_access(admin_key: str | None = None, api_key: str | None = None, restrict_admin: bool = True) -> Access:
    """The launcher's default `Access`: `admin_key`, else the configured one (created if none: see
    `admin_key.configured_admin_key`), unless `restrict_admin` is False; `api_key` as given
    (None: inference open)."""
    admin = (admin_key or configured_admin_key(create=True)) if restrict_admin else None
    return Access(admin_key=admin, api_key=api_key or None)


def fill_ports(host: str, *ports: int | None) -> list[int]:
    """The given ports, with each None replaced by a distinct free port on `host`."""
    free = iter(free_ports(sum(p is None for p in ports), connect_host(host)))
    return [p if p is not None else next(free) for p in ports]


def connect_host(host: str) -> str:
    """The address a local client dials for a server listening on `host` (any address: loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


class Endpoints:
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
        return connect_host(self.host)

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

    def models_ready(self, pending: list[str]) -> bool:
        """Drops the ready ones from `pending` (every version READY in the repository index: one
        request, with the admin key; else each model's readiness); True once empty."""
        try:
            states: dict[str, set[str]] = {}
            for entry in self.model_index():
                states.setdefault(entry.get("name", ""), set()).add(entry.get("state", ""))
            pending[:] = [name for name in pending if states.get(name) != {"READY"}]
        except (OSError, ValueError):
            pending[:] = [name for name in pending if not self.model_ready(name)]
        return not pending
