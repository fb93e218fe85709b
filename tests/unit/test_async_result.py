"""The asynchronous pattern's result model answers per job id: an unknown id gets status `unknown`
with its reason, the others their states; no id, an empty id or bytes that are not UTF-8 are the
client's error naming JOB_ID. The SDK's `result` turns `unknown` into a PatternError."""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import pytest

import pattern_kernel
from pattern_kernel.errors import InputError
from pattern_kernel.job_queue import DONE, QUEUED, UNKNOWN, JobState, missing_job
from pattern_runtime import paths
from triton_patterns.async_jobs import job_result
from triton_patterns.client import PatternError, known_job


@pytest.fixture(scope="module")
def backend():
    """backends/async_queue/model.py, imported with a bare stand-in for Triton's utilities module;
    afterwards the modules are as they were (what imported the stand-in is forgotten)."""
    before = dict(sys.modules)
    glue = ("triton_glue", "pattern_model")  # import the stand-in: fresh here, forgotten after
    attributes = {name: getattr(pattern_kernel, name) for name in glue if hasattr(pattern_kernel, name)}
    for name in glue:
        sys.modules.pop(f"pattern_kernel.{name}", None)
        if hasattr(pattern_kernel, name):
            delattr(pattern_kernel, name)
    sys.modules["triton_python_backend_utils"] = types.ModuleType("triton_python_backend_utils")
    try:
        spec = importlib.util.spec_from_file_location("async_queue_model", paths.BACKENDS / "async_queue" / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.clear()
        sys.modules.update(before)
        for name in glue:
            if name in attributes:
                setattr(pattern_kernel, name, attributes[name])
            elif hasattr(pattern_kernel, name):
                delattr(pattern_kernel, name)


def _ids(*values: bytes) -> np.ndarray:
    return np.array(values, dtype=object)


def test_a_batch_with_an_unknown_id_gets_an_answer_per_id(backend):
    done = JobState("a", DONE, model="iris", attempts=1, outputs={"LABEL": np.array([[0]])})
    queued = JobState("c", QUEUED, model="iris")
    answers = backend.job_answers(["a", "nope", "c"], [done, None, queued], lambda job_id: f"why {job_id}")
    assert [s.decode() for s in answers["STATUS"]] == [DONE, UNKNOWN, QUEUED]
    results = [json.loads(r) for r in answers["RESULT"]]
    assert results[0] == done.as_json() and results[2] == queued.as_json()
    assert results[1] == {"job_id": "nope", "status": UNKNOWN, "error": "why nope"}


def test_no_id_an_empty_id_or_bytes_that_are_not_utf8_name_job_id(backend):
    assert backend.job_ids(_ids(b"a", "b")) == ["a", "b"]
    with pytest.raises(InputError, match="input 'JOB_ID': expected at least one job id, got none"):
        backend.job_ids(_ids())
    with pytest.raises(InputError, match="input 'JOB_ID': element 1 is empty: expected a job id"):
        backend.job_ids(_ids(b"a", b""))
    with pytest.raises(InputError, match="input 'JOB_ID': is not valid UTF-8 text"):
        backend.job_ids(_ids(b"\xff\xfe"))


def test_the_sdk_raises_for_an_unknown_job_and_returns_a_known_one(backend):
    answers = backend.job_answers(["nope", "a"], [None, JobState("a", QUEUED, model="iris")],
                                  lambda job_id: missing_job(job_id, 60))
    unknown, queued = (job_result(raw, lambda model: []) for raw in answers["RESULT"])
    with pytest.raises(PatternError, match=r"async_result: JOB_ID: no job 'nope': unknown") as caught:
        known_job(unknown)
    assert caught.value.status == UNKNOWN
    assert known_job(queued).status == QUEUED and not queued.finished
