"""Pipelines in the model repository (docs/pipelines.md): the repository
index lists each pipeline with its state and a reason naming the step model
that keeps it from being ready; readiness, metadata and inference while a
step model is still loading (its load() waits for the test) or failed to
load; and the repository refusing to load a model under a pipeline's name.
Real server, tritonclient over REST and gRPC."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from berth_e2e import (  # noqa: E402
    BROKEN_LOAD_SOURCE,
    BerthServer,
    assert_error,
    fill,
    infer_body,
    outputs_by_name,
    tensor,
    wait_until,
)
from tritonclient.utils import InferenceServerException  # noqa: E402

OPS_SOURCE = '''
import os
import time

import berth


def double(inputs):
    return {"y": inputs["x"] * 2.0}


class Gate(berth.Model):
    """load() waits until the test creates OPEN (at most 120 s)."""

    inputs = [berth.TensorSpec("x", "FP64", [-1, 1])]
    outputs = [berth.TensorSpec("y", "FP64", [-1, 1])]

    def load(self):
        deadline = time.monotonic() + 120
        while not os.path.exists(@OPEN@) and time.monotonic() < deadline:
            time.sleep(0.05)

    def predict(self, inputs):
        return {"y": inputs["x"] + 1.0}
'''

CONFIG = '''
models:
  - {name: double, path: ops.py, runtime: python, class: double}
  - {name: gate, path: ops.py, runtime: python, class: Gate}
  - {name: broken, path: broken.py, runtime: python, class: Broken}

pipelines:
  - name: fine
    steps: [{name: a, model: double}]
  - name: gated                 # no declared signature: it comes from gate
    steps:
      - {name: g, model: gate}
      - {name: d, model: double, inputs: {x: g.y}}
  - name: doomed
    inputs: [{name: x, datatype: FP32, shape: [-1]}]
    steps:
      - {name: first, model: double}
      - {name: bad, model: broken}
'''


def _x(value: float) -> dict[str, Any]:
    return infer_body([tensor("x", "FP64", [1, 1], [value])])


def _index(server: BerthServer, ready: bool = False) -> dict[str, dict[str, Any]]:
    resp = server.post("/v2/repository/index", {"ready": True} if ready else None)
    assert resp.status == 200, resp.body[:500]
    return {m["name"]: m for m in resp.json()}


def _grpc_index(server: BerthServer) -> dict[str, Any]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    doc = client.get_model_repository_index(as_json=True)
    return {m["name"]: m for m in doc.get("models", [])}


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    (root / "ops.py").write_text(textwrap.dedent(fill(OPS_SOURCE, OPEN=str(root / "OPEN"))))
    (root / "broken.py").write_text(textwrap.dedent(BROKEN_LOAD_SOURCE))
    (root / "berth.yaml").write_text(CONFIG)
    return root


@pytest.fixture
def server(berth_server: Callable[..., BerthServer], app: Path) -> BerthServer:
    # explicit: the tests use the repository load/unload API (off by default)
    server = berth_server([], "--config", str(app / "berth.yaml"), "--instances", "1",
                          "--model-control-mode", "explicit", "--no-exit-on-error",
                          wait_for="listening")
    wait_until(lambda: server.get("/v2/models/double/ready").status == 200, 60,
               "model double to be ready", on_timeout=server.log_tail)
    wait_until(lambda: _index(server)["broken"]["state"] == "UNAVAILABLE", 60,
               "model broken to fail", on_timeout=server.log_tail)
    return server


def test_index_ready_metadata_and_infer_follow_the_step_models(
        server: BerthServer, app: Path) -> None:
    idx = _index(server)
    # pipelines are listed with one version, "1"
    assert idx["fine"] == {"name": "fine", "version": "1", "state": "READY", "reason": ""}
    gated, doomed = idx["gated"], idx["doomed"]
    assert gated["version"] == "1" and gated["state"] == "LOADING"
    assert 'step "g" (model gate version 1)' in gated["reason"], gated
    assert "loading" in gated["reason"]
    assert doomed["state"] == "UNAVAILABLE"
    assert 'step "bad" (model broken version 1)' in doomed["reason"], doomed
    assert "weights-missing.bin" in doomed["reason"]
    ready = _index(server, ready=True)
    assert "fine" in ready and "gated" not in ready and "doomed" not in ready
    # the same over gRPC
    g = _grpc_index(server)
    assert g["fine"]["state"] == "READY" and g["fine"]["version"] == "1"
    assert g["gated"]["state"] == "LOADING" and 'step "g"' in g["gated"]["reason"]
    assert g["doomed"]["state"] == "UNAVAILABLE"
    assert "weights-missing.bin" in g["doomed"]["reason"]

    # readiness and inference say which step model holds them up
    assert_error(server.get("/v2/models/gated/ready"), 503, "gated", 'step "g"', "gate")
    assert_error(server.get("/v2/models/doomed/ready"), 503, 'step "bad"',
                 "weights-missing.bin")
    assert_error(server.infer("gated", _x(1.0)), 503, "gated", 'step "g"', "loading")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert not client.is_model_ready("gated")
    assert not client.is_model_ready("doomed")
    with pytest.raises(InferenceServerException) as info:
        x = grpcclient.InferInput("x", [1], "FP32")
        x.set_data_from_numpy(np.ones(1, dtype=np.float32))
        client.infer("doomed", [x])
    assert "UNAVAILABLE" in str(info.value.status()), info.value
    assert "weights-missing.bin" in str(info.value)
    # the server as a whole is not ready either (its models are not)
    assert server.get("/v2/health/ready").status == 503

    # metadata answers while a step loads: what is known (the declared
    # signature; an undeclared one fills in once the step models are ready)
    meta = server.get("/v2/models/doomed").json()
    assert meta["platform"] == "pipeline" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1]}]
    meta = server.get("/v2/models/gated").json()
    assert meta["platform"] == "pipeline" and meta["versions"] == ["1"]
    assert meta["inputs"] == []
    assert client.get_model_metadata("gated", as_json=True)["platform"] == "pipeline"

    # the step model finishes loading: the pipeline is ready, signature and all
    (app / "OPEN").write_text("")
    wait_until(lambda: server.get("/v2/models/gated/ready").status == 200, 60,
               "pipeline gated to be ready", on_timeout=server.log_tail)
    assert _index(server)["gated"] == {"name": "gated", "version": "1", "state": "READY",
                                       "reason": ""}
    assert client.is_model_ready("gated")
    meta = server.get("/v2/models/gated").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP64", "shape": [-1, 1]}]
    doc = server.infer_ok("gated", _x(1.0))
    assert outputs_by_name(doc)["y"]["data"] == [4.0]  # (1 + 1) * 2


def test_unloading_a_step_model_makes_the_pipeline_unavailable(server: BerthServer) -> None:
    resp = server.post("/v2/repository/models/double/unload", None, timeout=60)
    assert resp.status == 200, resp.body[:500]
    entry = _index(server)["fine"]
    assert entry["state"] == "UNAVAILABLE"
    assert 'step "a" (model double version 1)' in entry["reason"]
    assert "unloaded" in entry["reason"]
    assert_error(server.get("/v2/models/fine/ready"), 503, 'step "a"', "unloaded")
    resp = server.post("/v2/repository/models/double/load", None, timeout=120)
    assert resp.status == 200, resp.body[:500]
    assert _index(server)["fine"]["state"] == "READY"
    assert outputs_by_name(server.infer_ok("fine", _x(2.0)))["y"]["data"] == [4.0]


def test_the_repository_refuses_a_model_under_a_pipeline_name(
        server: BerthServer, app: Path) -> None:
    entry = {"name": "fine", "runtime": "python", "path": str(app / "ops.py"),
             "class": "double"}
    resp = server.post("/v2/repository/models/fine/load", {"parameters": {"config": entry}})
    assert_error(resp, 400, "'fine' is a pipeline", "step models")
    assert_error(server.post("/v2/repository/models/fine/load", None), 400, "pipeline")
    assert_error(server.post("/v2/repository/models/fine/unload", None), 400, "pipeline")
    client = httpclient.InferenceServerClient(server.triton_url)
    with pytest.raises(InferenceServerException, match="is a pipeline"):
        client.load_model("fine", config=f'{{"name": "fine", "runtime": "python", '
                                         f'"path": "{app / "ops.py"}", "class": "double"}}')
    g = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as info:
        g.load_model("fine")
    assert "is a pipeline" in str(info.value)
    assert "INVALID_ARGUMENT" in str(info.value.status())
    # nothing changed: the pipeline still answers as before, and no model
    # "fine" appeared
    idx = server.post("/v2/repository/index", None).json()
    assert [m for m in idx if m["name"] == "fine"] == [
        {"name": "fine", "version": "1", "state": "READY", "reason": ""}]
    meta = server.get("/v2/models/fine").json()
    assert meta["platform"] == "pipeline"
    assert outputs_by_name(server.infer_ok("fine", _x(3.0)))["y"]["data"] == [6.0]
