"""Per-step tracing against a real tritonserver: an ensemble's steps and a BLS model's callees are
children of the step that called them, with their model names and versions and their phases; a
failed step is marked; the client's W3C trace id reaches the server's OpenTelemetry spans.

Triton mode runs on the session server (the launcher gives every server a trace file; the trace
command turns tracing on for one model and one request). OpenTelemetry mode is global, so that test
starts a server of its own (iris and iris_cascade only) sending to a small OTLP/HTTP receiver
(`otlp_receiver.py`: no collector is installable here)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from otlp_receiver import OtlpReceiver

from pattern_runtime.launcher import TritonServer
from pattern_runtime.server_settings import ServerSettings
from pattern_tools.trace import trace_request
from triton_patterns.client import PatternClient

pytestmark = pytest.mark.e2e
ROW = "6.7,3.0,5.2,2.3"


def _children(span):
    return [(c.model, c.version) for c in sorted(span.children, key=lambda s: s.start)]


def _inside(child, parent):
    return parent.start <= child.start and child.end <= parent.times["REQUEST_END"] + 1_000_000  # 1 ms slack


def test_an_ensembles_steps_are_its_children_in_order(triton):
    root, error, _ = trace_request(triton.http_url, "text_classify", "heavy rain expected tonight")
    assert error is None and (root.model, root.version, root.status) == ("text_classify", 1, "ok")
    assert _children(root) == [("text_tokenizer", 1), ("text_encoder", 1), ("text_classifier", 1)]
    for step in root.children:
        assert _inside(step, root)
        assert all(step.phase_ms(a, b) is not None and step.phase_ms(a, b) >= 0 for a, b in
                   [("QUEUE_START", "COMPUTE_START"), ("COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START")])
    tokenizer, encoder, classifier = sorted(root.children, key=lambda s: s.start)
    # a chain: each step starts once the one before has its outputs (before that one is released)
    assert tokenizer.times["COMPUTE_OUTPUT_START"] <= encoder.start
    assert encoder.times["COMPUTE_OUTPUT_START"] <= classifier.start


def test_a_bls_models_callees_are_its_children_and_the_failed_step_is_marked(triton):
    root, error, _ = trace_request(triton.http_url, "iris_cascade_strict", ROW)
    assert "step 'audit' (model 'iris_failing' version 1) failed" in error
    assert _children(root) == [("iris", 1), ("iris_failing", 1)]
    status = {c.model: c.status for c in root.children}
    assert (root.status, status) == ("failed", {"iris": "ok", "iris_failing": "failed"})
    assert all(_inside(c, root) for c in root.children)


def test_the_parallel_bls_shows_its_slow_branch_past_the_deadline_and_its_grandchild(triton):
    root, error, outputs = trace_request(triton.http_url, "iris_parallel", ROW)
    assert error is None and outputs["REPORT"]["answers"] == 2
    assert sorted(_children(root)) == [("iris", 1), ("iris", 2), ("iris_failing", 1), ("iris_slow", 1)]
    by_model = {c.model: c for c in root.children}
    slow = by_model["iris_slow"]
    assert slow.status == "timed_out" and by_model["iris_failing"].status == "failed"
    assert slow.ms > 1000 > root.ms  # cut at 400 ms by the pattern; the callee went on (a BLS call can't be cancelled)
    assert _children(slow) == [("iris", 2)]  # iris_slow (fault injection) calls iris v2: nested one level down
    assert all(c.status == "ok" for c in root.find("iris"))


def test_a_failed_ensemble_step_is_the_last_one_that_ran(triton):
    root, error, _ = trace_request(triton.http_url, "text_classify", "")
    assert "expected non-empty text" in error
    assert _children(root) == [("text_tokenizer", 1)]  # the later steps never started
    assert (root.status, root.children[0].status) == ("failed", "failed")


def test_the_shadow_routers_primary_is_its_child(triton):
    root, error, _ = trace_request(triton.http_url, "iris_shadow", ROW)
    assert error is None
    # the candidate runs in the background and may outlive the request, so it is called without the
    # request's trace (python_backend passes the parent trace as a pointer freed with the request)
    assert _children(root) == [("iris", 1)]


def test_the_trace_command_prints_and_draws_the_waterfall(triton, tmp_path):
    picture = tmp_path / "waterfall.png"
    run = subprocess.run([sys.executable, "-m", "pattern_tools.cli", "trace", "text_classify_bls",
                          "heavy rain expected tonight", "--url", triton.http_url, "--png", str(picture)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[1].startswith("text_classify_bls v1")
    assert [line.split()[0] for line in lines[2:5]] == ["text_tokenizer", "text_encoder", "text_classifier"]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000


# Triton's gRPC frontend reads the traceparent metadata past its end and drops it for a few requests
# in a hundred (docs/upstream.md): each of those starts a trace of its own, so gRPC sends several
GRPC_CALLS = 10


def test_the_clients_trace_id_reaches_the_servers_spans(tmp_path):
    with OtlpReceiver() as receiver, TritonServer(ServerSettings(
        load_models=["iris", "iris_cascade"], cache_size_bytes=None, log_dir=tmp_path,
        trace=f"rate=1,mode=opentelemetry,url={receiver.url}",
        extra_args=["--trace-config=opentelemetry,bsp_schedule_delay=200"],  # export every 0.2 s, not 5 s
    )) as server:
        sent = {}
        for protocol, url, calls in (("http", server.http_url, 1), ("grpc", server.grpc_url, GRPC_CALLS)):
            with PatternClient(url, protocol, trace=True) as client:
                sent[protocol] = [client.serial_bls([6.0, 2.7, 5.1, 1.6]).trace_id for _ in range(calls)]
            assert all(len(t) == 32 for t in sent[protocol])
        requests = 1 + GRPC_CALLS
        spans = receiver.wait_for(lambda got: [s.name for s in got].count("InferRequest") == requests
                                  and [s.name for s in got].count("iris_cascade") == requests)
    roots = {s.trace_id: s for s in spans if s.name == "InferRequest"}
    joined = {protocol: [t for t in ids if t in roots] for protocol, ids in sent.items()}
    assert joined["http"] == sent["http"], "the HTTP request's spans are not in the client's trace"
    assert joined["grpc"], f"none of {GRPC_CALLS} gRPC requests' spans is in its client's trace"
    lost = roots.keys() - set(sent["http"]) - set(sent["grpc"])
    assert len(lost) == GRPC_CALLS - len(joined["grpc"])
    assert all(roots[t].parent_span_id == "" for t in lost), "a request that lost its context joined another"
    for trace_id in joined["http"] + joined["grpc"]:
        mine = {s.span_id: s for s in spans if s.trace_id == trace_id}
        (model,) = [s for s in mine.values() if s.name == "iris_cascade"]
        assert model.attributes["triton.model_version"] == "1"
        root = mine[model.parent_span_id]  # the frontend's span, whose parent is the client's
        assert root.parent_span_id not in mine and root.parent_span_id  # the client's span, outside the server
        callees = [s for s in mine.values() if s.parent_span_id == model.span_id and s.name == "iris"]
        assert "1" in {s.attributes["triton.model_version"] for s in callees}  # v1 first; v2 when v1 is unsure
        assert {"QUEUE_START", "REQUEST_START", "REQUEST_END"} <= set(callees[0].events)
