"""Tracing without a server: the trace settings and their tritonserver flags, Triton's trace files
as trees (records as the 2.51 server writes them, split across files), the failed-step marks, the
waterfall's text and picture, and the client's traceparent."""

from __future__ import annotations

import json
import re

import pytest

from pattern_kernel.trace_config import TraceConfig
from pattern_tools import waterfall
from triton_patterns.traceparent import traceparent


def test_trace_settings_parse_and_become_trace_config_flags():
    config = TraceConfig.parse("rate=1000", file="/logs/trace.json")
    assert config.on and config.server_flags() == [
        "--trace-config=mode=triton", "--trace-config=level=TIMESTAMPS", "--trace-config=rate=1000",
        "--trace-config=count=-1", "--trace-config=triton,file=/logs/trace.json",
        "--trace-config=triton,log-frequency=1"]
    otel = TraceConfig.parse("rate=1, mode=opentelemetry, url=http://c:4318/v1/traces, service=shop")
    assert "--trace-config=opentelemetry,url=http://c:4318/v1/traces" in otel.server_flags()
    assert "--trace-config=opentelemetry,resource=service.name=shop" in otel.server_flags()
    off = TraceConfig().with_defaults(file="/logs/t.json")  # the launcher's default: off, the API can turn it on
    assert not off.on and "--trace-config=level=OFF" in off.server_flags() and off.file == "/logs/t.json"
    assert TraceConfig.parse("rate=1,file=/x.json").with_defaults(file="/logs/t.json").file == "/x.json"


@pytest.mark.parametrize("text, message", [
    ("rate=1,colour=red", "trace setting 'colour=red': expected one of rate, mode"),
    ("rate", "trace setting 'rate': expected"),
    ("mode=zipkin", "trace mode must be one of triton, opentelemetry, not 'zipkin'"),
    ("rate=-1", "trace rate must be >= 0"),
    ("rate=1,mode=opentelemetry", "trace mode opentelemetry needs url="),
])
def test_bad_trace_settings_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TraceConfig.parse(text)


def _span(id_, model, start, end, parent=None, request_id="", compute=True):
    """The records Triton 2.51 writes for one span (times in ms, written as ns)."""
    meta = {"id": id_, "model_name": model, "model_version": 1, **({"parent_id": parent} if parent else {}),
            **({"request_id": request_id} if request_id else {})}
    names = ["REQUEST_START", "QUEUE_START"] + (["COMPUTE_START", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START",
                                                 "COMPUTE_END"] if compute else []) + ["REQUEST_END"]
    step = (end - start) / (len(names) - 1)
    return [meta] + [{"id": id_, "timestamps": [{"name": n, "ns": int((start + i * step) * 1e6)}]}
                     for i, n in enumerate(names)]


@pytest.fixture()
def trace_files(tmp_path):
    """A serial BLS request (id 5) whose second step failed, and an earlier ensemble (id 1), in two
    files; the BLS steps' records come first, as Triton writes children before their parent."""
    first = tmp_path / "trace.json.0"
    first.write_text(json.dumps(_span(1, "text_classify", 0, 10, request_id="other", compute=False)
                                + _span(2, "text_tokenizer", 1, 3, parent=1)))
    second = tmp_path / "trace.json.1"
    second.write_text(json.dumps(_span(7, "iris_failing", 106, 108, parent=5) + _span(6, "iris", 101, 104, parent=5)
                                 + _span(8, "iris", 106.5, 107.5, parent=7)
                                 + _span(5, "iris_cascade_strict", 100, 110, request_id="mine")))
    (tmp_path / "trace.json.2").write_text('[{"id": 9, "model_na')  # being written: skipped
    return sorted(tmp_path.glob("trace.json*"))


def test_trace_files_become_trees_nested_by_parent_id(trace_files):
    roots = waterfall.build_trees(waterfall.read_records(trace_files))
    assert sorted(r.request_id for r in roots) == ["mine", "other"]
    root = waterfall.trace_of("mine", trace_files)
    assert [(depth, span.model) for depth, span in root.walk()] == [
        (0, "iris_cascade_strict"), (1, "iris"), (1, "iris_failing"), (2, "iris")]
    iris = root.find("iris")[0]
    assert iris.ms == pytest.approx(3.0) and iris.phase_ms("QUEUE_START", "COMPUTE_START") == pytest.approx(0.5)
    assert waterfall.trace_of("nobody", trace_files) is None


def test_the_failed_step_is_marked_from_the_error_naming_it(trace_files):
    root = waterfall.trace_of("mine", trace_files)
    error = ("step 'audit' (model 'iris_failing' version 1) failed: step 'target' (model 'iris' version 1) failed: "
             "model 'iris' is not ready")
    waterfall.mark_failures(root, error)
    marks = [(depth, span.model, span.status) for depth, span in root.walk()]
    assert marks == [(0, "iris_cascade_strict", "failed"), (1, "iris", "ok"), (1, "iris_failing", "failed"),
                     (2, "iris", "failed")]


def test_an_ensembles_failure_marks_its_last_step_and_step_reports_mark_theirs(trace_files):
    ensemble = waterfall.trace_of("other", trace_files)
    waterfall.mark_failures(ensemble, "in ensemble 'text_classify', input 'TEXT': row 0 is empty")
    assert [s.status for _, s in ensemble.walk()] == ["failed", "failed"]
    bls = waterfall.trace_of("mine", trace_files)
    waterfall.mark_failures(bls, None, {
        "STEPS": [{"step": "audit", "model": "iris_failing", "version": 1, "status": "skipped", "error": "down"}],
        "REPORT": {"targets": [{"target": "iris", "version": 1, "status": "timed_out", "error": "late"}]}})
    assert {s.model: (s.status, s.note) for s in bls.children} == {"iris_failing": ("skipped", "down"),
                                                                   "iris": ("timed_out", "late")}
    assert bls.status == "ok"


def test_the_waterfall_as_text_and_png(trace_files, tmp_path):
    root = waterfall.trace_of("mine", trace_files)
    waterfall.mark_failures(root, "step 'audit' (model 'iris_failing' version 1) failed: boom")
    lines = waterfall.text(root, width=20).splitlines()
    assert lines[0].split()[:3] == ["span", "start", "total"]
    assert lines[1].startswith("iris_cascade_strict v1") and lines[3].startswith("  iris_failing v1")
    assert lines[4].startswith("    iris v1")
    assert "FAILED: step 'audit'" in lines[3] and lines[2].rstrip().endswith("ok")
    start, total = (float(x) for x in lines[3].split()[2:4])
    assert (start, total) == (6.0, 2.0)
    picture = waterfall.png(root, tmp_path / "w.png")
    assert picture.read_bytes()[:4] == b"\x89PNG"


def test_traceparent_is_w3c_and_new_for_each_call():
    header, trace_id = traceparent()
    assert re.fullmatch(r"00-([0-9a-f]{32})-[0-9a-f]{16}-01", header).group(1) == trace_id
    assert traceparent()[1] != trace_id


def test_traceparent_follows_the_callers_opentelemetry_span():
    otel = pytest.importorskip("opentelemetry.trace")
    context = otel.SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=False,
                               trace_flags=otel.TraceFlags(otel.TraceFlags.SAMPLED))
    with otel.use_span(otel.NonRecordingSpan(context)):
        assert traceparent() == (f"00-{0xABC:032x}-{0xDEF:016x}-01", f"{0xABC:032x}")


def test_the_launchers_trace_file_is_absolute_beside_its_log(tmp_path, monkeypatch):
    from pattern_runtime.launcher import TritonServer
    from pattern_runtime.serve_banner import describe_trace
    from pattern_runtime.server_settings import ServerSettings

    monkeypatch.chdir(tmp_path)  # tritonserver runs in the log folder: a relative path would land inside it
    server = TritonServer(ServerSettings(log_dir="logs", trace="rate=1"))
    (flag,) = [a for a in server.command() if a.startswith("--trace-config=triton,file=")]
    path = flag.split("file=", 1)[1]
    assert path == server.trace.file and path.startswith(str(tmp_path / "logs" / "trace-"))
    assert "WARNING" in describe_trace(server.trace) and "WARNING" not in describe_trace(TraceConfig(rate=1000))


def test_the_cli_takes_trace_settings_and_refuses_bad_ones(capsys):
    from pattern_tools import cli

    assert cli.parser().parse_args(["serve", "--trace", "rate=5"]).trace == TraceConfig(rate=5)
    assert cli.parser().parse_args(["predict", "serial", "rain", "--trace"]).trace is True
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["serve", "--trace", "rate=1,mode=opentelemetry"])
    assert "needs url=" in capsys.readouterr().err
