"""What a web page in the operator's browser can make a Berth server do:
nothing. Each attack is sent as a browser would send it, over a real socket
with http.client (exact headers), against a real ``berth serve``:

- cross-site request forgery: an HTML form or a "simple" fetch can POST
  text/plain, application/x-www-form-urlencoded or multipart/form-data with
  no preflight: 415, and the model never ran / nothing was loaded;
- a foreign ``Origin``: 403 (and its CORS preflight: 403);
- DNS rebinding (a page whose own name now points at 127.0.0.1): its
  requests carry ``Host: evil.example``: 403 on REST, metrics and gRPC.

And what must keep working: no Content-Type (Triton's HTTP client sends
none), tritonclient over HTTP (JSON and binary) and gRPC by 127.0.0.1 and
localhost, the dashboard from its own origin, configured CORS origins with
their preflight, ``--allowed-hosts`` names and ``*``.
"""

from __future__ import annotations

import http.client
import json
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from berth_e2e import (
    SLOW_SOURCE,
    BerthServer,
    Response,
    add_python_model,
    assert_error,
    berth_executable,
    fill,
    free_port,
    read_response,
    server_env,
    wait_until,
)
from tritonclient.utils import InferenceServerException

FORM_TYPES = [
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=----berth",
]
EVIL = "http://evil.example"


def _control_flags() -> tuple[str, ...]:
    """The repository load API is off by default once model control modes
    exist (issue 16, --model-control-mode); these tests need it on."""
    out = subprocess.run(
        [berth_executable(), "serve", "--help"],
        check=False,
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=120,
    ).stdout
    return ("--model-control-mode", "explicit") if "--model-control-mode" in out else ()


def raw(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """One request with exactly these headers (http.client adds Host only
    when none is given, and Content-Length for a body; never a Content-Type)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        return read_response(conn.getresponse())
    finally:
        conn.close()


def x_body(value: float = 1.0) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [value]}]}
    ).encode()


class Marks:
    """The file the served model appends a line to each time it runs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def count(self) -> int:
        return len(self.path.read_text().splitlines()) if self.path.exists() else 0


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Marks, Marks]:
    root = tmp_path_factory.mktemp("browser") / "repo"
    marks = Marks(root.parent / "marks.txt")
    other = Marks(root.parent / "other-marks.txt")
    add_python_model(root, "slow", fill(SLOW_SOURCE, MARKS=str(marks.path), DELAY=0.0), "Slow",
                     yaml_extra="instances: 1\n")  # fmt: skip
    add_python_model(root, "other", fill(SLOW_SOURCE, MARKS=str(other.path), DELAY=0.0), "Slow",
                     yaml_extra="instances: 1\n")  # fmt: skip
    return root, marks, other


@pytest.fixture(scope="module")
def default(
    module_server: Callable[..., BerthServer], repo: tuple[Path, Marks, Marks]
) -> BerthServer:
    """A server as `berth serve` starts it: no allowed hosts, no CORS origins."""
    metrics_port = free_port()
    server = module_server(str(repo[0]), "--metrics-port", str(metrics_port), *_control_flags())
    server.metrics_port = metrics_port  # type: ignore[attr-defined]
    return server


@pytest.fixture(scope="module")
def configured(
    module_server: Callable[..., BerthServer], repo: tuple[Path, Marks, Marks]
) -> BerthServer:
    return module_server(
        str(repo[0]),
        "--allowed-hosts",
        "berth.internal,*.example.org",
        env={"BERTH_CORS_ORIGINS": "https://app.example,http://localhost:3000"},
    )


def host(server: BerthServer, name: str = "127.0.0.1") -> dict[str, str]:
    return {"Host": f"{name}:{server.port}"}


def assert_refused_415(resp: Response, ctype: str) -> None:
    message = assert_error(resp, 415, "application/json", "application/octet-stream")
    assert ctype.split(";")[0] in message


# ------------------------------------------------------------ content types


@pytest.mark.parametrize("ctype", FORM_TYPES)
def test_form_content_types_never_reach_the_model(
    default: BerthServer, repo: tuple[Path, Marks, Marks], ctype: str
) -> None:
    marks = repo[1]
    before = marks.count()
    for path, body in [
        ("/v2/models/slow/infer", x_body()),
        ("/v2/models/slow/versions/1/infer", x_body()),
        ("/v1/models/slow:predict", b'{"instances": [1.0]}'),
    ]:
        resp = raw(default.port, "POST", path, body, {"Content-Type": ctype})
        assert_refused_415(resp, ctype)
    assert marks.count() == before, "a refused request reached the model"
    # the same request as JSON does run it
    ok = raw(default.port, "POST", "/v2/models/slow/infer", x_body(),
             {"Content-Type": "application/json; charset=utf-8"})  # fmt: skip
    assert ok.status == 200, ok.body[:300]
    assert marks.count() == before + 1


def test_no_content_type_is_allowed(default: BerthServer, repo: tuple[Path, Marks, Marks]) -> None:
    marks = repo[1]
    before = marks.count()
    resp = raw(default.port, "POST", "/v2/models/slow/infer", x_body(2.0))
    assert resp.status == 200, resp.body[:300]
    assert resp.json()["outputs"][0]["data"] == [3.0]
    v1 = raw(default.port, "POST", "/v1/models/slow:predict", b'{"instances": [1.0]}')
    assert v1.status == 200, v1.body[:300]
    assert marks.count() == before + 2


def test_other_body_types_are_refused_too(default: BerthServer) -> None:
    for ctype in ["application/xml", "text/json", "application/jsonx", "",
                  "application/json, text/plain"]:  # fmt: skip
        resp = raw(default.port, "POST", "/v2/models/slow/infer", x_body(),
                   {"Content-Type": ctype})  # fmt: skip
        assert_error(resp, 415, "application/json", "curl")


def _ready(server: BerthServer, name: str) -> bool:
    return raw(server.port, "GET", f"/v2/models/{name}/ready").status == 200


def test_form_posts_load_and_unload_nothing(
    default: BerthServer, repo: tuple[Path, Marks, Marks]
) -> None:
    other = repo[2]
    assert _ready(default, "other")
    # a forged unload leaves the model serving
    for ctype in FORM_TYPES:
        resp = raw(default.port, "POST", "/v2/repository/models/other/unload", b"{}",
                   {"Content-Type": ctype})  # fmt: skip
        assert_refused_415(resp, ctype)
    assert _ready(default, "other")
    unload = raw(default.port, "POST", "/v2/repository/models/other/unload", b"{}",
                 {"Content-Type": "application/json"})  # fmt: skip
    assert unload.status == 200, unload.body[:300]
    wait_until(lambda: not _ready(default, "other"), 60, "other unloaded")
    # a forged load loads nothing
    before = other.count()
    for ctype in FORM_TYPES:
        for body in [b"", b'{"parameters": {}}', b"parameters=x"]:
            resp = raw(default.port, "POST", "/v2/repository/models/other/load", body,
                       {"Content-Type": ctype})  # fmt: skip
            assert_refused_415(resp, ctype)
    index = raw(default.port, "POST", "/v2/repository/index", b"", {"Content-Type": "text/plain"})
    assert_refused_415(index, "text/plain")
    assert not _ready(default, "other")
    states = {
        (m["name"], m["version"]): m.get("state")
        for m in raw(default.port, "POST", "/v2/repository/index").json()
    }
    assert states[("other", "1")] != "READY"
    # the real client's way (no Content-Type, no body) loads it
    load = raw(default.port, "POST", "/v2/repository/models/other/load")
    assert load.status == 200, load.body[:300]
    wait_until(lambda: _ready(default, "other"), 120, "other loaded again")
    assert other.count() == before


def test_form_posts_change_no_route(default: BerthServer) -> None:
    route = json.dumps({"split": [{"model": "slow", "weight": 1}]}).encode()
    resp = raw(default.port, "POST", "/v2/routes/forged", route, {"Content-Type": "text/plain"})
    assert_refused_415(resp, "text/plain")
    assert raw(default.port, "GET", "/v2/routes/forged").status == 404
    ok = raw(default.port, "POST", "/v2/routes/legit", route, {"Content-Type": "application/json"})
    assert ok.status == 200, ok.body[:300]


def test_gets_need_no_content_type_check(default: BerthServer) -> None:
    resp = raw(default.port, "GET", "/v2/models/slow", None, {"Content-Type": "text/plain"})
    assert resp.status == 200


# ------------------------------------------------------------------ Origin


def test_foreign_origin_is_refused(default: BerthServer, repo: tuple[Path, Marks, Marks]) -> None:
    marks = repo[1]
    before = marks.count()
    for origin in [EVIL, "null", f"http://127.0.0.1:{default.port + 1}",
                   f"https://127.0.0.1:{default.port}x", "http://localhost"]:  # fmt: skip
        resp = raw(default.port, "POST", "/v2/models/slow/infer", x_body(),
                   {"Content-Type": "application/json", "Origin": origin})  # fmt: skip
        assert_error(resp, 403, "Origin", "--cors-origins")
        assert resp.header("access-control-allow-origin") is None
        # no Content-Type does not help a page either
        resp = raw(default.port, "POST", "/v2/models/slow/infer", x_body(), {"Origin": origin})
        assert_error(resp, 403, "--cors-origins")
        assert_error(raw(default.port, "GET", "/v2/models/slow", None, {"Origin": origin}), 403)
    assert marks.count() == before


def test_own_origin_is_allowed(default: BerthServer) -> None:
    for name in ["127.0.0.1", "localhost"]:
        headers = {**host(default, name), "Origin": f"http://{name}:{default.port}"}
        resp = raw(default.port, "POST", "/v2/models/slow/infer", x_body(),
                   {**headers, "Content-Type": "application/json"})  # fmt: skip
        assert resp.status == 200, resp.body[:300]
        assert resp.header("access-control-allow-origin") is None  # same origin: no CORS
        assert resp.header("vary") is None  # no CORS origins configured
        state = raw(default.port, "GET", "/ui/api/state", None, headers)
        assert state.status == 200, state.body[:300]


def test_preflight_from_a_foreign_origin_is_refused(default: BerthServer) -> None:
    resp = raw(default.port, "OPTIONS", "/v2/models/slow/infer", None,
               {"Origin": EVIL, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type"})  # fmt: skip
    assert_error(resp, 403, "--cors-origins")
    assert resp.header("access-control-allow-origin") is None


def test_configured_origin_gets_cors(
    configured: BerthServer, repo: tuple[Path, Marks, Marks]
) -> None:
    origin = "https://app.example"
    asked = "content-type, inference-header-content-length"
    pre = raw(configured.port, "OPTIONS", "/v2/models/slow/infer", None,
              {"Origin": origin, "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": asked})  # fmt: skip
    assert pre.status == 204, pre.body[:300]
    assert pre.body == b""
    assert pre.header("access-control-allow-origin") == origin
    assert "POST" in (pre.header("access-control-allow-methods") or "")
    allowed = (pre.header("access-control-allow-headers") or "").lower()
    assert "content-type" in allowed and "inference-header-content-length" in allowed
    assert int(pre.header("access-control-max-age") or "0") > 0
    assert "Origin" in (pre.header("vary") or "")
    marks = repo[1]
    before = marks.count()
    resp = raw(configured.port, "POST", "/v2/models/slow/infer", x_body(),
               {"Origin": origin, "Content-Type": "application/json"})  # fmt: skip
    assert resp.status == 200, resp.body[:300]
    assert resp.header("access-control-allow-origin") == origin
    assert "Origin" in (resp.header("vary") or "")
    assert "x-request-id" in (resp.header("access-control-expose-headers") or "")
    assert marks.count() == before + 1
    # errors carry the header too, so that the page can read them
    err = raw(configured.port, "GET", "/v2/models/nope", None, {"Origin": origin})
    assert_error(err, 404)
    assert err.header("access-control-allow-origin") == origin
    # with CORS origins configured, answers without Origin say they vary by it
    plain = raw(configured.port, "GET", "/v2/models/slow")
    assert plain.status == 200 and plain.header("vary") == "Origin"
    assert plain.header("access-control-allow-origin") is None
    # listed origins are compared as browsers send them
    assert raw(configured.port, "GET", "/v2/models/slow", None,
               {"Origin": "http://localhost:3000"}).status == 200  # fmt: skip
    # an allowed origin still cannot send a form type
    form = raw(configured.port, "POST", "/v2/models/slow/infer", x_body(),
               {"Origin": origin, "Content-Type": "text/plain"})  # fmt: skip
    assert_refused_415(form, "text/plain")
    assert marks.count() == before + 1
    # other origins stay refused, their preflight too
    for o in [EVIL, "https://app.example.evil.example", "http://app.example"]:
        assert_error(raw(configured.port, "GET", "/v2/models/slow", None, {"Origin": o}), 403)
        pre = raw(configured.port, "OPTIONS", "/v2/models/slow/infer", None,
                  {"Origin": o, "Access-Control-Request-Method": "POST"})  # fmt: skip
        assert_error(pre, 403, "--cors-origins")


# -------------------------------------------------------------------- Host


def test_rebinding_host_is_refused(default: BerthServer, repo: tuple[Path, Marks, Marks]) -> None:
    marks = repo[1]
    before = marks.count()
    metrics_port = default.metrics_port  # type: ignore[attr-defined]
    for name in ["evil.example", f"evil.example:{default.port}", "localhost.evil.example",
                 f"127.0.0.1.nip.io:{default.port}"]:  # fmt: skip
        # the rebinding page's fetch: its own name in Host and in Origin
        resp = raw(default.port, "POST", "/v2/models/slow/infer", x_body(),
                   {"Host": name, "Origin": f"http://{name}",
                    "Content-Type": "application/json"})  # fmt: skip
        assert_error(resp, 403, "Host", "--allowed-hosts")
        for path in ["/v2/models/slow", "/v2/repository/index", "/ui", "/ui/api/state",
                     "/metrics", "/v2/health/ready"]:  # fmt: skip
            method = "POST" if "repository" in path else "GET"
            assert_error(raw(default.port, method, path, None, {"Host": name}), 403, "Host")
        metrics = raw(metrics_port, "GET", "/metrics", None, {"Host": name})
        assert_error(metrics, 403, "--allowed-hosts")
    assert marks.count() == before


def test_addresses_and_localhost_are_allowed(default: BerthServer) -> None:
    for name in ["127.0.0.1", "localhost", "LOCALHOST", "[::1]", "127.0.0.2", "10.1.2.3"]:
        resp = raw(default.port, "POST", "/v2/models/slow/infer", x_body(),
                   {**host(default, name), "Content-Type": "application/json"})  # fmt: skip
        assert resp.status == 200, (name, resp.body[:300])
        assert raw(default.port, "GET", "/v2/health/ready", None, {"Host": name}).status == 200
    metrics = raw(default.metrics_port, "GET", "/metrics", None,  # type: ignore[attr-defined]
                  {"Host": f"localhost:{default.metrics_port}"})  # type: ignore[attr-defined]
    assert metrics.status == 200 and b"berth_" in metrics.body


def test_allowed_hosts_add_names(configured: BerthServer) -> None:
    for name in ["berth.internal", "BERTH.INTERNAL", "models.example.org", "a.b.example.org"]:
        resp = raw(configured.port, "GET", "/v2/models/slow", None, host(configured, name))
        assert resp.status == 200, (name, resp.body[:300])
    for name in ["example.org", "berth.internal.evil.example", "evil.example"]:
        resp = raw(configured.port, "GET", "/v2/models/slow", None, host(configured, name))
        assert_error(resp, 403, "Host", "--allowed-hosts")
    # the page served under an allowed name is its own origin
    name = "berth.internal"
    resp = raw(configured.port, "POST", "/v2/models/slow/infer", x_body(),
               {**host(configured, name), "Origin": f"http://{name}:{configured.port}",
                "Content-Type": "application/json"})  # fmt: skip
    assert resp.status == 200, resp.body[:300]


def test_star_allows_any_host(
    berth_server: Callable[..., BerthServer], repo: tuple[Path, Marks, Marks]
) -> None:
    server = berth_server(str(repo[0]), env={"BERTH_ALLOWED_HOSTS": "*"})
    resp = raw(server.port, "POST", "/v2/models/slow/infer", x_body(),
               {"Host": "berth.default.svc.cluster.local:8080",
                "Content-Type": "application/json"})  # fmt: skip
    assert resp.status == 200, resp.body[:300]
    # Host is not the only defence: a foreign Origin and form types stay refused
    assert_error(raw(server.port, "GET", "/v2/models/slow", None,
                     {"Host": "evil.example", "Origin": EVIL + ":1"}), 403, "Origin")  # fmt: skip
    form = raw(server.port, "POST", "/v2/models/slow/infer", x_body(),
               {"Host": "evil.example", "Content-Type": "text/plain"})  # fmt: skip
    assert_refused_415(form, "text/plain")


# -------------------------------------------------------------- real clients


def test_tritonclient_http_still_works(default: BerthServer) -> None:
    for url in [f"127.0.0.1:{default.port}", f"localhost:{default.port}"]:
        client = httpclient.InferenceServerClient(url)
        try:
            for binary in (False, True):
                inp = httpclient.InferInput("x", [2], "FP32")
                inp.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32), binary_data=binary)
                out = httpclient.InferRequestedOutput("y", binary_data=binary)
                result = client.infer("slow", [inp], outputs=[out])
                assert result.as_numpy("y").tolist() == [2.0, 3.0]
            assert client.is_model_ready("slow")
            stats = client.get_inference_statistics("slow")
            assert stats["model_stats"]
        finally:
            client.close()


def test_tritonclient_grpc_still_works(default: BerthServer) -> None:
    for url in [f"127.0.0.1:{default.grpc_port}", f"localhost:{default.grpc_port}"]:
        client = grpcclient.InferenceServerClient(url)
        try:
            inp = grpcclient.InferInput("x", [2], "FP32")
            inp.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
            result = client.infer("slow", [inp])
            assert result.as_numpy("y").tolist() == [2.0, 3.0]
            assert client.is_server_live()
        finally:
            client.close()


def test_grpc_with_a_foreign_authority_is_denied(default: BerthServer) -> None:
    client = grpcclient.InferenceServerClient(
        f"127.0.0.1:{default.grpc_port}",
        channel_args=[("grpc.default_authority", "evil.example")],
    )
    try:
        with pytest.raises(InferenceServerException) as info:
            client.is_server_live()
        assert "PERMISSION_DENIED" in str(info.value.status())
        assert "--allowed-hosts" in info.value.message()
    finally:
        client.close()


def test_dashboard_still_loads(default: BerthServer) -> None:
    page = raw(default.port, "GET", "/ui")
    assert page.status == 200 and b"<html" in page.body.lower()
    state = raw(default.port, "GET", "/ui/api/state", None,
                {"Origin": f"http://127.0.0.1:{default.port}"})  # fmt: skip
    assert state.status == 200
    assert any(m["name"] == "slow" for m in state.json()["models"])


