"""Locust load test of the patterns: one user class per pattern, named like the pattern.

Each user calls its pattern through the project's client SDK (`PatternClient.predict`, over
tritonclient HTTP or gRPC) with the demo's real inputs and fires one locust request event per
call: `name` is the pattern, `request_type` the protocol, so the UI and the CSV have one row
per pattern and protocol. An error or a wrong answer (not the sample's known label) is a failure.

    locust -f loadtest/locustfile.py --headless -u 4 -r 4 --run-time 30s \\
        --triton-http 127.0.0.1:8000 --triton-grpc 127.0.0.1:8001 --protocol both synchronous serial

`python -m loadtest.locust_run` (`make loadtest`) starts Redis and tritonserver and runs this.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import itertools
import random
import time
from dataclasses import dataclass
from typing import Any

import grpc.experimental.gevent as grpc_gevent
import numpy as np
from locust import User, constant, events, task  # imported first: locust monkey-patches with gevent
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

grpc_gevent.init_gevent()  # gRPC's C core then yields to gevent instead of blocking every user

from pattern_runtime.stack import SEEDED_DIGITS  # noqa: E402  (after the patching above)
from pattern_tools import demo  # noqa: E402
from triton_patterns.client import PatternClient, PatternError  # noqa: E402
from triton_patterns.patterns import PATTERNS  # noqa: E402


@dataclass(frozen=True)
class Sample:
    value: Any
    expected: str  # the label a correct answer carries
    version: int | None = None


@functools.cache
def samples_by_input() -> dict[str, list[Sample]]:
    """The demo's inputs with their known answers, by the name of the pattern's input tensor."""
    _, digit_labels = demo.digits_export_labels()
    return {
        "FEATURES": [Sample(f, species) for f, species in demo.IRIS_SAMPLES],
        "IMAGE": [Sample(png, str(digit)) for png, digit in demo.digit_samples(SEEDED_DIGITS)],
        "TEXT": [Sample(text, topic) for text, topic in demo.TEXT_SAMPLES],
        "ID": [Sample(f"digit-{i}", str(digit_labels[i])) for i in range(SEEDED_DIGITS)],
    }


def samples(pattern: str) -> list[Sample]:
    spec = PATTERNS[pattern]
    found = samples_by_input().get(spec.input)
    if not found:
        raise ValueError(f"no load-test samples for input {spec.input} of pattern {pattern}")
    if pattern == "synchronous":  # both served versions, as the demo calls them
        return [Sample(s.value, s.expected, v) for s in found for v in (1, 2)]
    return found


def _response_length(outputs: dict[str, np.ndarray]) -> int:
    return sum(len(x) if isinstance(x, bytes) else np.asarray(x).nbytes for x in outputs.values())


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    parser.add_argument("--triton-http", default="127.0.0.1:8000", env_var="TRITON_HTTP_URL",
                        help="tritonserver HTTP host:port")
    parser.add_argument("--triton-grpc", default="127.0.0.1:8001", env_var="TRITON_GRPC_URL",
                        help="tritonserver gRPC host:port")
    parser.add_argument("--protocol", default="both", choices=("http", "grpc", "both"),
                        help="each user alternates between both protocols with 'both'")


@events.test_stop.add_listener
def _final_csv(environment, **_kwargs) -> None:
    """Locust 2.18 rewrites its CSVs once a second, so their last second can be missing: write the
    final request and failure tables again once every user has stopped."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        tables = StatsCSV(environment, PERCENTILES_TO_REPORT)
        for suffix, write in (("stats", tables.requests_csv), ("failures", tables.failures_csv)):
            with open(f"{prefix}_{suffix}.csv", "w", newline="") as f:
                write(csv.writer(f))


class PatternUser(User):
    """Calls `pattern` in a closed loop (no think time) over one client per protocol."""

    abstract = True
    pattern = ""
    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        protocols = ("http", "grpc") if options.protocol == "both" else (options.protocol,)
        urls = {"http": options.triton_http, "grpc": options.triton_grpc}
        self.clients = [PatternClient(urls[p], protocol=p) for p in protocols]
        for client in self.clients:  # fetch the labels once, outside the measured calls
            with contextlib.suppress(Exception):  # an unreachable server fails in the task, reported
                client.labels(PATTERNS[self.pattern].model)
        self.turns = itertools.cycle(self.clients)
        ordered = samples(self.pattern)
        self.samples = itertools.cycle(random.sample(ordered, len(ordered)))

    def on_stop(self) -> None:
        for client in self.clients:
            client.close()

    @task
    def predict(self) -> None:
        client, sample = next(self.turns), next(self.samples)
        length, exception = 0, None
        start = time.perf_counter()
        try:
            prediction = client.predict(self.pattern, sample.value, version=sample.version)[0]
            length = _response_length(prediction.outputs)
            if prediction.label != sample.expected:
                raise PatternError(prediction.model, f"answered {prediction.label!r}, expected {sample.expected!r}")
        except Exception as exc:  # noqa: BLE001  every error is a failed request in the report
            exception = exc
        self.environment.events.request.fire(
            request_type=client.protocol, name=self.pattern, response_time=(time.perf_counter() - start) * 1000,
            response_length=length, exception=exception, context={},
        )


# One user class per pattern of the catalogue, named like the pattern (`locust ... synchronous`).
for _name in PATTERNS:
    globals()[_name] = type(_name, (PatternUser,), {"pattern": _name, "__doc__": PATTERNS[_name].summary})
