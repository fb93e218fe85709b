"""Drift monitor job: reads the newest records of a model's prediction log (a Redis stream
written by the circuit_breaker backend), recomputes the input features' statistics and compares
them with the training statistics in the reference model's manifest (`feature_stats`, written
by the export) through `pattern_jobs.feature_stats`.

    triton-patterns drift iris_breaker --redis redis://127.0.0.1:6379/0 --count 500

Exit status 0: no drift, 1: drift in at least one feature, 2: not enough data or no reference.
Run it on a schedule (cron, a Kubernetes CronJob) and alert on a non-zero exit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pattern_jobs import feature_stats
from pattern_kernel import prediction_log
from pattern_kernel.redis_link import REDIS_URL_ENV
from pattern_runtime import paths
from triton_patterns.endpoints import redis_url


class DriftError(RuntimeError):
    """Not enough data, or no training statistics to compare with."""


def reference_stats(reference: str, repository: Path = paths.MODEL_REPOSITORY) -> dict:
    """`feature_stats` of the manifest of `reference` ("model:version")."""
    model, _, version = reference.partition(":")
    path = Path(repository) / model / (version or "1") / "manifest.json"
    try:
        stats = json.loads(path.read_text()).get("feature_stats")
    except (OSError, ValueError) as exc:
        raise DriftError(f"no manifest for {reference} at {path}: {exc}") from None
    if not stats:
        raise DriftError(f"the manifest {path} has no feature_stats (re-export the model: make models)")
    return stats


def recent_features(records: list[dict], input_name: str | None = None) -> np.ndarray:
    """The logged input rows [rows, features] of one input (the first logged one by default);
    records whose input was logged as a summary (too many values) are skipped."""
    rows = []
    for r in records:
        inputs = r.get("inputs", {})
        name = input_name or next(iter(inputs), None)
        value = inputs.get(name)
        if isinstance(value, list):
            rows.extend(value)
    return np.asarray(rows, dtype=np.float64)


def check(
    client,
    model: str,
    stream: str | None = None,
    reference: str | None = None,
    count: int = 1000,
    min_rows: int = 30,
    input_name: str | None = None,
    psi_threshold: float = feature_stats.DEFAULT_PSI_THRESHOLD,
    z_threshold: float = feature_stats.DEFAULT_Z_THRESHOLD,
    repository: Path = paths.MODEL_REPOSITORY,
) -> dict:
    """The drift report of the newest `count` records of `model`'s prediction log."""
    stream = stream or prediction_log.stream_name(model)
    records = prediction_log.read_recent(client, stream, count)
    X = recent_features(records, input_name)
    if len(X) < min_rows:
        raise DriftError(f"{len(X)} logged rows in {stream}, fewer than the {min_rows} needed")
    reference = reference or next((r["reference"] for r in reversed(records) if r.get("reference")), None)
    if not reference:
        raise DriftError(f"no reference model: pass --reference MODEL:VERSION (the log {stream} names none)")
    report = feature_stats.compare(reference_stats(reference, repository), X, psi_threshold, z_threshold)
    return {"model": model, "stream": stream, "reference": reference, "records": len(records), **report}


def format_report(report: dict) -> str:
    head = (f"{report['model']}: {report['rows']} rows from {report['records']} records of {report['stream']} "
            f"vs training statistics of {report['reference']} (PSI >= {report['psi_threshold']} or "
            f"|z| >= {report['z_threshold']} is drift)")
    lines = [head, f"{'feature':<22}{'train mean':>11}{'recent':>9}{'z':>9}{'PSI':>8}  drift"]
    for f in report["features"]:
        lines.append(f"{f['feature']:<22}{f['train_mean']:>11.3f}{f['recent_mean']:>9.3f}{f['z']:>9.2f}"
                     f"{f['psi']:>8.3f}  {'DRIFT' if f['drift'] else 'ok'}")
    lines.append("drift detected" if report["drift"] else "no drift")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("model", help="the model whose prediction log to check, e.g. iris_breaker")
    parser.add_argument("--redis", default=None, help=f"Redis URL (default ${REDIS_URL_ENV} or redis://127.0.0.1:6379/0)")
    parser.add_argument("--stream", default=None, help="log stream (default prediction_log:MODEL)")
    parser.add_argument("--reference", default=None,
                        help="MODEL:VERSION whose manifest holds the training statistics (default: named in the log)")
    parser.add_argument("--count", type=int, default=1000, help="newest records to read (default %(default)s)")
    parser.add_argument("--min-rows", type=int, default=30, help="fewer rows is an error (default %(default)s)")
    parser.add_argument("--input", default=None, help="input tensor name (default: the first logged)")
    parser.add_argument("--psi-threshold", type=float, default=feature_stats.DEFAULT_PSI_THRESHOLD)
    parser.add_argument("--z-threshold", type=float, default=feature_stats.DEFAULT_Z_THRESHOLD)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def main(args) -> int:
    import sys

    import redis

    url = redis_url(args.redis)
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        report = check(client, args.model, args.stream, args.reference, args.count, args.min_rows, args.input,
                       args.psi_threshold, args.z_threshold)
    except (DriftError, redis.RedisError) as exc:
        print(f"drift: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    print(json.dumps(report) if args.json else format_report(report))
    return 1 if report["drift"] else 0
