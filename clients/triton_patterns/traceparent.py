"""W3C trace context for a request: the `traceparent` header (HTTP) or metadata (gRPC) that makes a
server tracing in OpenTelemetry mode record the request's spans in the caller's trace.

With the OpenTelemetry API installed and a span of the caller's current (its own instrumentation),
that span is the parent; otherwise a new trace id and span id are drawn for the call (the server's
root span then names that span id, which nothing exports, as its parent).
"""

from __future__ import annotations

import secrets

try:  # optional: the caller's own OpenTelemetry instrumentation
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - depends on the environment
    _otel_trace = None

HEADER = "traceparent"


def traceparent() -> tuple[str, str]:
    """(the header's value, its trace id in hex)."""
    if _otel_trace is not None:
        context = _otel_trace.get_current_span().get_span_context()
        if context.is_valid:
            trace_id = f"{context.trace_id:032x}"
            return f"00-{trace_id}-{context.span_id:016x}-{int(context.trace_flags):02x}", trace_id
    trace_id = secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01", trace_id
