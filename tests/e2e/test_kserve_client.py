"""KServe's own Python client against Berth, unchanged: v1 over REST, v2
over REST and v2 over gRPC.

KServe's package pins its own protobuf and defines the same "inference"
protobuf messages as tritonclient, so it cannot share a process (or a
virtual environment) with the rest of the suite: `make test` installs it in
`.venv-kserve` and passes that interpreter as BERTH_KSERVE_PYTHON; the
client runs there, in a subprocess, and prints what it got as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import joblib
import numpy as np
import pytest
from berth_e2e import BerthServer

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]

CLIENT = r"""
import asyncio, json, sys
import numpy as np
import kserve

ROWS = json.loads(sys.argv[3])

async def main(http_url, grpc_url):
    out = {}
    v1 = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v1"))
    try:
        out["v1_live"] = await v1.is_server_live(http_url)
        out["v1_ready"] = await v1.is_model_ready(http_url, "iris")
        res = await v1.infer(http_url, {"instances": ROWS}, model_name="iris")
        out["v1_predictions"] = res["predictions"]
    finally:
        await v1.close()

    v2 = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2"))
    try:
        out["v2_ready"] = await v2.is_server_ready(http_url)
        out["v2_model_ready"] = await v2.is_model_ready(http_url, "iris")
        flat = [v for row in ROWS for v in row]
        req = kserve.InferRequest(
            model_name="iris", request_id="rest-1",
            infer_inputs=[kserve.InferInput("input", [len(ROWS), 4], "FP64", data=flat)])
        res = await v2.infer(http_url, req, model_name="iris")
        out["v2_id"] = res.id
        out["v2"] = {o.name: o.as_numpy().tolist() for o in res.outputs}
        # binary tensors, as KServe's client sends them from NumPy
        inp = kserve.InferInput("input", [len(ROWS), 4], "FP64")
        inp.set_data_from_numpy(np.array(ROWS, dtype=np.float64), binary_data=True)
        res = await v2.infer(http_url, kserve.InferRequest(
            model_name="iris", infer_inputs=[inp], request_id="rest-2"), model_name="iris")
        out["v2_binary"] = {o.name: o.as_numpy().tolist() for o in res.outputs}
    finally:
        await v2.close()

    grpc = kserve.InferenceGRPCClient(grpc_url)
    try:
        out["grpc_ready"] = await grpc.is_server_ready()
        inp = kserve.InferInput("input", [len(ROWS), 4], "FP64")
        inp.set_data_from_numpy(np.array(ROWS, dtype=np.float64))
        res = await grpc.infer(kserve.InferRequest(
            model_name="iris", infer_inputs=[inp], request_id="grpc-1"))
        out["grpc_id"] = res.id
        out["grpc"] = {o.name: o.as_numpy().tolist() for o in res.outputs}
    finally:
        await grpc.close()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture(scope="module")
def kserve_python() -> str:
    py = os.environ.get("BERTH_KSERVE_PYTHON")
    if not py or not os.path.exists(py):
        pytest.skip("KServe's client is installed by `make test` into .venv-kserve "
                    "(BERTH_KSERVE_PYTHON is not set)")
    return py


@pytest.fixture(scope="module")
def iris(zoo: Any) -> tuple[str, Any]:
    path = zoo.sklearn_classifier()
    return str(path), joblib.load(path)


def test_kserve_client_v1_v2_rest_and_grpc(module_server: Any, iris: tuple[str, Any],
                                           kserve_python: str) -> None:
    path, model = iris
    server: BerthServer = module_server(path)
    res = subprocess.run(
        [kserve_python, "-c", CLIENT, server.url, server.grpc_url, json.dumps(ROWS)],
        capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    x = np.array(ROWS)
    want = model.predict(x).tolist()
    proba = model.predict_proba(x)

    assert out["v1_live"] is True and out["v1_ready"] is True
    assert out["v1_predictions"] == want

    assert out["v2_ready"] is True and out["v2_model_ready"] is True
    assert out["v2_id"] == "rest-1"
    assert out["v2"]["predict"] == want
    np.testing.assert_allclose(np.array(out["v2"]["predict_proba"]), proba, rtol=1e-12)
    assert out["v2_binary"]["predict"] == want

    assert out["grpc_ready"] is True
    assert out["grpc_id"] == "grpc-1"
    assert out["grpc"]["predict"] == want
    np.testing.assert_allclose(np.array(out["grpc"]["predict_proba"]), proba, rtol=1e-12)
