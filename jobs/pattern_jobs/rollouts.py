"""Run-time control of the router models (backends/router): the weights of a split in Redis, which
the router re-reads every `weights_refresh_s` (a canary step without restart or reload), and the
shadow comparisons a shadow router writes to its Redis stream.

    triton-patterns weights iris_canary                         # in force: Redis or config
    triton-patterns weights iris_canary stable=50 canary=50     # takes effect within ~1 s
    triton-patterns weights iris_canary --reset                 # back to the config's weights
    triton-patterns shadow-log iris_shadow --count 5

The Redis key and stream names come from the model's config (read from the server).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import redis
import tritonclient.http as httpclient

from pattern_kernel.redis_link import REDIS_URL_ENV
from pattern_kernel.routing import Arm, parse_arms, parse_weights, weights_from_json
from triton_patterns.credentials import authorize

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class RouterConfig:
    name: str
    mode: str
    arms: list[Arm]
    config_weights: tuple[float, ...]
    weights_key: str
    shadow_stream: str


def router_config(url: str, model: str, headers: Mapping[str, str] | None = None) -> RouterConfig:
    """A router model's settings, from the server (`GET /v2/models/<model>/config`; the key
    headers of `security.client_headers()` unless `headers` are given)."""
    client = authorize(httpclient.InferenceServerClient(url), headers)
    try:
        config = client.get_model_config(model)
    finally:
        client.close()
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    if config.get("backend") != "router":
        raise ValueError(f"model {model!r} is not a router model (backend {config.get('backend')!r})")
    arms = parse_arms(params["targets"], params.get("arms"))
    return RouterConfig(model, params.get("mode", "split"), arms, parse_weights(params.get("weights"), arms),
                        params.get("weights_key", ""), params.get("shadow_stream") or f"shadow:{model}")


def redis_client(url: str | None) -> redis.Redis:
    return redis.Redis.from_url(url or os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL, socket_timeout=5)


def weights_in_force(router: RouterConfig, client: redis.Redis) -> tuple[dict[str, float], str]:
    """The weights the router uses now (once it has re-read the key) and where they come from."""
    if not router.weights_key:
        raise ValueError(f"model {router.name!r} has no weights_key: its weights change only with its config")
    raw = client.get(router.weights_key)
    weights = router.config_weights if raw is None else weights_from_json(raw, router.arms)
    source = "config" if raw is None else f"Redis key {router.weights_key}"
    return {a.name: w for a, w in zip(router.arms, weights, strict=True)}, source


def set_weights(router: RouterConfig, client: redis.Redis, weights: Mapping[str, float] | None) -> None:
    """Store run-time weights (validated like the router does); None deletes them (config again)."""
    if not router.weights_key:
        raise ValueError(f"model {router.name!r} has no weights_key: its weights change only with its config")
    if weights is None:
        client.delete(router.weights_key)
        return
    value = json.dumps(dict(weights))
    weights_from_json(value, router.arms)  # refuse what the router would ignore
    client.set(router.weights_key, value)


def shadow_entries(client: redis.Redis, stream: str, count: int = 10) -> list[dict]:
    """The newest `count` shadow comparisons of a stream, newest first, JSON fields decoded."""
    entries = []
    for entry_id, fields in client.xrevrange(stream, count=count):
        entry = {"stream_id": entry_id.decode()}
        for key, value in fields.items():
            text = value.decode()
            try:
                entry[key.decode()] = json.loads(text)
            except ValueError:
                entry[key.decode()] = text
        entries.append(entry)
    return entries


def _assignment(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ARM=WEIGHT, got {text!r}") from None


def add_weights_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a router model in split mode with a weights_key, e.g. iris_canary")
    parser.add_argument("weights", nargs="*", type=_assignment, metavar="ARM=WEIGHT",
                        help="new weights; arms left out get 0 (none given: show the weights in force)")
    parser.add_argument("--reset", action="store_true", help="delete the run-time weights: the config's apply")


def cmd_weights(args) -> int:
    try:
        router = router_config(args.url, args.model)
        client = redis_client(args.redis)
        if args.reset or args.weights:
            set_weights(router, client, None if args.reset else dict(args.weights))
        weights, source = weights_in_force(router, client)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"model": router.name, "weights": weights, "source": source, "key": router.weights_key}))
    return 0


def cmd_shadow_log(args) -> int:
    try:
        router = router_config(args.url, args.model)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for entry in shadow_entries(redis_client(args.redis), router.shadow_stream, args.count):
        print(json.dumps(entry))
    return 0
