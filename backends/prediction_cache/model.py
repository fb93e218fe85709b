"""Prediction cache pattern: answers to repeated inputs come from Redis, others from the model.

Parameters and extra outputs: `spec.py` beside this file (tables in the pattern's doc page).
The target's version must be explicit, so a new version (a config change) never gets the old
one's answers.
The key: sha256 of model, version, every input's name, dtype, shape and bytes, and the
request parameters. If Redis is down the model still answers (the cache degrades, it does not
fail) and the error is counted. Output CACHE_HIT says whether the answer came from the cache.
Metrics: prediction_cache_requests_total{model, target, result="hit"|"miss"|"error"}.
"""

from __future__ import annotations

import json

import numpy as np
import redis

from pattern_kernel.batching import request_batch_size
from pattern_kernel.cache_codec import cache_key, decode_outputs, encode_outputs
from pattern_kernel.pattern_model import PatternModel
from pattern_kernel.redis_link import connect
from pattern_kernel.triton_glue import call_model


class TritonPythonModel(PatternModel):

    def setup(self, args):
        self.target, self.version = self.params["target_model"], self.params["target_version"]
        if self.version < 1:
            raise ValueError(
                f"model '{self.config.name}': target_version must be an explicit version number, so "
                "that a new version never gets the old one's cached answers"
            )
        self.redis = connect(self.params, cache=True)
        self.outputs = [s.name for s in self.model_outputs]
        self.lookups = self.metrics("prediction_cache_requests_total",
                                    "Prediction cache lookups by result (hit, miss, error)", target=self.target)
        for result in ("hit", "miss", "error"):
            self.lookups.metric(result=result)

    def _lookup(self, key: str):
        try:
            value = self.redis.get(key)
        except redis.RedisError:
            self.lookups.increment(result="error")
            return None, False
        self.lookups.increment(result="miss" if value is None else "hit")
        return (None if value is None else decode_outputs(value)), True

    def _store(self, key: str, outputs) -> None:
        try:
            self.redis.set(key, encode_outputs(outputs), ex=self.params["ttl_seconds"])
        except redis.RedisError:
            self.lookups.increment(result="error")

    def handle(self, request, inputs):
        parameters = json.loads(request.parameters() or "{}")
        key = cache_key(self.params["namespace"], self.target, self.version, inputs, parameters)
        cached, redis_up = self._lookup(key)
        hit = cached is not None
        if not hit:
            cached = call_model("target", self.target, inputs, self.outputs, self.version)
            if redis_up:
                self._store(key, cached)
        return {**cached, "CACHE_HIT": np.full((request_batch_size(inputs), 1), hit, dtype=bool)}
