"""What `triton-patterns serve` prints once it runs: where each part listens, who may call what,
tracing, the logs, and the models with their state (`print_banner`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pattern_kernel.access import ADMIN_KEY_ENV
from pattern_kernel.trace_config import TraceConfig
from pattern_runtime.admin_key import admin_key_file
from pattern_runtime.gateway import Gateway, is_loopback
from pattern_runtime.launcher import TritonServer
from pattern_runtime.logrotation import LogRotation


def gateway_notes(front: Gateway | None) -> list[str]:
    if front is None:
        return []
    tls = " over TLS" if front.tls else ""
    notes = [f"gateway  {front.http_url}, gRPC {front.grpc_address}{tls} (nginx pid {front.pid}) "
             f"-> tritonserver on 127.0.0.1"]
    if front.tls is None and not is_loopback(front.host):
        notes.append(f"WARNING: no TLS on {front.host}: give --tls-cert and --tls-key")
    return notes


def log_note(log_dir: Path, rotation: LogRotation | None) -> str:
    if rotation is None:
        return f"logs     {log_dir} (not rotated)"
    return (f"logs     {log_dir} (each log rotated past {_size(rotation.max_bytes)}, "
            f"{rotation.keep} rotations kept)")


def _size(count: int) -> str:
    for unit, factor in (("G", 2**30), ("M", 2**20), ("k", 2**10)):
        if count >= factor and count % factor == 0:
            return f"{count // factor}{unit}"
    return f"{count} bytes"


def _describe_access(server: TritonServer) -> str:
    """Which API groups need which header (no key printed), and where the admin key is."""
    parts = [f"{','.join(apis)}: header {header}" for apis, header, _ in server.access.groups()]
    if server.access.admin_key is None:
        parts.append(f"admin APIs open to local tools ({server.host} only)")
    if server.access.api_key is None:
        parts.append("inference open")
    if server.settings.grpc_tls is not None:
        parts.append("gRPC over TLS")
    if server.access.admin_key is not None:
        parts.append(f"admin key in ${ADMIN_KEY_ENV} or {admin_key_file()}")
    return "; ".join(parts)


TRACE_RATE_SAFE = 100  # below: the banner warns (docs/patterns/monitoring.md, tracing)


def describe_trace(trace: TraceConfig) -> str:
    where = trace.file + ".N" if trace.mode == "triton" else trace.url
    if not trace.on:
        return f"off (triton-patterns trace turns it on per model; traces to {where})" if trace.mode == "triton" \
            else "off"
    risky = "; WARNING: tracing this often under load crashed Triton 2.51 here (server #7795, fixed in 2.57)" \
        if trace.rate < TRACE_RATE_SAFE else ""
    return f"1 request in {trace.rate}, {trace.mode} mode, to {where}{risky}"


def print_banner(server: TritonServer, notes: Sequence[str] = ()) -> None:
    print(f"tritonserver pid {server.pid} ready")
    print(f"  HTTP     http://{server.http_url}")
    print(f"  gRPC     {server.grpc_url}")
    print(f"  metrics  {server.metrics_url}")
    print(f"  log      {server.log_path}")
    print(f"  stubs    {server.stub_python} (the server virtualenv: pattern_kernel and the backends' libraries)")
    print(f"  access   {_describe_access(server)}")
    print(f"  trace    {describe_trace(server.trace)}")
    for note in notes:
        print(f"  {note}")
    try:
        index = server.model_index()
    except OSError as err:  # e.g. the repository API is restricted
        index = []
        print(f"  (model index unavailable: {err})")
    for model in index:
        print(f"  model    {model.get('name')} v{model.get('version', '-')}  {model.get('state', '')}")
    print("Ctrl-C to stop", flush=True)
