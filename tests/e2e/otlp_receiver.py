"""A small OTLP/HTTP trace receiver: the instrument of the OpenTelemetry tracing test.

No OpenTelemetry collector is installable here (not in Debian's or PyPI's packages; the compose
stack runs the real one), so this stands in for the collector's receiving end only: it accepts
`POST /v1/traces` with an `ExportTraceServiceRequest` in OTLP's JSON encoding, which is what
Triton 2.51's exporter sends (opentelemetry-cpp 1.13, `Content-Type: application/json`, ids in
hex), and keeps the spans for the test to read. Anything else is refused with 415.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: dict = field(default_factory=dict)
    events: list[str] = field(default_factory=list)


def _value(any_value: dict):
    return next(iter(any_value.values()), None)  # {"stringValue": "x"}, {"intValue": "3"}, ...


def spans_of(body: bytes) -> list[Span]:
    """The spans of an OTLP/JSON ExportTraceServiceRequest."""
    request = json.loads(body)
    return [
        Span(s["traceId"], s["spanId"], s.get("parentSpanId", ""), s["name"], int(s["startTimeUnixNano"]),
             int(s["endTimeUnixNano"]), {a["key"]: _value(a["value"]) for a in s.get("attributes", [])},
             [e["name"] for e in s.get("events", [])])
        for resource in request.get("resourceSpans", []) for scope in resource.get("scopeSpans", [])
        for s in scope.get("spans", [])
    ]


class OtlpReceiver:
    """`with OtlpReceiver() as receiver:` listens on a free port of 127.0.0.1; `receiver.url` is
    the endpoint to give Triton; `wait_for(predicate)` waits for spans to arrive."""

    def __init__(self):
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                if not self.headers.get("Content-Type", "").startswith("application/json"):
                    self.send_error(415, "OTLP/JSON only")
                    return
                with receiver._lock:
                    receiver.spans += spans_of(body)
                reply = b"{}"  # an ExportTraceServiceResponse with nothing rejected
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def __enter__(self) -> OtlpReceiver:
        threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate, timeout_s: float = 30.0) -> list[Span]:
        """The spans once `predicate(spans)` holds; AssertionError with what came after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"the spans Triton sent within {timeout_s} s do not match: "
                                     f"{[(s.name, s.trace_id, s.attributes) for s in spans]}")
            time.sleep(0.2)
