"""A load with a config override in Triton's sense: parameters.config is a
partial model configuration in protobuf JSON (numbers may be strings),
merged over the configuration of a model the server already serves. Sent
with tritonclient's load_model(name, config=...) over HTTP and gRPC, as
Triton's model-control examples do. The security rules stay: explicit mode
only, tokens as for any load; an override cannot name files or code."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from berth_e2e import BerthServer, add_python_model, assert_error, http_call
from tritonclient.utils import InferenceServerException

ADMIN = "ov-admin-token"
USER = "ov-user-token"
AUTH = {"Authorization": f"Bearer {USER}"}
ADM = {"Authorization": f"Bearer {ADMIN}"}  # the repository API needs an admin token
GAUTH = {"authorization": f"Bearer {USER}"}  # gRPC metadata keys are lower case
GADM = {"authorization": f"Bearer {ADMIN}"}

ADDER_SOURCE = """
import berth


class Adder(berth.Model):
    inputs = [berth.TensorSpec("x", "FP64", [-1])]
    outputs = [berth.TensorSpec("y", "FP64", [-1])]

    def predict(self, inputs):
        return {"y": inputs["x"] + 1}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    add_python_model(root, "adder", ADDER_SOURCE, "Adder", yaml_extra="instances: 1\n")
    (tmp_path / "admin").write_text(ADMIN + "\n")
    (tmp_path / "users").write_text(USER + "\n")
    return root


def start(
    berth_server: Callable[..., BerthServer], repo: Path, *flags: str
) -> BerthServer:
    return berth_server(
        str(repo),
        "--admin-tokens-file",
        str(repo.parent / "admin"),
        "--auth-tokens-file",
        str(repo.parent / "users"),
        *flags,
        wait_for="listening",
    )


def wait_ready(server: BerthServer) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        for _ in range(600):
            if client.is_model_ready("adder", headers=AUTH):
                return
            time.sleep(0.1)
        pytest.fail(server.log_tail())
    finally:
        client.close()


def config_of(server: BerthServer) -> dict[str, Any]:
    return http_call(server.port, "GET", "/v2/models/adder/config", headers=AUTH).json()


def infer_ok(server: BerthServer) -> None:
    body = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]}
            ]
        }
    ).encode()
    resp = http_call(
        server.port,
        "POST",
        "/v2/models/adder/infer",
        body,
        {**AUTH, "Content-Type": "application/json"},
    )
    assert resp.status == 200, resp.body[:300]
    assert resp.json()["outputs"][0]["data"] == [2.0, 3.0]


def test_override_over_http_and_grpc_takes_effect(
    berth_server: Callable[..., BerthServer], repo: Path
) -> None:
    server = start(berth_server, repo, "--model-control-mode", "explicit")
    wait_ready(server)
    assert config_of(server)["max_batch_size"] != 16
    http = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        # Triton's example: numbers as strings, the rest of the config kept
        http.load_model(
            "adder", config=json.dumps({"max_batch_size": "16"}), headers=ADM
        )
        assert http.is_model_ready("adder", headers=AUTH)
        assert config_of(server)["max_batch_size"] == 16
        infer_ok(server)
        grpc.load_model(
            "adder",
            config=json.dumps(
                {
                    "name": "adder",
                    "max_batch_size": 8,
                    "instance_group": [{"count": "2"}],
                    "dynamic_batching": {"max_queue_delay_microseconds": "200"},
                }
            ),
            headers=GADM,
        )
        assert grpc.is_model_ready("adder", headers=GAUTH)
        cfg = grpc.get_model_config("adder", headers=GAUTH, as_json=True)["config"]
        assert int(cfg["max_batch_size"]) == 8
        assert sum(int(g["count"]) for g in cfg["instance_group"]) == 2
        assert config_of(server)["max_batch_size"] == 8
        infer_ok(server)
    finally:
        http.close()
        grpc.close()


def test_bad_override_is_400_failed_to_load_and_the_model_keeps_serving(
    berth_server: Callable[..., BerthServer], repo: Path
) -> None:
    server = start(berth_server, repo, "--model-control-mode", "explicit")
    wait_ready(server)
    before = config_of(server)
    for bad in (
        {"max_batch_size": "sixteen"},
        {"max_batch_size": "1.5"},
        {"input": [{"name": "x", "data_type": "TYPE_FP64", "dims": ["-1"]}]},
        {"name": "other", "max_batch_size": 4},
        {"instance_group": [{"count": 0}]},
        {"dynamic_batching": {"priority_levels": "2"}},
    ):
        resp = http_call(
            server.port,
            "POST",
            "/v2/repository/models/adder/load",
            json.dumps({"parameters": {"config": json.dumps(bad)}}).encode(),
            {**ADM, "Content-Type": "application/json"},
        )
        assert_error(resp, 400, "failed to load 'adder'", "parameters.config")
    http = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        with pytest.raises(InferenceServerException) as info:
            http.load_model("adder", config='{"max_batch_size":"x"}', headers=ADM)
        assert "failed to load" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            grpc.load_model("adder", config='{"max_batch_size":"x"}', headers=GADM)
        assert "INVALID_ARGUMENT" in str(info.value.status())
        assert "failed to load" in info.value.message()
        # an override of a model the server does not serve
        with pytest.raises(InferenceServerException) as info:
            http.load_model("ghost", config='{"max_batch_size":"4"}', headers=ADM)
        assert "Request for unknown model: 'ghost' is not found" in info.value.message()
    finally:
        http.close()
        grpc.close()
    assert config_of(server) == before
    infer_ok(server)


def test_override_keeps_the_security_rules(
    berth_server: Callable[..., BerthServer], repo: Path, tmp_path: Path
) -> None:
    # mode none (the default): refused like any load
    server = start(berth_server, repo)
    wait_ready(server)
    body = json.dumps({"parameters": {"config": '{"max_batch_size":"4"}'}}).encode()
    headers = {"Content-Type": "application/json"}
    resp = http_call(
        server.port,
        "POST",
        "/v2/repository/models/adder/load",
        body,
        {**headers, "Authorization": f"Bearer {ADMIN}"},
    )
    assert_error(resp, 403, "--model-control-mode explicit")
    server.close()
    server = start(berth_server, repo, "--model-control-mode", "explicit")
    wait_ready(server)
    url = "/v2/repository/models/adder/load"
    assert_error(http_call(server.port, "POST", url, body, headers), 401)
    assert_error(
        http_call(
            server.port, "POST", url, body, {**headers, "Authorization": "Bearer wrong"}
        ),
        401,
    )
    assert_error(
        http_call(server.port, "POST", url, body, {**headers, **AUTH}), 403, "admin"
    )
    # naming a file makes it a whole entry: the path and code rules apply
    evil = tmp_path / "evil.py"
    evil.write_text("raise SystemExit('must not run')\n")
    for cfg in (
        {"max_batch_size": 4, "path": str(evil)},
        {
            "name": "adder",
            "max_batch_size": 4,
            "runtime": "python",
            "class": "Evil",
            "path": str(evil),
        },
    ):
        resp = http_call(
            server.port,
            "POST",
            url,
            json.dumps({"parameters": {"config": json.dumps(cfg)}}).encode(),
            {**headers, **ADM},
        )
        assert resp.status in (400, 403), resp.body[:300]
    assert config_of(server)["max_batch_size"] != 4
    # a foreign Origin is refused before anything is read
    assert_error(
        http_call(
            server.port,
            "POST",
            url,
            body,
            {**headers, **ADM, "Origin": "https://evil.example"},
        ),
        403,
    )
    infer_ok(server)
