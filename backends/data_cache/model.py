"""Data cache pattern: the request carries a record id; the raw data is read through Redis
(cache-aside, TTL) in front of a slower store, then the model is called.

Two variants (the seeds'): cache the input data, or also cache the preprocessed tensor.
Parameters and extra outputs: `spec.py` beside this file (tables in the pattern's doc page).
ttl_seconds 0 turns the cache off (every read goes to the store, for comparison).
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
from pattern_kernel.pattern_model import PatternModel
from pattern_kernel.redis_link import connect
from pattern_kernel.triton_glue import call_model
from pattern_kernel.validation import utf8_values


class TritonPythonModel(PatternModel):

    def setup(self, args):
        self.store = SQLiteStore(os.environ.get(DATA_STORE_ENV) or self.params["store_path"])
        self.redis = connect(self.params, cache=True)
        self.ttl = self.params["ttl_seconds"]
        self.outputs = [s.name for s in self.model_outputs]
        self.lookups = self.metrics("data_cache_lookups_total", "Data cache lookups in Redis by result (hit, miss, "
                                                                "error)")
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
        key = f"{self.params['namespace']}:raw:{record_id}"
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
        p = self.params
        key = f"{p['namespace']}:prep:{p['preprocess_version']}:{record_id}"
        value = self._cached(key)
        if value is not None:
            return decode_outputs(value), "redis"
        raw, _ = self._raw(record_id)
        name = self.required("preprocess_output")
        features = call_model("preprocess", p["preprocess_model"], {p["target_input"]: _bytes_tensor(raw)},
                              [name], p["preprocess_version"])
        self._cache(key, encode_outputs(features))
        return features, "store"

    def handle(self, request, inputs):
        p = self.params
        ids = utf8_values("ID", inputs["ID"])
        if len(ids) != 1:
            raise InputError("ID", f"expected one id per request, got {len(ids)}")
        if p["preprocess_model"]:
            inputs, source = self._features(ids[0])
            model, version = self.required("predict_model"), p["predict_version"]
        else:
            raw, source = self._raw(ids[0])
            inputs = {p["target_input"]: _bytes_tensor(raw)}
            model, version = self.required("target_model"), p["target_version"]
        outputs = call_model("predict", model, inputs, self.outputs, version)
        return {**outputs, "SOURCE": np.array([[source.encode()]], dtype=object)}

    def finalize(self):
        self.store.close()


def _bytes_tensor(raw: bytes) -> np.ndarray:
    return np.array([[raw]], dtype=object)
