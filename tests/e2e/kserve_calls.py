"""Run by the KServe SDK's own virtualenv (.venv-kserve, `make kserve-venv`) for test_kserve_sdk.py.

Reads {"http": URL, "grpc": URL, "requests": [{"model", "inputs": [{"name", "datatype", "shape",
"data" (numbers, or base64 for BYTES)}]}]} on stdin. For each model and each of REST and gRPC it
reads the model's metadata (REST: parsed by the SDK's `ModelMetadataResponse`; gRPC: the SDK's
generated `ModelMetadata` stub, its clients having no metadata call) and sends the request with
`InferenceRESTClient` / `InferenceGRPCClient`.
Prints one JSON object per line: model, protocol, metadata (the input names) or metadata_error,
outputs ({name: shape}) or error (the exception's text, as a user would see it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys

import grpc
import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest
from kserve.inference_client import RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse

DTYPES = {"FP32": np.float32, "INT64": np.int64, "INT32": np.int32, "BYTES": np.object_}


def infer_request(model: str, inputs: list[dict]) -> InferRequest:
    tensors = []
    for spec in inputs:
        if spec["datatype"] == "BYTES":
            array = np.array([base64.b64decode(v) for v in spec["data"]], dtype=np.object_)
        else:
            array = np.array(spec["data"], dtype=DTYPES[spec["datatype"]])
        tensor = InferInput(spec["name"], spec["shape"], spec["datatype"])
        # numbers as JSON; BYTES (PNG among them) in the binary extension, JSON carrying UTF-8 only
        tensor.set_data_from_numpy(array.reshape(spec["shape"]), binary_data=spec["datatype"] == "BYTES")
        tensors.append(tensor)
    return InferRequest(model_name=model, infer_inputs=tensors)


def outputs(response) -> dict[str, list[int]]:
    return {o.name: list(o.shape) for o in response.outputs}


async def rest(base: str, model: str, inputs: list[dict], http: httpx.AsyncClient) -> dict:
    result: dict = {"model": model, "protocol": "rest"}
    meta = await http.get(f"{base}/v2/models/{model}")
    try:
        result["metadata"] = [t.name for t in ModelMetadataResponse.model_validate(meta.json()).inputs]
    except Exception as exc:  # noqa: BLE001 - whatever the SDK raises is what a user would see: recorded
        result["metadata_error"] = f"{type(exc).__name__}: {exc}"
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    try:
        result["outputs"] = outputs(await client.infer(base, infer_request(model, inputs), model_name=model))
    except Exception as exc:  # noqa: BLE001 - recorded, as above
        result["error"] = str(exc)
    finally:
        await client.close()
    return result


async def grpc_(url: str, model: str, inputs: list[dict]) -> dict:
    result: dict = {"model": model, "protocol": "grpc"}
    async with grpc.aio.insecure_channel(url) as channel:  # the SDK's client has no metadata call
        try:
            meta = await GRPCInferenceServiceStub(channel).ModelMetadata(pb.ModelMetadataRequest(name=model),
                                                                         timeout=30)
            result["metadata"] = [t.name for t in meta.inputs]
        except grpc.RpcError as exc:
            result["metadata_error"] = exc.details()
    async with InferenceGRPCClient(url, timeout=60, retries=0) as client:
        try:
            result["outputs"] = outputs(await client.infer(infer_request(model, inputs)))
        except Exception as exc:  # noqa: BLE001 - recorded, as above
            result["error"] = exc.details() if hasattr(exc, "details") else str(exc)
    return result


async def main() -> None:
    spec = json.load(sys.stdin)
    base = f"http://{spec['http']}"
    async with httpx.AsyncClient(timeout=60) as http:
        for request in spec["requests"]:
            for call in (rest(base, request["model"], request["inputs"], http),
                         grpc_(spec["grpc"], request["model"], request["inputs"])):
                print(json.dumps(await call), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
