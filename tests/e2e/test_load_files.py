"""Model files in a load request (Triton's "file:<path>" parameters),
over REST and gRPC, with tritonclient: only with an admin token; the files
go into a private folder the server owns, which disappears when the model
is unloaded or the server stops; bad paths and too many bytes are refused
and the server stays live."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from berth_e2e import BerthServer, add_python_model, assert_error, fill, wait_until
from tritonclient.utils import InferenceServerException

ADMIN = "lf-admin-token"
USER = "lf-user-token"


def auth() -> dict[str, str]:
    """A fresh header dict each time: tritonclient.http adds to the one it gets."""
    return {"authorization": f"Bearer {ADMIN}"}

ADDER_SOURCE = '''
import berth


class Adder(berth.Model):
    inputs = [berth.TensorSpec("x", "FP64", [-1])]
    outputs = [berth.TensorSpec("y", "FP64", [-1])]

    def predict(self, inputs):
        return {"y": inputs["x"] + @ADD@}
'''


def onnx_add(value: float) -> bytes:
    """y = x + value: x FP32 [N, 2], y FP32 [N, 2]."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(np.array([value, value], np.float32), "c")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def onnx_config(name: str) -> str:
    return json.dumps({"name": name, "runtime": "onnx", "instances": 1})


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    repo = tmp_path / "repo"
    add_python_model(repo, "adder", fill(ADDER_SOURCE, ADD=1), "Adder", yaml_extra="instances: 1\n")
    runtime = tmp_path / "runtime"  # the server's TMPDIR: its private folders go here
    runtime.mkdir()
    (tmp_path / "admin-tokens").write_text(ADMIN + "\n")
    (tmp_path / "user-tokens").write_text(USER + "\n")
    return {"repo": repo, "runtime": runtime, "tokens": tmp_path / "admin-tokens",
            "users": tmp_path / "user-tokens", "tmp": tmp_path}


def start(berth_server: Callable[..., BerthServer], s: dict[str, Path], *flags: str) -> BerthServer:
    app = s["tmp"] / "app.yaml"
    app.write_text(json.dumps({
        "server": {"repositories": [str(s["repo"])]},
        "models": [{"name": "adder", "runtime": "python", "class": "Adder", "instances": 1,
                    "path": str(s["repo"] / "adder" / "1" / "model.py")}],
    }))
    return berth_server([], "--config", str(app), "--model-control-mode", "explicit", *flags,
                        env={"TMPDIR": str(s["runtime"])})


def folders(s: dict[str, Path]) -> list[Path]:
    return sorted(p for p in s["runtime"].iterdir() if p.name.startswith("berth-load-"))


def infer_http(server: BerthServer, name: str) -> np.ndarray:
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    x = httpclient.InferInput("x", [2, 2], "FP32")
    x.set_data_from_numpy(np.array([[1, 2], [3, 4]], np.float32))
    out = c.infer(name, [x], headers=auth()).as_numpy("y")
    c.close()
    return out


def test_admin_loads_onnx_files_over_http_and_grpc(berth_server: Callable[..., BerthServer],
                                                   setup: dict[str, Path]) -> None:
    server = start(berth_server, setup, "--admin-tokens-file", str(setup["tokens"]))
    h = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    h.load_model("plus2", headers=auth(), config=onnx_config("plus2"),
                 files={"file:1/model.onnx": onnx_add(2.0)})
    assert h.is_model_ready("plus2", headers=auth())
    np.testing.assert_allclose(infer_http(server, "plus2"), [[3, 4], [5, 6]])
    made = folders(setup)
    assert len(made) == 1 and (made[0].stat().st_mode & 0o777) == 0o700
    assert (made[0] / "1" / "model.onnx").read_bytes() == onnx_add(2.0)
    assert not any(setup["repo"].rglob("*.onnx"))  # never inside the repository

    g = grpcclient.InferenceServerClient(server.grpc_url)
    g.load_model("plus3", headers=auth(), config=onnx_config("plus3"),
                 files={"file:1/model.onnx": onnx_add(3.0)})
    assert g.is_model_ready("plus3", headers=auth())
    np.testing.assert_allclose(infer_http(server, "plus3"), [[4, 5], [6, 7]])
    assert len(folders(setup)) == 2

    # a new load replaces the files: the old folder goes once the new one serves
    h.load_model("plus2", headers=auth(), config=onnx_config("plus2"),
                 files={"file:1/model.onnx": onnx_add(20.0)})
    np.testing.assert_allclose(infer_http(server, "plus2"), [[21, 22], [23, 24]])
    wait_until(lambda: len(folders(setup)) == 2, timeout=30, what="the replaced folder removed")
    assert made[0] not in folders(setup)

    # unloading removes the model's folder
    g.unload_model("plus3", headers=auth())
    wait_until(lambda: len(folders(setup)) == 1, timeout=30, what="the unloaded folder removed")
    g.close()
    h.close()
    server.close()
    assert folders(setup) == []  # the server's stop removes the rest


def test_files_need_an_admin_token(berth_server: Callable[..., BerthServer],
                                   setup: dict[str, Path]) -> None:
    # no admin tokens at all: a load may not carry files
    server = start(berth_server, setup)
    files = {"file:1/model.onnx": onnx_add(1.0)}
    h = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    with pytest.raises(InferenceServerException) as info:
        h.load_model("m", config=onnx_config("m"), files=files)
    assert "--admin-tokens-file" in str(info.value) and info.value.status() == "403"
    g = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as info:
        g.load_model("m", config=onnx_config("m"), files=files)
    assert "PERMISSION_DENIED" in str(info.value.status()) and "--admin-tokens-file" in str(info.value)
    assert folders(setup) == []  # nothing was written
    # Triton's model-control example: a bad path gets Triton's words from
    # anyone (paths are checked before the token; nothing is written)
    long_path = {"file:" + "A" * 256: b"a"}
    with pytest.raises(InferenceServerException) as info:
        g.load_model("m", config="{}", files=long_path)
    assert "failed to poll from model repository" in str(info.value)
    assert "INVALID_ARGUMENT" in str(info.value.status())
    with pytest.raises(InferenceServerException) as info:
        h.load_model("m", config="{}", files=long_path)
    assert "failed to load" in str(info.value) and info.value.status() == "400"
    assert g.is_server_live() and folders(setup) == []
    h.close()
    g.close()
    server.close()

    # tokens configured: a user token is not enough
    server = start(berth_server, setup, "--admin-tokens-file", str(setup["tokens"]),
                   "--auth-tokens-file", str(setup["users"]))
    user = {"authorization": f"Bearer {USER}"}
    h = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    with pytest.raises(InferenceServerException) as info:
        h.load_model("m", headers=user, config=onnx_config("m"), files=files)
    assert info.value.status() == "403"
    g = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as info:
        g.load_model("m", headers=user, config=onnx_config("m"), files=files)
    assert "PERMISSION_DENIED" in str(info.value.status())
    assert folders(setup) == []
    h.close()
    g.close()


BAD_PATHS = ["file:../escape.onnx", "file:1/../../escape.onnx", "file:/tmp/abs.onnx",
             "file:1//model.onnx", "file:" + "a" * 256 + "/model.onnx", "file:", "file:1/"]


def test_bad_paths_are_refused(berth_server: Callable[..., BerthServer],
                               setup: dict[str, Path]) -> None:
    server = start(berth_server, setup, "--admin-tokens-file", str(setup["tokens"]))
    h = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    g = grpcclient.InferenceServerClient(server.grpc_url)
    for key in BAD_PATHS:
        files = {key: onnx_add(1.0)}
        with pytest.raises(InferenceServerException) as info:
            h.load_model("m", headers=auth(), config=onnx_config("m"), files=files)
        assert "failed to load" in str(info.value) and "failed to poll from model repository" in str(
            info.value), key
        assert info.value.status() == "400", key
        with pytest.raises(InferenceServerException) as info:
            g.load_model("m", headers=auth(), config=onnx_config("m"), files=files)
        assert "failed to load" in str(info.value), key
        assert h.is_server_live(headers=auth()) and g.is_server_live(headers=auth())
    assert folders(setup) == []
    assert not (setup["tmp"] / "escape.onnx").exists()
    # not base64 over REST
    resp = server.post("/v2/repository/models/m/load",
                       {"parameters": {"config": onnx_config("m"), "file:1/model.onnx": "%%%"}},
                       headers=auth())
    assert_error(resp, 400, "base64")
    # files without a config, or with a path in it, or with an override
    for cfg, word in ((None, "config"),
                      (json.dumps({"name": "m", "runtime": "onnx", "path": "/etc"}), "path"),
                      (json.dumps({"max_batch_size": 4}), "whole model entry")):
        params: dict[str, Any] = {"file:1/model.onnx": base64.b64encode(onnx_add(1.0)).decode()}
        if cfg is not None:
            params["config"] = cfg
        name = "adder" if word == "whole model entry" else "m"
        assert_error(server.post(f"/v2/repository/models/{name}/load", {"parameters": params},
                                 headers=auth()), 400, "failed to load", word)
    assert folders(setup) == []
    # a broken model file: the load fails, the folder goes
    with pytest.raises(InferenceServerException) as info:
        h.load_model("m", headers=auth(), config=onnx_config("m"), files={"file:1/model.onnx": b"junk"})
    assert "failed to load" in str(info.value)
    wait_until(lambda: folders(setup) == [], timeout=30, what="the failed load's folder removed")
    assert h.is_server_live(headers=auth())
    h.close()
    g.close()


def test_too_many_bytes(berth_server: Callable[..., BerthServer], setup: dict[str, Path]) -> None:
    server = start(berth_server, setup, "--admin-tokens-file", str(setup["tokens"]),
                   "--max-body-bytes", "100000")
    big = {"file:1/model.onnx": b"\0" * 60000, "file:1/extra.bin": b"\1" * 60000}
    h = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    with pytest.raises(InferenceServerException) as info:
        h.load_model("m", headers=auth(), config=onnx_config("m"), files=big)
    assert info.value.status() == "413"
    g = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as info:
        g.load_model("m", headers=auth(), config=onnx_config("m"), files=big)
    assert "RESOURCE_EXHAUSTED" in str(info.value.status())
    assert folders(setup) == []
    assert h.is_server_live(headers=auth()) and g.is_server_live(headers=auth())
    h.close()
    g.close()
