"""TLS (REST and gRPC, ALPN) and bearer tokens, end to end.

The certificate is made by the test with the openssl command; clients are
Python's own ssl/http.client, curl, and tritonclient over gRPC.
"""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from berth_e2e import BerthServer

USER_TOKEN = "user-token-123"
ADMIN_TOKEN = "admin-token-456"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "server.crt", d / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True)
    return crt, key


@pytest.fixture(scope="module")
def server(module_server: Any, zoo: Any, cert: tuple[Path, Path],
           tmp_path_factory: pytest.TempPathFactory) -> BerthServer:
    crt, key = cert
    d = tmp_path_factory.mktemp("tokens")
    (d / "admin").write_text(f"# admins\n{ADMIN_TOKEN}\n")
    return module_server(
        str(zoo.sklearn_classifier()),
        "--tls-cert", str(crt), "--tls-key", str(key),
        "--auth-tokens-env", "BERTH_TEST_TOKENS",
        "--admin-tokens-file", str(d / "admin"),
        env={"BERTH_TEST_TOKENS": f"other,{USER_TOKEN}"},
        scheme="https", ca_file=str(crt),
    )


def https(server: BerthServer, cert: tuple[Path, Path], method: str, path: str,
          body: Any = None, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


IRIS_BODY = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4],
                         "data": [5.1, 3.5, 1.4, 0.2]}]}


def test_https_inference_with_a_token(server: BerthServer, cert: tuple[Path, Path]) -> None:
    status, _, body = https(server, cert, "POST", "/v2/models/iris/infer", IRIS_BODY, USER_TOKEN)
    assert status == 200, body
    outs = {o["name"]: o for o in json.loads(body)["outputs"]}
    assert outs["predict"]["data"] == [0]


def test_plain_http_on_a_tls_port_is_refused(server: BerthServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            conn.request("GET", "/v2/health/live")
            conn.getresponse().read()
    finally:
        conn.close()


def test_missing_or_wrong_token_is_401(server: BerthServer, cert: tuple[Path, Path]) -> None:
    for token in (None, "nope", USER_TOKEN + "x"):
        status, headers, body = https(server, cert, "POST", "/v2/models/iris/infer",
                                      IRIS_BODY, token)
        assert status == 401, body
        assert "bearer" in headers.get("www-authenticate", "").lower()
        assert "token" in json.loads(body)["error"].lower()
    status, _, _ = https(server, cert, "GET", "/v2/models/iris", token=None)
    assert status == 401


def test_health_is_open_without_a_token(server: BerthServer, cert: tuple[Path, Path]) -> None:
    for path in ("/v2/health/live", "/v2/health/ready"):
        status, _, body = https(server, cert, "GET", path)
        assert status == 200, body


def test_admin_endpoints_need_an_admin_token(server: BerthServer, cert: tuple[Path, Path]) -> None:
    status, _, body = https(server, cert, "POST", "/v2/repository/models/iris/load", {}, USER_TOKEN)
    assert status == 403, body
    assert "admin" in json.loads(body)["error"].lower()
    status, _, body = https(server, cert, "POST", "/v2/repository/index", {}, ADMIN_TOKEN)
    assert status == 200, body
    # The admin token opens inference too.
    status, _, body = https(server, cert, "POST", "/v2/models/iris/infer", IRIS_BODY, ADMIN_TOKEN)
    assert status == 200, body


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_alpn_picks_http2_with_curl(server: BerthServer, cert: tuple[Path, Path]) -> None:
    out = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", str(cert[0]),
         "-H", f"Authorization: Bearer {USER_TOKEN}",
         "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
         f"https://127.0.0.1:{server.port}/v2/models/iris"],
        check=True, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "2 200"
    out = subprocess.run(
        ["curl", "-sS", "--http1.1", "--cacert", str(cert[0]),
         "-H", f"Authorization: Bearer {USER_TOKEN}",
         "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
         f"https://127.0.0.1:{server.port}/v2/models/iris"],
        check=True, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "1.1 200"


def test_grpc_over_tls_with_tokens(server: BerthServer, cert: tuple[Path, Path]) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    if not getattr(server, "grpc_port", None):
        pytest.skip("this server was started without a gRPC port")
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(
        f"127.0.0.1:{server.grpc_port}", ssl=True, root_certificates=str(cert[0]))
    x = np.array([[5.1, 3.5, 1.4, 0.2]])
    inp = grpcclient.InferInput("input", list(x.shape), "FP64")
    inp.set_data_from_numpy(x)
    res = client.infer("iris", [inp], headers={"authorization": f"Bearer {USER_TOKEN}"})
    assert res.as_numpy("predict").tolist() == [0]
    with pytest.raises(InferenceServerException) as e:
        client.infer("iris", [inp])
    assert "UNAUTHENTICATED" in str(e.value.status()) or "Unauthenticated" in str(e.value)
    with pytest.raises(InferenceServerException) as e:
        client.load_model("iris", headers={"authorization": f"Bearer {USER_TOKEN}"})
    assert "PERMISSION_DENIED" in str(e.value.status()) or "PermissionDenied" in str(e.value)
    client.close()
