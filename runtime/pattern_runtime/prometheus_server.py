"""A throwaway Prometheus (the Debian `prometheus` package) on a free local port, scraping given
targets with given rule files, in its own directory; for tests and demos.

    with PrometheusServer(["127.0.0.1:8002"], rule_files=["deploy/prometheus/alerts.yml"]) as prom:
        prom.query('sum by (model) (pattern_request_failures_total)')
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from pattern_runtime.processes import LocalServer, StartError, http_status

LOG_TAIL_LINES = 40


class PrometheusStartError(StartError):
    """prometheus is missing, exited, or was not ready in time (the message has its log tail)."""


class PrometheusQueryError(RuntimeError):
    """The HTTP API refused a query (bad PromQL, ...); the message has Prometheus' error."""


class PrometheusServer(LocalServer):
    """A `prometheus` child process; only the pid it started is stopped, its directory removed.

    `targets` are host:port of metrics endpoints (path /metrics), scraped every
    `scrape_interval`; `rule_files` are evaluated every `evaluation_interval`. A port taken
    before Prometheus binds it is replaced by another (`LocalServer`).
    """

    name = "prometheus"
    package = "prometheus"
    log_name = "prometheus.log"
    port_taken = "address already in use"
    start_error = PrometheusStartError
    log_tail_lines = LOG_TAIL_LINES

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
        binary: str = "prometheus",
    ):
        super().__init__(port, host, directory, startup_timeout, binary)
        self.targets = list(targets)
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.scrape_interval, self.evaluation_interval = scrape_interval, evaluation_interval

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
            self.binary_path(),
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--log.level=info",
        ]

    def _prepare(self) -> None:
        missing = [str(p) for p in self.rule_files if not p.is_file()]
        if missing:
            raise PrometheusStartError(f"rule files not found: {', '.join(missing)}")
        # JSON is YAML: no YAML library needed
        (self.directory / "prometheus.yml").write_text(json.dumps(self.config(), indent=2))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def is_ready(self) -> bool:
        return http_status(f"{self.url}/-/ready", timeout=1.0) == 200

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
