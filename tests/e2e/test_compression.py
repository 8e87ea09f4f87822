"""Compressed HTTP bodies (Content-Encoding: gzip or deflate) and answers
(Accept-Encoding), as tritonclient's request_compression_algorithm and
response_compression_algorithm send them, and curl --compressed. Inflation
stops at server.max_body_bytes: a zip bomb of a few KB is a 413 and the
server keeps serving."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from berth_e2e import BerthServer, add_python_model, assert_error, http_call

DOUBLER_SOURCE = """
import berth


class Doubler(berth.Model):
    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]

    def predict(self, inputs):
        return {"y": inputs["x"] * 2}
"""

LIMIT = 1 << 20  # server.max_body_bytes for these tests
TOKEN = "zip-token"


@pytest.fixture(scope="module")
def server(module_server: Any, tmp_path_factory: pytest.TempPathFactory) -> BerthServer:
    root = tmp_path_factory.mktemp("compress")
    add_python_model(
        root / "repo", "doubler", DOUBLER_SOURCE, "Doubler", yaml_extra="instances: 1\n"
    )
    return module_server(
        str(root / "repo"),
        "--max-body-bytes",
        str(LIMIT),
        "--auth-tokens-env",
        "BERTH_ZIP_TOKENS",
        env={"BERTH_ZIP_TOKENS": TOKEN},
        wait_for="listening",
    )


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def body(n: int = 3) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [n],
                    "data": [float(i) for i in range(n)],
                }
            ]
        }
    ).encode()


def post(server: BerthServer, data: bytes, headers: dict[str, str]) -> Any:
    return http_call(
        server.port,
        "POST",
        "/v2/models/doubler/infer",
        data,
        {"Content-Type": "application/json", **AUTH, **headers},
    )


def wait_ready(server: BerthServer) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        deadline = time.monotonic() + 120
        while not client.is_model_ready("doubler", headers=dict(AUTH)):
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.1)
    finally:
        client.close()


@pytest.mark.parametrize("req_alg", [None, "gzip", "deflate"])
@pytest.mark.parametrize("resp_alg", [None, "gzip", "deflate"])
def test_tritonclient_compression(
    server: BerthServer, req_alg: str | None, resp_alg: str | None
) -> None:
    wait_ready(server)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        x = np.arange(1000, dtype=np.float32)
        for binary in (False, True):
            inp = httpclient.InferInput("x", [1000], "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            out = httpclient.InferRequestedOutput("y", binary_data=binary)
            # a copy: tritonclient adds its compression headers to the dict it is given
            result = client.infer(
                "doubler",
                [inp],
                outputs=[out],
                headers=dict(AUTH),
                request_compression_algorithm=req_alg,
                response_compression_algorithm=resp_alg,
            )
            np.testing.assert_array_equal(result.as_numpy("y"), x * 2)
    finally:
        client.close()


def test_raw_answers_carry_content_encoding(server: BerthServer) -> None:
    wait_ready(server)
    for alg, decompress in (("gzip", gzip.decompress), ("deflate", zlib.decompress)):
        resp = post(server, body(), {"Accept-Encoding": alg})
        assert resp.status == 200
        assert resp.header("content-encoding") == alg
        assert "Accept-Encoding" in (resp.header("vary") or "")
        assert json.loads(decompress(resp.body))["outputs"][0]["data"] == [
            0.0,
            2.0,
            4.0,
        ]
    # no Accept-Encoding, or only what Berth does not speak: plain
    for accept in (None, "br", "gzip;q=0"):
        resp = post(server, body(), {"Accept-Encoding": accept} if accept else {})
        assert resp.status == 200 and resp.header("content-encoding") is None
        assert resp.json()["outputs"][0]["data"] == [0.0, 2.0, 4.0]
    # a raw deflate stream (no zlib header) is accepted too
    c = zlib.compressobj(wbits=-15)
    resp = post(server, c.compress(body()) + c.flush(), {"Content-Encoding": "deflate"})
    assert resp.status == 200, resp.body[:300]


def test_only_inference_answers_are_compressed(server: BerthServer) -> None:
    """Metadata, statistics, health and the repository index stay plain even
    when the client accepts gzip, as Triton does: tritonclient's asyncio
    client switches aiohttp's own decompression off and inflates inference
    answers alone (an example of Triton's failed on gzipped statistics)."""
    wait_ready(server)
    accept = {"Accept-Encoding": "gzip, deflate", **AUTH}
    for method, path in (
        ("GET", "/v2"),
        ("GET", "/v2/health/ready"),
        ("GET", "/v2/models/doubler"),
        ("GET", "/v2/models/doubler/config"),
        ("GET", "/v2/models/doubler/stats"),
        ("POST", "/v2/repository/index"),
    ):
        resp = http_call(server.port, method, path, b"{}" if method == "POST" else None,
                         {**accept, "Content-Type": "application/json"}
                         if method == "POST" else accept)
        assert resp.status == 200, (path, resp.body[:200])
        assert resp.header("content-encoding") is None, path
        assert isinstance(resp.json(), (dict, list)), path
    # an inference's error stays plain too; its success is compressed
    bad = post(server, b'{"inputs": []}', {"Accept-Encoding": "gzip"})
    assert bad.status == 400 and bad.header("content-encoding") is None
    assert "error" in bad.json()


def test_curl_compressed(server: BerthServer) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    wait_ready(server)
    raw = subprocess.run(
        [
            curl,
            "-sS",
            "--compressed",
            "-D",
            "-",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Content-Encoding: gzip",
            "--data-binary",
            "@-",
            f"http://127.0.0.1:{server.port}/v2/models/doubler/infer",
        ],
        input=gzip.compress(body()),
        capture_output=True,
        timeout=60,
        check=True,
    )
    head, _, payload = raw.stdout.partition(b"\r\n\r\n")
    assert b"content-encoding: " in head.lower()
    assert json.loads(payload)["outputs"][0]["data"] == [0.0, 2.0, 4.0]


def test_zip_bomb_is_413_and_the_server_keeps_serving(server: BerthServer) -> None:
    wait_ready(server)
    bomb = gzip.compress(b" " * (LIMIT * 8), compresslevel=9)  # 8 MiB of blanks
    assert len(bomb) < 40_000
    for alg, data in (
        ("gzip", bomb),
        ("deflate", zlib.compress(b" " * (LIMIT * 8), 9)),
    ):
        msg = assert_error(
            post(server, data, {"Content-Encoding": alg}), 413, "max_body_bytes"
        )
        assert str(LIMIT) in msg
    # just under the limit inflates and is then judged as JSON (here: valid)
    padded = body()[:-1] + b" " * (LIMIT - len(body()) - 10) + b"}"
    assert len(padded) <= LIMIT
    assert (
        post(server, gzip.compress(padded), {"Content-Encoding": "gzip"}).status == 200
    )
    assert post(server, body(), {}).status == 200


def test_bad_compressed_bodies(server: BerthServer, tmp_path: Path) -> None:
    wait_ready(server)
    good = gzip.compress(body())
    assert_error(
        post(server, good[:-8], {"Content-Encoding": "gzip"}), 400, "truncated"
    )
    assert_error(
        post(server, b"not gzip at all", {"Content-Encoding": "gzip"}), 400, "corrupt"
    )
    assert_error(
        post(server, good + b"xx", {"Content-Encoding": "gzip"}), 400, "follow"
    )
    assert_error(post(server, good, {"Content-Encoding": "br"}), 415, "'br'")
    assert_error(post(server, good, {"Content-Encoding": "gzip, gzip"}), 415)
    # no token: refused before anything is inflated
    resp = http_call(
        server.port,
        "POST",
        "/v2/models/doubler/infer",
        good,
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert_error(resp, 401)
    resp = post(
        server, good, {"Content-Encoding": "gzip", "Origin": "https://evil.example"}
    )
    assert_error(resp, 403)
    assert post(server, good, {"Content-Encoding": "gzip"}).status == 200


# ------------------------------------------------------------------ gRPC

GAUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("alg", [None, "gzip", "deflate"])
def test_grpc_message_compression(server: BerthServer, alg: str | None) -> None:
    """tritonclient's compression_algorithm: the channel sends grpc-encoding
    and compressed-flagged messages; the server inflates them."""
    import tritonclient.grpc as grpcclient

    wait_ready(server)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        x = np.arange(5000, dtype=np.float32)
        inp = grpcclient.InferInput("x", [5000], "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer(
            "doubler", [inp], headers=dict(GAUTH), compression_algorithm=alg
        )
        np.testing.assert_array_equal(result.as_numpy("y"), x * 2)
    finally:
        client.close()


def test_grpc_compressed_bomb_is_resource_exhausted(server: BerthServer) -> None:
    """A compressed message that inflates past grpc_max_message_bytes (here
    max_body_bytes, 1 MiB) is refused; the server serves on."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    wait_ready(server)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        zeros = np.zeros(LIMIT * 2, dtype=np.float32)  # 8 MiB: a few KB compressed
        inp = grpcclient.InferInput("x", [zeros.size], "FP32")
        inp.set_data_from_numpy(zeros)
        with pytest.raises(InferenceServerException) as info:
            client.infer(
                "doubler", [inp], headers=dict(GAUTH), compression_algorithm="gzip"
            )
        assert "RESOURCE_EXHAUSTED" in str(info.value.status())
        assert "grpc_max_message_bytes" in info.value.message()
        small = grpcclient.InferInput("x", [2], "FP32")
        small.set_data_from_numpy(np.array([1, 2], dtype=np.float32))
        out = client.infer(
            "doubler", [small], headers=dict(GAUTH), compression_algorithm="gzip"
        )
        np.testing.assert_array_equal(out.as_numpy("y"), [2, 4])
    finally:
        client.close()
