"""Python stub health for a server the launcher started, and recovery when a stub dies.

When a Python model's stub process dies (killed, out of memory, a crash in native code),
tritonserver 2.51 keeps the model READY: /v2/health/ready and /v2/models/<m>/ready stay 200
while every request fails with "Stub process '<m>_0_0' is not healthy", and loading the model
again is a no-op while its config is unchanged. `StubWatchdog` sees the death and reloads the
model through the repository API (explicit model-control mode, the launcher's default) with its
own config plus one parameter that changes on every reload (`RELOAD_PARAMETER`): a load whose
config changed replaces the model in the background, every version with new stubs, and swaps it
in when it is ready, so the model's other versions and the ensembles over it keep answering
(an unload first would take them all away meanwhile). Triton loads and unloads a model with all
its versions, and reloads the ensembles over it with it: no API reloads one instance or one
version (docs/reliability.md). If that load fails, the watchdog unloads and loads the model.
`serve` runs it; tests and users can call `dead_models()` / `check_once()` directly.

A stub also goes away when an operator or a tool (model-analyzer, a blue-green release) unloads or
reloads the model through the same repository API; the watchdog must leave those alone, and it
asks the server which case it is. Each stub serves one model instance, which owns a shared-memory
region (`/dev/shm/<region>`, the stub's argv[2]): the server removes the region with the instance.
So a followed stub that is gone is dead only while its instance's region is still there and the
server still calls the model ready (stock 2.51 keeps a model with a dead stub READY); a stub whose
region went with it ended with its instance (unload, reload with a new config) and is no longer
followed. Stubs that appear (a load through the API) are followed from the next check on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pattern_runtime.processes import wait_for

LOG = logging.getLogger("pattern_runtime.stub_watchdog")
RELOAD_PARAMETER = "stub_watchdog_reload"  # in the config of a model the watchdog reloaded: the time it did
LOAD_TIMEOUT_S = 300.0  # a load answers once the model is loaded (a text encoder: seconds)


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


@dataclass(frozen=True)
class Recovery:
    model: str
    dead_pids: tuple[int, ...]
    recovered: bool
    seconds: float
    how: str = "reload"  # "reload" (in place) or "unload+load" (the reload failed)


class StubWatchdog:
    """Watches the stubs of `server` (a launcher TritonServer); `interval` seconds between checks."""

    def __init__(self, server, interval: float = 2.0, shm_dir: Path | str = "/dev/shm", confirm_s: float = 0.5):
        self.server = server
        self.interval = interval
        self.shm_dir = Path(shm_dir)
        self.confirm_s = confirm_s
        self.expected: dict[str, dict[int, str]] = server.stubs()  # {model: {stub pid: shm region}}
        self.server_pid = server.pid
        self.recoveries: list[Recovery] = []
        self.last_method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def dead_models(self) -> dict[str, list[int]]:
        """{model: its followed stub pids that died}: the models that fail every request.

        Also follows what the repository API did since the last call (module docstring)."""
        candidates = self._gone_with_instance_alive()
        if candidates and self.confirm_s:  # a stub replaced right now: its region goes a moment later
            time.sleep(self.confirm_s)
            again = self._gone_with_instance_alive()
            candidates = {m: [p for p in pids if p in again.get(m, [])] for m, pids in candidates.items()}
        dead = {m: pids for m, pids in candidates.items() if pids and self.server.model_ready(m)}
        for model, pids in candidates.items():  # the others ended with their instance: not ours
            for pid in pids if model not in dead else ():
                self.expected.get(model, {}).pop(pid, None)
        return dead

    def _gone_with_instance_alive(self) -> dict[str, list[int]]:
        """Followed stubs that are gone while their instance's region is still there; forgets
        those gone with their region, starts following new ones."""
        current = self.server.stubs()
        gone: dict[str, list[int]] = {}
        for model, stubs in list(self.expected.items()):
            now = current.get(model, {})
            for pid, region in list(stubs.items()):
                if pid in now:
                    continue
                if region and (self.shm_dir / region).exists():
                    gone.setdefault(model, []).append(pid)
                else:
                    del stubs[pid]  # unloaded or replaced through the repository API
            if not stubs:
                del self.expected[model]
        for model, stubs in current.items():
            self.expected.setdefault(model, {}).update(stubs)
        return gone

    def recover(self, model: str, timeout: float = 60.0) -> bool:
        """Reload `model` in place (module docstring), else unload and load it; True once it is
        ready. `last_method` says which."""
        running = self.server.stubs().get(model, {})
        live = {pid: region for pid, region in self.expected.get(model, {}).items() if pid in running}
        self.last_method = "reload"
        if self._reload_in_place(model):
            # the replaced instances that still had a stub end a moment after the swap: wait, so
            # that none of their stubs is taken for a death (their regions go with them). The dead
            # one's region can stay for good: 2.51 never frees an instance whose stub died serving
            wait_for(lambda: not (live.keys() & self.server.stubs().get(model, {}).keys()
                                  or any((self.shm_dir / region).exists() for region in live.values() if region)),
                     timeout, interval=0.1)
            ok = True
        else:
            self.last_method = "unload+load"
            LOG.warning("model %s: the reload in place failed; unloading and loading it", model)
            ok = self._unload_and_load(model, timeout)
        self.expected[model] = self.server.stubs().get(model, {})
        return ok

    def _reload_in_place(self, model: str) -> bool:
        """A load with the model's own config and a new RELOAD_PARAMETER: a changed config makes
        Triton load the model anew beside the old one (a load of an unchanged config is a no-op,
        the dead stub stays). True once the new one serves."""
        base, headers = f"http://{self.server.http_url}", self.server.access.headers()
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{base}/v2/models/{model}/config",
                                                               headers=headers), timeout=10) as response:
                config = json.loads(response.read())
            config.setdefault("parameters", {})[RELOAD_PARAMETER] = {"string_value": repr(time.time())}
            body = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
            request = urllib.request.Request(f"{base}/v2/repository/models/{model}/load", data=body, method="POST",
                                             headers={"Content-Type": "application/json", **headers})
            with urllib.request.urlopen(request, timeout=LOAD_TIMEOUT_S):
                pass
        except (urllib.error.URLError, OSError, ValueError) as err:
            LOG.warning("model %s: reload with its config failed: %s", model, err)
            return False
        return self.server.model_ready(model)

    def _unload_and_load(self, model: str, timeout: float) -> bool:
        unloaded = self.server.unload_model(model)
        if unloaded:
            wait_for(lambda: not self.server.model_ready(model), timeout, interval=0.2)
        # a load while the old instance is still being torn down can fail ("no available
        # versions"): try again until the deadline
        return unloaded and wait_for(lambda: self.server.reload_model(model) and self.server.model_ready(model),
                                     timeout, interval=0.5)

    def check_once(self) -> list[Recovery]:
        if self.server.pid != self.server_pid:  # the supervisor restarted the server: new stubs
            self.expected, self.server_pid = self.server.stubs(), self.server.pid
            return []
        found = []
        for model, pids in self.dead_models().items():
            started = time.monotonic()
            LOG.warning("stub of model %s died (pids %s): reloading it", model, pids)
            ok = self.recover(model)
            found.append(Recovery(model, tuple(pids), ok, time.monotonic() - started, self.last_method))
            self.recoveries.append(found[-1])  # reported as soon as it is done, before the next model's
            (LOG.warning if ok else LOG.error)("model %s %s (%s)", model, "recovered" if ok else "NOT recovered",
                                               self.last_method)
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
            except Exception:  # the watchdog must outlive one failed check
                LOG.exception("stub watchdog check failed")
