"""Triton's request tracing as one value: parsed from `serve --trace rate=N,mode=...,url=...`, turned
into tritonserver's `--trace-config` flags.

Two modes (both compiled into the 2.51 wheel's tritonserver, checked here):
- "triton": the trace of each sampled request (its models, queue, compute and their BLS and
  ensemble children) as JSON in `file`; with `log_frequency` 1 each trace is written as soon
  as it is done, to `<file>.<n>`. Off (`rate=0`) but with a file, the trace API can still turn
  it on per model: `triton-patterns trace` does.
- "opentelemetry": spans sent as OTLP/HTTP (JSON) to `url`, e.g. a collector's
  `http://HOST:4318/v1/traces`; a request's W3C `traceparent` header becomes its root span's
  parent, so the client's span and the server's join.

Stdlib only: the server images' command (`server_command`) uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

MODES = ("triton", "opentelemetry")


@dataclass(frozen=True)
class TraceConfig:
    rate: int = 0  # trace one request in `rate` (1: every request); 0: off (level OFF)
    mode: str = "triton"
    file: str = ""  # triton mode: where traces go (`<file>.<n>` with log_frequency > 0)
    log_frequency: int = 1  # triton mode: write every n traces; 0 only at shutdown
    url: str = ""  # opentelemetry mode: the OTLP/HTTP endpoint
    service: str = "triton-patterns"  # opentelemetry mode: the resource's service.name
    count: int = -1  # stop after this many traces; -1 never

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"trace mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.rate < 0:
            raise ValueError(f"trace rate must be >= 0 (0: off, 1: every request), not {self.rate}")
        if self.mode == "opentelemetry" and self.rate and not self.url:
            raise ValueError("trace mode opentelemetry needs url=http://HOST:4318/v1/traces (an OTLP/HTTP endpoint)")

    @property
    def on(self) -> bool:
        return self.rate > 0

    @classmethod
    def parse(cls, text: str, **defaults) -> TraceConfig:
        """`rate=1000`, `rate=1,mode=opentelemetry,url=http://127.0.0.1:4318/v1/traces`, ...: the
        fields by name, comma-separated; `defaults` for the fields not given (e.g. file)."""
        known = {f.name: f.type for f in fields(cls)}
        values = dict(defaults)
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in known:
                raise ValueError(f"trace setting {item!r}: expected one of {', '.join(known)} as key=value")
            values[key] = int(value) if known[key] == "int" else value.strip()
        return cls(**values)

    def with_defaults(self, **defaults) -> TraceConfig:
        """This config with `defaults` filled into the fields left empty (e.g. the launcher's file)."""
        return replace(self, **{k: v for k, v in defaults.items() if not getattr(self, k)})

    def server_flags(self) -> list[str]:
        flags = [f"--trace-config=mode={self.mode}",
                 f"--trace-config=level={'TIMESTAMPS' if self.on else 'OFF'}",
                 f"--trace-config=rate={self.rate or 1000}",
                 f"--trace-config=count={self.count}"]
        if self.mode == "triton":
            if self.file:
                flags += [f"--trace-config=triton,file={self.file}",
                          f"--trace-config=triton,log-frequency={self.log_frequency}"]
        elif self.url:
            flags += [f"--trace-config=opentelemetry,url={self.url}",
                      f"--trace-config=opentelemetry,resource=service.name={self.service}"]
        return flags
