"""A throwaway Prometheus (the Debian `prometheus` package) on a free local port, scraping given
targets with given rule files, in its own directory; for tests and demos.

    with PrometheusServer(["127.0.0.1:8002"], rule_files=["deploy/prometheus/alerts.yml"]) as prom:
        prom.query('sum by (model) (pattern_request_failures_total)')
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from .processes import ManagedProcess, describe_returncode, free_port, http_status, wait_for

LOG_TAIL_LINES = 40
# Prometheus' own words when its listen port was taken between choosing it and binding it.
_PORT_TAKEN = "address already in use"


class PrometheusStartError(RuntimeError):
    """prometheus is missing, exited, or was not ready in time (the message has its log tail)."""


class PrometheusQueryError(RuntimeError):
    """The HTTP API refused a query (bad PromQL, ...); the message has Prometheus' error."""


def prometheus_binary(binary: str = "prometheus") -> str:
    path = shutil.which(binary)
    if path is None:
        raise PrometheusStartError(f"{binary} not found on PATH; install the system package: apt-get install prometheus")
    return path


class PrometheusServer:
    """A `prometheus` child process; only the pid it started is stopped, its directory removed.

    `targets` are host:port of metrics endpoints (path /metrics), scraped every
    `scrape_interval`; `rule_files` are evaluated every `evaluation_interval`. A port taken
    before Prometheus binds it is replaced by another, up to `port_attempts` times.
    """

    def __init__(
        self,
        targets: Iterable[str],
        rule_files: Iterable[Path | str] = (),
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        port: int | None = None,
        host: str = "127.0.0.1",
        directory: Path | str | None = None,
        startup_timeout: float = 60.0,
        port_attempts: int = 3,
        binary: str = "prometheus",
    ):
        self.targets = list(targets)
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.scrape_interval, self.evaluation_interval = scrape_interval, evaluation_interval
        self.host = host
        self.port = port or free_port(host)
        self._fixed_port = port is not None
        self.startup_timeout = startup_timeout
        self.port_attempts = port_attempts
        self.binary = binary
        self._own_directory = directory is None
        self.directory = Path(directory) if directory else None
        self._proc: ManagedProcess | None = None

    # -- what is run

    def config(self) -> dict:
        return {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.evaluation_interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [{"job_name": "triton", "static_configs": [{"targets": self.targets}]}],
        }

    def command(self) -> list[str]:
        directory = self.directory or Path(".")
        return [
            prometheus_binary(self.binary),
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--log.level=info",
        ]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path | None:
        return self.directory / "prometheus.log" if self.directory else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.is_running()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return self._proc.log_tail(lines) if self._proc else ""

    # -- lifecycle

    def start(self) -> PrometheusServer:
        if self.is_running():
            raise RuntimeError(f"prometheus already running (pid {self.pid})")
        prometheus_binary(self.binary)  # fail before creating anything
        missing = [str(p) for p in self.rule_files if not p.is_file()]
        if missing:
            raise PrometheusStartError(f"rule files not found: {', '.join(missing)}")
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="triton-patterns-prometheus-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        # JSON is YAML: no YAML library needed
        (self.directory / "prometheus.yml").write_text(json.dumps(self.config(), indent=2))
        for attempt in range(1, self.port_attempts + 1):
            error = self._start_once()
            if error is None:
                return self
            if _PORT_TAKEN not in error or self._fixed_port or attempt == self.port_attempts:
                self.stop(timeout=5)
                raise PrometheusStartError(error)
            self.port = free_port(self.host)
        raise AssertionError("unreachable")

    def _start_once(self) -> str | None:
        """None when ready; else why not (state, port, log tail)."""
        proc = self._proc = ManagedProcess(self.command(), self.log_path, cwd=self.directory)
        started = time.monotonic()
        if wait_for(self.is_ready, self.startup_timeout, interval=0.1, abort=lambda: not proc.is_running()):
            return None
        state = (
            f"exited ({describe_returncode(proc.returncode)})"
            if not proc.is_running()
            else f"was not ready within {time.monotonic() - started:.0f}s"
        )
        tail_text = proc.log_tail(LOG_TAIL_LINES)
        proc.terminate(timeout=5)
        return f"prometheus (pid {proc.pid}) on {self.host}:{self.port} {state}; last lines of {self.log_path}:\n{tail_text}"

    def is_ready(self) -> bool:
        return http_status(f"{self.url}/-/ready", timeout=1.0) == 200

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Prometheus shuts down cleanly), SIGKILL after `timeout`; the pid it started only."""
        if self._proc is not None:
            self._proc.terminate(timeout)
            self._proc = None
        if self._own_directory and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- HTTP API

    def api(self, path: str, **params: str) -> dict | list:
        """GET /api/v1/<path>; the `data` of a successful answer, else PrometheusQueryError."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict, float]]:
        """An instant query: (labels, value) per series of the result (a scalar: one, no labels)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [({}, float(data["result"][1]))]
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]

    def rules(self) -> list[dict]:
        """Every loaded rule (alerting and recording), with its group's name under `group`."""
        return [{**rule, "group": group["name"]} for group in self.api("rules")["groups"] for rule in group["rules"]]

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)
