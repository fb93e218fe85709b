"""`triton-patterns`: serve the repository, call a pattern, list models, run the demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pattern_kernel.redis_link import CACHE_REDIS_URL_ENV
from pattern_runtime import paths
from pattern_runtime.gateway import DEFAULT_BODY_LIMIT, DEFAULT_BURST, DEFAULT_RATE
from pattern_runtime.processes import StartError
from pattern_runtime.redis_server import APPENDFSYNC
from pattern_runtime.service import (
    DEFAULT_LOG_KEEP,
    DEFAULT_LOG_MAX_BYTES,
    DEFAULT_MAX_RESTARTS,
    SERVE_EXIT_TIMEOUT_S,
    default_log_dir,
)
from pattern_runtime.services import CACHE_MAXMEMORY, DEFAULT_APPENDFSYNC, DEFAULT_STORE, QUEUE_MAXMEMORY
from triton_patterns.endpoints import DEFAULT_REDIS_PORT, REDIS_URL_ENV, metrics_url, server_url
from triton_patterns.patterns import PATTERNS


def _value(spec, raw: str):
    """A CLI argument as the pattern's input: comma-separated numbers, a file path, or text."""
    if spec.argument == "text":
        return raw
    if spec.argument == "file":
        path = Path(raw)
        if not path.is_file():
            raise SystemExit(f"{spec.name}: expected a path to a file for input {spec.input}, got {raw!r}")
        return path.read_bytes()
    try:
        return [float(x) for x in raw.split(",")]
    except ValueError:
        raise SystemExit(f"{spec.name}: expected comma-separated numbers for input {spec.input}, got {raw!r}") from None


def cmd_predict(args) -> int:
    from triton_patterns.client import PatternClient, PatternError

    spec = PATTERNS[args.pattern]
    parameters = dict(p.split("=", 1) for p in args.param)
    with PatternClient(args.url, protocol=args.protocol, trace=args.trace) as client:
        try:
            predictions = client.predict(args.pattern, _value(spec, args.value), args.model_version, args.model,
                                         parameters)
        except PatternError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    for p in predictions:
        print(json.dumps(p.as_dict()))
    return 0


def cmd_models(args) -> int:
    from pattern_tools.demo import show_models

    show_models(args.url)
    return 0


def cmd_serve(args) -> int:
    from pattern_kernel.access import GrpcTls
    from pattern_runtime.gateway import GatewayTls, is_loopback
    from pattern_runtime.logrotation import LogRotationError
    from pattern_runtime.serve_models import default_serve_models
    from pattern_runtime.server_settings import ServerSettings
    from pattern_runtime.service import serve
    from pattern_runtime.services import RedisSettings, serve_services

    tls = None
    if args.grpc_tls_cert or args.grpc_tls_key:
        if not (args.grpc_tls_cert and args.grpc_tls_key):
            raise SystemExit("serve: --grpc-tls-cert and --grpc-tls-key go together")
        tls = GrpcTls(Path(args.grpc_tls_cert), Path(args.grpc_tls_key),
                      Path(args.grpc_tls_root_cert) if args.grpc_tls_root_cert else None, args.grpc_tls_mutual)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("serve: --tls-cert and --tls-key go together")
    gateway = None
    if args.gateway or args.tls_cert or not is_loopback(args.host):
        gateway = {"host": args.host, "http_port": args.http_port, "grpc_port": args.grpc_port,
                   "tls": GatewayTls(Path(args.tls_cert), Path(args.tls_key)) if args.tls_cert else None,
                   "rate": args.rate, "burst": args.burst, "body_limit": args.body_limit}
    for name in ("log_keep", "max_restarts", "exit_timeout_secs"):
        if getattr(args, name) < (1 if name == "log_keep" else 0):
            raise SystemExit(f"serve: --{name.replace('_', '-')} must be at least {1 if name == 'log_keep' else 0}, "
                             f"not {getattr(args, name)}")
    log_dir = Path(args.log_dir)
    repositories = args.model_repository or paths.MODEL_REPOSITORIES
    models = args.load_model or (None if args.all_models else default_serve_models(repositories))
    try:
        with serve_services(args.redis_url, args.redis_port, args.data_store, args.cache_redis_url,
                            RedisSettings(args.data_dir, args.appendfsync, args.redis_maxmemory, args.cache_maxmemory),
                            log_dir=log_dir) as parts:
            settings = ServerSettings(
                model_repository=repositories, project_backends=args.backends, server_venv=args.server_venv,
                host=args.host, http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                load_models=models, env=parts.env, trace=args.trace, restrict_admin_apis=not args.open_admin_apis,
                grpc_tls=tls)
            return serve(settings, gateway=gateway, servers=parts.servers, notes=parts.notes, log_dir=log_dir,
                         log_max_bytes=args.log_max_size, log_keep=args.log_keep, max_restarts=args.max_restarts,
                         exit_timeout_s=args.exit_timeout_secs)
    except (StartError, LogRotationError) as err:
        raise SystemExit(f"serve: {err}") from None


def _log_size(text: str) -> int:
    from pattern_runtime.logrotation import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _trace_config(text: str):
    from pattern_kernel.trace_config import TraceConfig

    try:
        return TraceConfig.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_seed_store(args) -> int:
    from pattern_runtime.services import seed_store

    counts = seed_store(args.path, digits=args.digits)
    print(f"seeded {args.path}: {counts['image']} images (digit-<i>), {counts['text']} texts (text-<i>)")
    return 0


def cmd_batch(args) -> int:
    from pattern_jobs.batch_job import main as batch_main

    return batch_main(args)


def cmd_submit(args) -> int:
    from triton_patterns.client import PatternClient, PatternError

    with PatternClient(args.url, protocol=args.protocol) as client:
        try:
            text = client._input_spec(args.model).datatype == "BYTES"
            value = args.value if text else [float(x) for x in args.value.split(",")]
            print(client.submit(value, model=args.model, target=args.target, idempotency_key=args.idempotency_key))
        except ValueError:
            raise SystemExit(f"{args.model}: expected comma-separated numbers, got {args.value!r}") from None
        except PatternError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


def cmd_result(args) -> int:
    """result: the state now; wait: until the job ends or --timeout (exit 0 done, 1 failed, 3 not ended)."""
    from triton_patterns.client import PatternClient, PatternError

    with PatternClient(args.url, protocol=args.protocol) as client:
        try:
            if args.command == "wait":
                result = client.wait(args.job_id, timeout_s=args.timeout, redis_url=args.redis)
            else:
                result = client.result(args.job_id)
        except PatternError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(result.as_dict()))
    return {"done": 0, "failed": 1}.get(result.status, 3) if args.command == "wait" else 0


def cmd_metrics(args) -> int:
    """Print the metrics endpoint's samples whose name matches --match (a regular expression)."""
    import re

    from pattern_tools.monitoring import scrape

    pattern = re.compile(args.match)
    for sample in scrape(args.url):
        if pattern.search(sample.name):
            labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
            print(f"{sample.name}{{{labels}}} {sample.value:g}")
    return 0


def cmd_edge(args) -> int:
    from pattern_runtime.edge import EdgeClient, EdgeUnavailable

    value = Path(args.value).read_bytes() if args.task == "digits" else args.value
    with EdgeClient(args.task, url=args.url, protocol=args.protocol, min_confidence=args.min_confidence) as client:
        try:
            prediction = client.predict(value)
        except EdgeUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(prediction.as_dict()))
    return 0


def cmd_demo(args) -> int:
    from pattern_tools.demo import main as demo_main

    return demo_main(args.url)


def _delegated(sub, name: str, help: str, module: str):
    """A subcommand whose arguments and body live in `module` (dotted; its `add_arguments` and `main`)."""
    import importlib

    mod = importlib.import_module(module)
    command = sub.add_parser(name, help=help)
    mod.add_arguments(command)
    command.set_defaults(func=mod.main)
    return command


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="triton-patterns", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run tritonserver on the repository (restarts it if it dies)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default %(default)s); any other than loopback puts the "
                            "nginx gateway in front (docs/deploy.md)")
    serve.add_argument("--gateway", action="store_true",
                       help="serve through the nginx gateway (keys, limits, shape checks at the edge) on loopback too")
    serve.add_argument("--tls-cert", help="PEM certificate: the gateway serves HTTP and gRPC over TLS (with --tls-key)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--rate", default=DEFAULT_RATE, help="the gateway's rate limit per client (default %(default)s)")
    serve.add_argument("--burst", type=int, default=DEFAULT_BURST,
                       help="requests beyond the rate served at once before 429s (default %(default)s)")
    serve.add_argument("--body-limit", default=DEFAULT_BODY_LIMIT,
                       help="the gateway's request body limit (default %(default)s)")
    serve.add_argument("--model-repository", action="append",
                       help="a model repository; repeat it to serve several (default: the project's two, "
                            "model_repository and model_repository_test)")
    serve.add_argument("--backends", default=paths.BACKENDS,
                       help="folder of Python-based backends, one folder with a model.py each (default: the project's)")
    serve.add_argument("--server-venv", help="virtualenv whose python3 runs the Python stubs (default "
                                             "$TRITON_PATTERNS_SERVER_VENV, else .venv-server: make server-venv)")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--grpc-tls-cert", help="PEM certificate: serve gRPC over TLS (with --grpc-tls-key)")
    serve.add_argument("--grpc-tls-key", help="PEM private key of --grpc-tls-cert")
    serve.add_argument("--grpc-tls-root-cert", help="PEM CA of the clients' certificates (mutual TLS)")
    serve.add_argument("--grpc-tls-mutual", action="store_true", help="require client certificates")
    serve.add_argument("--redis-url", default=os.environ.get(REDIS_URL_ENV) or None,
                       help=f"use this Redis (default ${REDIS_URL_ENV}; unset: start redis-server on --redis-port)")
    serve.add_argument("--redis-port", type=int, default=DEFAULT_REDIS_PORT,
                       help="port of the embedded redis-server (default %(default)s; 0: a free port)")
    serve.add_argument("--cache-redis-url", default=os.environ.get(CACHE_REDIS_URL_ENV) or None,
                       help=f"the caches' Redis (default ${CACHE_REDIS_URL_ENV}; unset: --redis-url if given, "
                            "else a redis-server of its own on a free port)")
    serve.add_argument("--data-dir", default=None,
                       help="the queue's Redis data (append-only file), kept across restarts (default "
                            "$TRITON_PATTERNS_STATE_DIR/redis, else ~/.local/state/triton-patterns/redis)")
    serve.add_argument("--appendfsync", default=DEFAULT_APPENDFSYNC, choices=APPENDFSYNC,
                       help="the queue's Redis flushes its file to disk every second (default: a power cut loses "
                            "up to ~1 s of jobs) or on every write (always: slower, loses none; docs/reliability.md)")
    serve.add_argument("--redis-maxmemory", default=QUEUE_MAXMEMORY,
                       help="the queue's Redis memory; when full, submits are refused (default %(default)s)")
    serve.add_argument("--cache-maxmemory", default=CACHE_MAXMEMORY,
                       help="the caches' Redis memory; when full, the least recently used keys go "
                            "(default %(default)s)")
    serve.add_argument("--load-model", action="append", metavar="NAME",
                       help="load only this model (repeat for more; default: every model but those only "
                            "benchmarks use, see --all-models)")
    serve.add_argument("--data-store", default=DEFAULT_STORE,
                       help="the data cache's SQLite store, seeded when empty (default %(default)s)")
    serve.add_argument("--open-admin-apis", action="store_true",
                       help="no admin key for the model-repository, shared-memory, logging and trace APIs, for "
                            "local tools that cannot send headers (model-analyzer); the server listens on "
                            "127.0.0.1 only (docs/tuning.md)")
    serve.add_argument("--log-dir", default=default_log_dir(),
                       help="every log (tritonserver, Redis, the gateway's access and error logs), kept after a "
                            "stop (default $TRITON_PATTERNS_STATE_DIR/logs, else %(default)s)")
    serve.add_argument("--log-max-size", type=_log_size, default=DEFAULT_LOG_MAX_BYTES, metavar="SIZE",
                       help="rotate a log past this size, e.g. 10M or 512k (default 10M; 0: no rotation), with "
                            "logrotate (Debian's package)")
    serve.add_argument("--log-keep", type=int, default=DEFAULT_LOG_KEEP,
                       help="rotations kept per log; older ones are deleted (default %(default)s)")
    serve.add_argument("--max-restarts", type=int, default=DEFAULT_MAX_RESTARTS,
                       help="restarts of tritonserver, and of the gateway, before serve gives up and exits 1 "
                            "(default %(default)s)")
    serve.add_argument("--exit-timeout-secs", type=int, default=SERVE_EXIT_TIMEOUT_S,
                       help="tritonserver's wait on stop for requests and connections still open and models "
                            "unloading, after the gateway has stopped (default %(default)s; Triton's own: 30)")
    serve.add_argument("--all-models", action="store_true",
                       help="load every model of the repository, also those only benchmarks and tests use "
                            "(heavy_mlp; docs/reliability.md, restart time)")
    serve.add_argument("--trace", default=None, type=_trace_config, metavar="SETTINGS",
                       help="trace requests: rate=N (one in N; 1 every request), in triton mode to a file beside "
                            "the log (file=PATH), or mode=opentelemetry,url=http://HOST:4318/v1/traces (OTLP/HTTP); "
                            "also count=N, log_frequency=N, service=NAME (docs/patterns/monitoring.md)")
    serve.set_defaults(func=cmd_serve)

    predict = sub.add_parser(
        "predict",
        help="call one pattern",
        epilog="patterns: " + "; ".join(f"{s.name} ({s.summary}), e.g. {s.example}" for s in PATTERNS.values()),
    )
    predict.add_argument("pattern", choices=sorted(PATTERNS))
    predict.add_argument("value", help="comma-separated features, an image file path, or text (see patterns below)")
    predict.add_argument("--model-version", default=None, help="model version (default: latest)")
    predict.add_argument("--model", default=None, help="another model of the same pattern (e.g. iris_cascade_degraded)")
    predict.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                         help="request parameter, e.g. user_id=u1 for canary/ab_test, target=v1 for route (repeatable)")
    predict.add_argument("--trace", action="store_true",
                         help="send a W3C traceparent; the answer's trace_id finds the request's spans "
                              "(OpenTelemetry mode)")
    predict.set_defaults(func=cmd_predict)

    models = sub.add_parser("models", help="repository index: models, versions, readiness")
    models.set_defaults(func=cmd_models)

    seed = sub.add_parser("seed-store", help="load the data cache's SQLite store with digits and texts")
    seed.add_argument("path", nargs="?", default=DEFAULT_STORE)
    seed.add_argument("--digits", type=int, default=100)
    seed.set_defaults(func=cmd_seed_store)

    batch = sub.add_parser("batch", help="batch pattern: predict over stored records (seed, run)")
    actions = batch.add_subparsers(dest="action", required=True)
    batch_seed = actions.add_parser("seed", help="load the held-out iris rows and/or the text set as records")
    batch_seed.add_argument("--kind", choices=("iris", "text", "all"), default="iris")
    batch_seed.add_argument("--repeat", type=int, default=1, help="copies of each row, under distinct keys")
    batch_run = actions.add_parser("run", help="predict the records without a prediction from the current version")
    batch_run.add_argument("--url", default=None, help="gRPC address; default: start tritonserver and Redis")
    batch_run.add_argument("--model", default="iris")
    batch_run.add_argument("--model-version", default=None, help="default: the latest READY version")
    batch_run.add_argument("--retry", choices=("all", "failed", "none"), default="failed", help="retry policy")
    batch_run.add_argument("--max-attempts", type=int, default=3)
    batch_run.add_argument("--chunk-size", type=int, default=64, help="rows per request")
    batch_run.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    batch_run.add_argument("--shard", default="0/1", help="i/n: this job's records (id %% n == i)")
    batch_run.add_argument("--limit", type=int, default=None, help="at most this many records per run")
    batch_run.add_argument("--retry-delay", type=float, default=0.5, help="seconds between passes")
    batch_run.add_argument("--no-progress", action="store_true")
    batch_run.add_argument("--json", action="store_true", help="print the summary as JSON")
    for action in (batch_seed, batch_run):
        action.add_argument("--db", default=None,
                            help="SQLAlchemy URL (default: $TRITON_PATTERNS_BATCH_DB or sqlite:///build/batch.sqlite)")
    batch.set_defaults(func=cmd_batch)

    submit = sub.add_parser("submit", help="asynchronous pattern: queue a job, print its id")
    submit.add_argument("value", help="comma-separated features, or text for a text model")
    submit.add_argument("--model", default="iris_async_submit", help="submit model (e.g. text_async_submit)")
    submit.add_argument("--target", default=None, help="one of the model's targets, e.g. iris_slow or iris:1")
    submit.add_argument("--idempotency-key", default=None,
                        help="your key for this job: submitting it again (a retry) prints the first job's id")
    submit.set_defaults(func=cmd_submit)
    result = sub.add_parser("result", help="asynchronous pattern: a job's state and result now")
    wait = sub.add_parser("wait", help="asynchronous pattern: a job's result once it ends (Redis notification)")
    for command in (result, wait):
        command.add_argument("job_id")
        command.set_defaults(func=cmd_result)
    wait.add_argument("--timeout", type=float, default=30.0, help="seconds (default %(default)s)")
    wait.add_argument("--redis", default=None,
                      help="Redis URL for the notification (default $TRITON_PATTERNS_REDIS_URL)")

    _delegated(sub, "worker", "asynchronous pattern: run job workers until SIGTERM", "pattern_jobs.async_worker")
    _delegated(sub, "trace", "one traced request: its waterfall (every model, queue, compute, nested under the step "
                             "that called it) as text and PNG", "pattern_tools.trace")
    _delegated(sub, "check", "check the model repository statically (configs, files, references)",
               "pattern_tools.repo_check")
    _delegated(sub, "perf", "perf_analyzer on one model: input data, libraries and URL set up "
                            "(further arguments go to perf_analyzer)", "pattern_tools.perf")
    _delegated(sub, "drift", "monitor job: recent logged inputs vs the training statistics (exit 1: drift)",
               "pattern_jobs.drift")
    _delegated(sub, "captures", "a serial or parallel model's sampled captures: each step's inputs and outputs",
               "pattern_tools.captures")

    metrics = sub.add_parser("metrics", help="print Triton's and the patterns' Prometheus metrics")
    metrics.add_argument("--url", default=None,
                         help="metrics address (default $TRITON_PATTERNS_METRICS_URL or 127.0.0.1:8002)")
    metrics.add_argument("--match", default="circuit_breaker|fallbacks|cache|prediction_log|router",
                         help="regular expression on metric names (default %(default)r)")
    metrics.set_defaults(func=cmd_metrics)

    _delegated(sub, "tune", "Triton Model Analyzer on one model and the models it calls, on a server of its own: "
                            "reports/tune/<model>/ (docs/tuning.md)", "pattern_tools.tune")

    _delegated(sub, "new", "inference template: a new model or pipeline (onnx, python, ensemble, pattern)",
               "pattern_tools.template")

    edge = sub.add_parser("edge", help="edge AI: predict with the local INT8 model, the server when unsure")
    edge.add_argument("task", choices=("digits", "text"))
    edge.add_argument("value", help="an image file (digits) or text")
    edge.add_argument("--url", default=None, help="server to ask when unsure or without a local model")
    edge.add_argument("--protocol", choices=("http", "grpc"), default="http")
    edge.add_argument("--min-confidence", type=float, default=0.9, help="below this top score, ask the server")
    edge.set_defaults(func=cmd_edge)

    _delegated(sub, "bluegreen", "blue-green release: load, warm up, check (accuracy gate), switch the router, "
                                 "unload the old version (explicit mode)", "pattern_jobs.bluegreen")

    from pattern_jobs.rollouts import add_weights_arguments, cmd_shadow_log, cmd_weights

    weights = sub.add_parser("weights", help="a router's split weights in force; set them in Redis (no restart)")
    add_weights_arguments(weights)
    weights.set_defaults(func=cmd_weights)
    shadow_log = sub.add_parser("shadow-log", help="a shadow router's newest comparisons (primary vs candidate)")
    shadow_log.add_argument("model", help="a router model in shadow mode, e.g. iris_shadow")
    shadow_log.add_argument("--count", type=int, default=10)
    shadow_log.set_defaults(func=cmd_shadow_log)
    for command in (weights, shadow_log):
        command.add_argument("--url", default=None, help="server HTTP address, for the model's config "
                                                          "(default $TRITON_PATTERNS_URL or 127.0.0.1:8000)")
        command.add_argument("--redis", default=None,
                             help="Redis URL (default $TRITON_PATTERNS_REDIS_URL or local 6379)")

    demo = sub.add_parser("demo", help="start everything, call every pattern, print, stop")
    demo.set_defaults(func=cmd_demo)

    for command in (predict, models, submit, result, wait):
        command.add_argument("--url", default=None, help="server address (default $TRITON_PATTERNS_URL or "
                                                          "127.0.0.1:8000; gRPC: $TRITON_PATTERNS_GRPC_URL "
                                                          "or 127.0.0.1:8001)")
        command.add_argument("--protocol", choices=("http", "grpc"), default="http")
    demo.add_argument("--url", default=None, help="use a running server instead of starting one")
    return p


# commands whose --url defaults to the server (or metrics) address from the environment
_SERVER_URL_COMMANDS = ("predict", "models", "submit", "result", "wait", "weights", "shadow-log")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command in _SERVER_URL_COMMANDS and args.url is None:
        args.url = server_url(getattr(args, "protocol", "http"))
    elif args.command == "metrics" and args.url is None:
        args.url = metrics_url()
    try:
        return args.func(args)
    except StartError as exc:  # a missing program or library, a server that would not start: its message says why
        print(f"triton-patterns {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
