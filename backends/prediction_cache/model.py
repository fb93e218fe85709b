"""Prediction cache pattern: answers to repeated inputs come from Redis, others from the model.

parameters:
  target_model, target_version  the model behind the cache; the version must be explicit, so a
                                new version (a config change) never gets the old one's answers
  redis_url                     default redis://127.0.0.1:6379/0; the environment variable
                                TRITON_PATTERNS_REDIS_URL overrides it (the launcher sets it)
  ttl_seconds                   lifetime of a cached answer (default 300)
  namespace                     key prefix (default "prediction")
  redis_timeout_ms              socket timeout; Redis being down costs at most this (default 50)
The key: sha256 of model, version, every input's name, dtype, shape and bytes, and the
request parameters. If Redis is down the model still answers (the cache degrades, it does not
fail) and the error is counted. Output CACHE_HIT says whether the answer came from the cache.
Metrics: prediction_cache_requests_total{model, result="hit"|"miss"|"error"}.
"""

from __future__ import annotations

import json

import numpy as np
import redis
import triton_python_backend_utils as pb_utils

from pattern_kernel.cache_codec import cache_key, decode_outputs, encode_outputs
from pattern_kernel.model_config import parse_model_config
from pattern_kernel.redis_link import connect
from pattern_kernel.triton_glue import call_model, count_failures, execute_each, read_inputs, response


class TritonPythonModel:
    def initialize(self, args):
        count_failures(args)
        self.config = parse_model_config(args["model_config"])
        self.target = self.config.required_parameter("target_model")
        self.version = self.config.int_parameter("target_version", -1)
        if self.version < 1:
            raise ValueError(
                f"model '{self.config.name}': target_version must be an explicit version number, so "
                "that a new version never gets the old one's cached answers"
            )
        self.ttl = self.config.int_parameter("ttl_seconds", 300)
        self.namespace = self.config.parameter("namespace", "prediction")
        self.redis = connect(self.config)
        self.outputs = [s.name for s in self.config.outputs if s.name != "CACHE_HIT"]
        # kept on self: a Metric whose MetricFamily was garbage-collected can't be incremented
        self.metric_family = family = pb_utils.MetricFamily(
            name="prediction_cache_requests_total",
            description="Prediction cache lookups by result (hit, miss, error)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.counters = {
            result: family.Metric(labels={"model": self.config.name, "target": self.target, "result": result})
            for result in ("hit", "miss", "error")
        }

    def _lookup(self, key: str):
        try:
            value = self.redis.get(key)
        except redis.RedisError:
            self.counters["error"].increment(1)
            return None, False
        if value is None:
            self.counters["miss"].increment(1)
            return None, True
        self.counters["hit"].increment(1)
        return decode_outputs(value), True

    def _store(self, key: str, outputs) -> None:
        try:
            self.redis.set(key, encode_outputs(outputs), ex=self.ttl)
        except redis.RedisError:
            self.counters["error"].increment(1)

    def _one(self, request):
        inputs = read_inputs(request, self.config.inputs)
        key = cache_key(self.namespace, self.target, self.version, inputs, json.loads(request.parameters() or "{}"))
        cached, redis_up = self._lookup(key)
        hit = cached is not None
        if not hit:
            cached = call_model("target", self.target, inputs, self.outputs, self.version)
            if redis_up:
                self._store(key, cached)
        rows = next(iter(cached.values())).shape[0]
        return response({**cached, "CACHE_HIT": np.full((rows, 1), hit, dtype=bool)})

    def execute(self, requests):
        return execute_each(requests, self._one)
