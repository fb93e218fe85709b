"""`triton-patterns`: serve the repository, call a pattern, list models, run the demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .patterns import PATTERNS


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
    from .client import PatternClient, PatternError

    spec = PATTERNS[args.pattern]
    with PatternClient(args.url, protocol=args.protocol) as client:
        try:
            predictions = client.predict(args.pattern, _value(spec, args.value), args.model_version, args.model)
        except PatternError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    for p in predictions:
        print(json.dumps(p.as_dict()))
    return 0


def cmd_models(args) -> int:
    from .demo import show_models

    show_models(args.url)
    return 0


def cmd_serve(args) -> int:
    from .launcher import serve

    serve(http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port)
    return 0


def cmd_seed_store(args) -> int:
    from .data_store import seed_store

    counts = seed_store(args.path, digits=args.digits)
    print(f"seeded {args.path}: {counts['image']} images (digit-<i>), {counts['text']} texts (text-<i>)")
    return 0


def cmd_demo(args) -> int:
    from .demo import main as demo_main

    return demo_main(args.url)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="triton-patterns", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run tritonserver on the repository (restarts it if it dies)")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--metrics-port", type=int, default=8002)
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
    predict.set_defaults(func=cmd_predict)

    models = sub.add_parser("models", help="repository index: models, versions, readiness")
    models.set_defaults(func=cmd_models)

    seed = sub.add_parser("seed-store", help="load the data cache's SQLite store with digits and texts")
    seed.add_argument("path", nargs="?", default="/tmp/triton_patterns_data_store.sqlite")
    seed.add_argument("--digits", type=int, default=100)
    seed.set_defaults(func=cmd_seed_store)

    demo = sub.add_parser("demo", help="start everything, call every pattern, print, stop")
    demo.set_defaults(func=cmd_demo)

    for command in (predict, models):
        command.add_argument("--url", default="127.0.0.1:8000", help="server address (default %(default)s)")
        command.add_argument("--protocol", choices=("http", "grpc"), default="http")
    demo.add_argument("--url", default=None, help="use a running server instead of starting one")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
