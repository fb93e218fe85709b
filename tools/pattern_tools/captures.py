"""`triton-patterns captures MODEL`: the newest sampled captures of a serial or parallel model
(each step's inputs and outputs, `pattern_kernel.capture`) read back from its prediction-log
stream, as text (a block per request: its inputs, every step with its tensors, its outputs) or
as JSON lines (`--json`).

    triton-patterns captures text_classify_bls --count 3 --request-id r-42
"""

from __future__ import annotations

import json
import sys

from pattern_kernel import prediction_log
from pattern_kernel.capture import read_captures
from pattern_kernel.redis_link import REDIS_URL_ENV
from triton_patterns.endpoints import redis_url

SHOWN_VALUES = 6  # values of a tensor the text shows


def format_tensor(tensor: dict) -> str:
    """One tensor of a capture on one line: dtype, shape, its first values, any note."""
    if "same_as" in tensor:
        return f"= {tensor['same_as']}"
    head = f"{tensor['dtype']}{tensor['shape']}"
    if "omitted" in tensor:
        return f"{head} omitted ({tensor['omitted']})"
    values = tensor["values"]
    shown = ", ".join(str(v) if not isinstance(v, str) else json.dumps(v[:40]) for v in values[:SHOWN_VALUES])
    text = f"{head} [{shown}{', ...' if len(values) > SHOWN_VALUES else ''}]"
    if "truncated" in tensor:
        stats = ", ".join(f"{k} {tensor[k]:g}" for k in ("mean", "std", "min", "max") if k in tensor)
        text += f"  ({tensor['truncated']}{'; ' + stats if stats else ''})"
    return text


def _tensors(lines: list, indent: str, label: str, tensors: dict) -> None:
    lines += [f"{indent}{label} {name}: {format_tensor(t)}" for name, t in tensors.items()]


def format_capture(capture: dict) -> str:
    """A capture as text, its steps in order, so that the first step with a wrong output shows."""
    head = (f"{capture['id']}  {capture['model']}  request_id={capture.get('request_id') or '-'}  "
            f"{capture['latency_ms']:.1f} ms")
    if capture.get("reason"):
        head += f"  [{capture['reason']}]"
    if capture["truncated"]:
        head += f"  (cut to capture_max_bytes={capture.get('capture_max_bytes')})"
    lines = [head]
    _tensors(lines, "  ", "in ", capture["inputs"])
    for step in capture["steps"]:
        if "step" not in step:  # the steps themselves did not fit
            lines.append(f"  steps: {step}")
            continue
        ms = f" {step['ms']} ms" if "ms" in step else ""
        error = f": {step['error']}" if step.get("error") else ""
        lines.append(f"  step {step['step']} -> {step['model']} v{step['version']}: {step.get('status')}{ms}{error}")
        _tensors(lines, "    ", "in ", step.get("inputs", {}))
        _tensors(lines, "    ", "out", step.get("outputs", {}))
    _tensors(lines, "  ", "out", capture["outputs"])
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("model", help="a serial or parallel model with capture_rate > 0, e.g. text_classify_bls")
    parser.add_argument("--redis", default=None, help=f"Redis URL (default ${REDIS_URL_ENV} or redis://127.0.0.1:6379/0)")
    parser.add_argument("--stream", default=None, help="the stream (default prediction_log:MODEL)")
    parser.add_argument("--count", type=int, default=10, help="newest stream entries to read (default %(default)s)")
    parser.add_argument("--request-id", default=None, help="only the captures of this request id")
    parser.add_argument("--json", action="store_true", help="one JSON object per capture")


def main(args) -> int:
    import redis

    stream = args.stream or prediction_log.stream_name(args.model)
    client = redis.Redis.from_url(redis_url(args.redis), socket_timeout=5)
    try:
        captures = read_captures(client, stream, args.count, args.request_id)
    except redis.RedisError as exc:
        print(f"captures: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    if not captures:
        print(f"captures: none among the newest {args.count} entries of {stream} (capture_rate 0, the default, "
              f"captures nothing)", file=sys.stderr)
        return 1
    for capture in captures:
        print(json.dumps(capture) if args.json else format_capture(capture) + "\n")
    return 0
