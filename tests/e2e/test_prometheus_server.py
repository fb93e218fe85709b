"""PrometheusServer: a real prometheus on a free port with rule files; a start that fails says
why (exit code, port, log tail); a port taken before it binds is replaced; nothing left after
stop()."""

from __future__ import annotations

import os
import socket

import pytest

from pattern_runtime.prometheus_server import PrometheusQueryError, PrometheusServer, PrometheusStartError

pytestmark = pytest.mark.e2e  # a missing binary fails with the package to install

RULES = """groups:
  - name: t
    rules:
      - alert: Always
        expr: vector(1) > 0
"""


def test_serves_queries_and_rules_then_stops(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    server = PrometheusServer(["127.0.0.1:1"], rule_files=[rules]).start()
    try:
        directory, pid = server.directory, server.pid
        assert server.query("1 + 1") == [({}, 2.0)]
        assert [(r["name"], r["type"]) for r in server.rules()] == [("Always", "alerting")]
        with pytest.raises(PrometheusQueryError, match="bad_data"):
            server.query("sum(")
    finally:
        server.stop()
    assert not directory.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_failed_start_says_why(tmp_path):
    rules = tmp_path / "broken.yml"
    rules.write_text("groups:\n  - name: t\n    rules:\n      - alert: Broken\n        expr: sum(\n")
    server = PrometheusServer(["127.0.0.1:1"], rule_files=[rules])
    with pytest.raises(PrometheusStartError) as err:
        server.start()
    message = str(err.value)
    assert f"127.0.0.1:{server.port}" in message and "exited (exit code" in message
    assert "broken.yml" in message  # from the log tail
    assert not server.is_running()


def test_a_port_taken_before_binding_is_replaced():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = PrometheusServer(["127.0.0.1:1"])
        server.port = taken.getsockname()[1]
        with server:
            assert server.port != taken.getsockname()[1] and server.is_ready()


def test_missing_rule_file_is_named(tmp_path):
    with pytest.raises(PrometheusStartError, match="nope.yml"):
        PrometheusServer(["127.0.0.1:1"], rule_files=[tmp_path / "nope.yml"]).start()
