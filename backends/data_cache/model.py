"""Data cache pattern: the request carries a record id; the raw data is read through Redis
(cache-aside, TTL) in front of a slower store, then the model is called.

Two variants (the seeds'): cache the input data, or also cache the preprocessed tensor.
parameters:
  store_path          SQLite store (env TRITON_PATTERNS_DATA_STORE overrides; see
                      pattern_kernel.data_store)
  redis_url           env TRITON_PATTERNS_REDIS_URL overrides; redis_timeout_ms (50)
  ttl_seconds         lifetime of cached data (default 300; 0 turns the cache off: every read
                      goes to the store, for comparison); namespace (default "data")
  target_model, target_version, target_input   the model fed the raw data (input-data cache)
  preprocess_model, preprocess_version, preprocess_output, predict_model, predict_version
                      if set: preprocessed-data cache (the preprocess output is cached)
Input ID (BYTES); outputs: the model's, plus SOURCE ("redis" or "store": where the data came
from). An unknown id is an INVALID_ARG error naming the id. Redis down: read from the store.
Metrics: data_cache_lookups_total{model, result="hit"|"miss"|"error"} (one per Redis lookup).
"""

from __future__ import annotations

import os

import numpy as np
import redis

from pattern_kernel.cache_codec import decode_outputs, encode_outputs
from pattern_kernel.data_store import DATA_STORE_ENV, SQLiteStore
from pattern_kernel.errors import InputError
from pattern_kernel.model_config import parse_model_config
from pattern_kernel.redis_link import connect
from pattern_kernel.triton_glue import Metrics, call_model, count_failures, execute_each, read_inputs, response
from pattern_kernel.validation import utf8_values


class TritonPythonModel:
    def initialize(self, args):
        count_failures(args)
        c = self.config = parse_model_config(args["model_config"])
        self.store = SQLiteStore(os.environ.get(DATA_STORE_ENV) or c.required_parameter("store_path"))
        self.redis = connect(c)
        self.ttl = c.int_parameter("ttl_seconds", 300)
        self.namespace = c.parameter("namespace", "data")
        self.preprocess = c.parameter("preprocess_model")
        self.outputs = [s.name for s in c.outputs if s.name != "SOURCE"]
        self.lookups = Metrics("data_cache_lookups_total", "Data cache lookups in Redis by result (hit, miss, error)",
                               {"model": c.name})
        for result in ("hit", "miss", "error"):
            self.lookups.metric(result=result)

    def _cached(self, key: str):
        if self.ttl <= 0:
            return None
        try:
            value = self.redis.get(key)
        except redis.RedisError:
            self.lookups.increment(result="error")
            return None
        self.lookups.increment(result="miss" if value is None else "hit")
        return value

    def _cache(self, key: str, value: bytes) -> None:
        if self.ttl <= 0:
            return
        try:
            self.redis.set(key, value, ex=self.ttl)
        except redis.RedisError:
            pass

    def _raw(self, record_id: str) -> tuple[bytes, str]:
        key = f"{self.namespace}:raw:{record_id}"
        value = self._cached(key)
        if value is not None:
            return value, "redis"
        value = self.store.get(record_id)
        if value is None:
            raise InputError("ID", f"no record with id {record_id!r} in the data store")
        self._cache(key, value)
        return value, "store"

    def _features(self, record_id: str) -> tuple[dict, str]:
        """Preprocessed-data variant: the preprocess model's output, cached by id."""
        c = self.config
        key = f"{self.namespace}:prep:{c.parameter('preprocess_version', '-1')}:{record_id}"
        value = self._cached(key)
        if value is not None:
            return decode_outputs(value), "redis"
        raw, _ = self._raw(record_id)
        name = c.required_parameter("preprocess_output")
        features = call_model(
            "preprocess", self.preprocess, {c.required_parameter("target_input"): _bytes_tensor(raw)},
            [name], c.int_parameter("preprocess_version", -1),
        )
        self._cache(key, encode_outputs(features))
        return features, "store"

    def _one(self, request):
        c = self.config
        ids = utf8_values("ID", read_inputs(request, c.inputs)["ID"])
        if len(ids) != 1:
            raise InputError("ID", f"expected one id per request, got {len(ids)}")
        record_id = ids[0]
        if self.preprocess:
            inputs, source = self._features(record_id)
            model, version = c.required_parameter("predict_model"), c.int_parameter("predict_version", -1)
        else:
            raw, source = self._raw(record_id)
            inputs = {c.required_parameter("target_input"): _bytes_tensor(raw)}
            model, version = c.required_parameter("target_model"), c.int_parameter("target_version", -1)
        outputs = call_model("predict", model, inputs, self.outputs, version)
        return response({**outputs, "SOURCE": np.array([[source.encode()]], dtype=object)})

    def execute(self, requests):
        return execute_each(requests, self._one)

    def finalize(self):
        self.store.close()


def _bytes_tensor(raw: bytes) -> np.ndarray:
    return np.array([[raw]], dtype=object)
