"""The "web single" peer: FastAPI + uvicorn holding onnxruntime sessions, POST JSON, JSON answer.

The implementation of the serving-patterns book's web-single pattern that users would otherwise
write. Models come from the environment: `PEER_MODELS="iris=/path/model.onnx,heavy_mlp=/path..."`;
`PEER_THREADS` sets onnxruntime's intra-op threads per worker (default 1). Run with
`uvicorn loadtest.peers.fastapi_web_single:app --workers N`.

    POST /predict/<model>  {"inputs": [[...], ...]}  ->  {"outputs": [[...], ...], "label": [...]}
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class PredictRequest(BaseModel):
    inputs: list[list[float]]


def _sessions() -> dict[str, ort.InferenceSession]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("PEER_THREADS", "1"))
    options.inter_op_num_threads = 1
    sessions = {}
    for item in filter(None, os.environ.get("PEER_MODELS", "").split(",")):
        name, path = item.split("=", 1)
        sessions[name] = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    return sessions


SESSIONS = _sessions()
app = FastAPI(title="web single peer")


@app.get("/health")
def health() -> dict:
    return {"models": sorted(SESSIONS)}


@app.post("/predict/{model}")
def predict(model: str, request: PredictRequest) -> dict:
    session = SESSIONS.get(model)
    if session is None:
        raise HTTPException(404, f"unknown model {model!r}")
    meta = session.get_inputs()[0]
    x = np.asarray(request.inputs, dtype=np.float32)
    if x.ndim != 2 or (isinstance(meta.shape[1], int) and x.shape[1] != meta.shape[1]):
        raise HTTPException(422, f"inputs must be rows of {meta.shape[1]} numbers")
    outputs = session.run(None, {meta.name: x})
    answer = {"outputs": outputs[-1].tolist()}
    if len(outputs) > 1:  # classifiers: LABEL, PROBABILITIES
        answer["label"] = outputs[0].reshape(-1).tolist()
    return answer
