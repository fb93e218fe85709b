"""Python stub health for a server the launcher started, and recovery when a stub dies.

When a Python model's stub process dies (killed, out of memory, a crash in native code),
tritonserver 2.51 keeps the model READY: /v2/health/ready and /v2/models/<m>/ready stay 200
while every request fails with "Stub process '<m>_0_0' is not healthy", and loading the model
again is a no-op while its config is unchanged. `StubWatchdog` sees the death (the stub pids it
recorded are gone from the server's children) and recovers the model by unloading and loading it
through the repository API (explicit model-control mode, the launcher's default), which starts a
new stub. `serve` runs it; tests and users can call `dead_models()` / `check_once()` directly.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from .processes import wait_for

LOG = logging.getLogger("triton_patterns.stub_watchdog")


@dataclass(frozen=True)
class Recovery:
    model: str
    dead_pids: tuple[int, ...]
    recovered: bool
    seconds: float


class StubWatchdog:
    """Watches the stubs of `server` (a launcher TritonServer); `interval` seconds between checks."""

    def __init__(self, server, interval: float = 2.0):
        self.server = server
        self.interval = interval
        self.expected = server.stub_pids()
        self.server_pid = server.pid
        self.recoveries: list[Recovery] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def dead_models(self) -> dict[str, list[int]]:
        """{model: its recorded stub pids that are gone}: the models that fail every request."""
        alive = {pid for pids in self.server.stub_pids().values() for pid in pids}
        dead = {m: [p for p in pids if p not in alive] for m, pids in self.expected.items()}
        return {m: pids for m, pids in dead.items() if pids}

    def recover(self, model: str, timeout: float = 60.0) -> bool:
        """Unload then load `model` (a plain load keeps the dead stub); True once it is ready."""
        unloaded = self.server.unload_model(model)
        if unloaded:
            wait_for(lambda: not self.server.model_ready(model), timeout, interval=0.2)
        # a load while the old instance is still being torn down can fail ("no available
        # versions"): try again until the deadline
        ok = unloaded and wait_for(lambda: self.server.reload_model(model) and self.server.model_ready(model),
                                   timeout, interval=0.5)
        if ok:
            self.expected[model] = self.server.stub_pids().get(model, [])
        return ok

    def check_once(self) -> list[Recovery]:
        if self.server.pid != self.server_pid:  # the supervisor restarted the server: new stubs
            self.expected, self.server_pid = self.server.stub_pids(), self.server.pid
            return []
        found = []
        for model, pids in self.dead_models().items():
            started = time.monotonic()
            LOG.warning("stub of model %s died (pids %s): unloading and loading it", model, pids)
            ok = self.recover(model)
            found.append(Recovery(model, tuple(pids), ok, time.monotonic() - started))
            (LOG.warning if ok else LOG.error)("model %s %s", model, "recovered" if ok else "NOT recovered")
        self.recoveries += found
        return found

    def start(self) -> StubWatchdog:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="stub-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 70)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.server.is_running():
                continue  # a whole-server death is the supervisor's business
            try:
                self.check_once()
            except Exception:  # noqa: BLE001 - the watchdog must outlive one failed check
                LOG.exception("stub watchdog check failed")
