"""GET /metrics: the Prometheus text exposition. Requests over REST and gRPC
are counted by protocol and outcome, the histograms add up, and the counters
live in the engine, so a worker killed with SIGKILL bumps the restart counter
and resets nothing."""

from __future__ import annotations

import http.client
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from berth_e2e import (
    RAISER_SOURCE,
    BerthServer,
    ModelZoo,
    add_python_model,
    copy_into,
    free_port,
    infer_body,
    tensor,
    wait_until,
)

parser = pytest.importorskip("prometheus_client.parser", reason="prometheus-client is in the test extra")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]

Key = tuple[str, frozenset[tuple[str, str]]]


class Scrape:
    """One parsed /metrics answer: samples by name and labels, and the
    declared type of every family."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[Key, float] = {}
        self.types: dict[str, str] = {}
        for fam in parser.text_string_to_metric_families(text):
            self.types[fam.name] = fam.type
            for s in fam.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def requests(self, model: str, protocol: str, outcome: str) -> float:
        return self.get("berth_requests_total", model=model, version="1", protocol=protocol, outcome=outcome)


def get(port: int, path: str, method: str = "GET", token: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of one plain HTTP/1.1 request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read().decode("utf-8")
    finally:
        conn.close()


def scrape(server: BerthServer, port: int | None = None, token: str | None = None) -> Scrape:
    status, ctype, body = get(port or server.port, "/metrics", token=token)
    assert status == 200, body[:500]
    assert ctype == CONTENT_TYPE
    return Scrape(body)


@pytest.fixture(scope="module")
def repo(zoo: ModelZoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("metrics-repo")
    copy_into(zoo.sklearn_classifier(), root / "iris" / "1", "model.joblib")
    add_python_model(root, "raiser", RAISER_SOURCE, "Raiser")
    return root


@pytest.fixture(scope="module")
def server(module_server: Any, repo: Path) -> BerthServer:
    return module_server(str(repo))


def grpc_infer(client: Any, model: str, name: str, arr: np.ndarray) -> Any:
    inp = grpcclient.InferInput(name, list(arr.shape), "FP64" if arr.dtype == np.float64 else "FP32")
    inp.set_data_from_numpy(arr)
    return client.infer(model, [inp])


@pytest.mark.smoke
def test_counts_by_protocol_and_outcome(server: BerthServer) -> None:
    before = scrape(server)
    good = infer_body([tensor("input", "FP64", [1, 4], IRIS_ROW)])
    wrong_shape = infer_body([tensor("input", "FP64", [1, 3], IRIS_ROW[:3])])
    for _ in range(3):
        assert server.infer("iris", good).status == 200
    assert server.infer("iris", wrong_shape).status == 400
    for _ in range(2):
        assert server.infer("raiser", infer_body([tensor("x", "FP32", [1], [-1.0])])).status == 500

    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        for _ in range(2):
            grpc_infer(client, "iris", "input", np.array([IRIS_ROW], dtype=np.float64))
        with pytest.raises(InferenceServerException):
            grpc_infer(client, "raiser", "x", np.array([-2.0], dtype=np.float32))
    finally:
        client.close()

    after = scrape(server)

    def delta(model: str, protocol: str, outcome: str) -> float:
        return after.requests(model, protocol, outcome) - before.requests(model, protocol, outcome)

    assert delta("iris", "rest", "success") == 3
    assert delta("iris", "rest", "client_error") == 1
    assert delta("iris", "grpc", "success") == 2
    assert delta("raiser", "rest", "server_error") == 2
    assert delta("raiser", "grpc", "server_error") == 1
    for outcome in ("timeout", "overload", "unavailable"):
        assert delta("iris", "rest", outcome) == 0

    # Every answered request is in the duration histogram, once.
    lab = {"model": "iris", "version": "1"}
    count = after.get("berth_request_duration_seconds_count", **lab)
    assert count - before.get("berth_request_duration_seconds_count", **lab) == 6
    assert after.get("berth_request_duration_seconds_bucket", le="+Inf", **lab) == count
    assert after.get("berth_request_duration_seconds_sum", **lab) > before.get(
        "berth_request_duration_seconds_sum", **lab
    )
    # Buckets are cumulative.
    buckets = sorted(
        (float(dict(k[1])["le"]), v)
        for k, v in after.samples.items()
        if k[0] == "berth_request_duration_seconds_bucket" and dict(k[1]).get("model") == "iris"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)

    # Five requests reached the iris worker, one row each.
    for name in ("berth_queue_duration_seconds", "berth_compute_duration_seconds"):
        assert after.get(name + "_count", **lab) - before.get(name + "_count", **lab) == 5
    assert after.get("berth_batch_size_count", **lab) - before.get("berth_batch_size_count", **lab) == 5
    assert after.get("berth_batch_size_bucket", le="1", **lab) == after.get("berth_batch_size_count", **lab)

    assert after.get("berth_queue_depth", **lab) == 0
    assert after.get("berth_inflight_requests", **lab) == 0
    assert after.get("berth_workers", **lab) >= 1
    assert after.get("berth_model_load_seconds", **lab) > 0
    assert after.get("berth_workers_resident_memory_bytes", **lab) > 1e6
    assert after.get("berth_process_cpu_seconds_total") > 0
    assert after.get("berth_process_resident_memory_bytes") > 1e6
    versions = [dict(k[1])["version"] for k in after.samples if k[0] == "berth_build_info"]
    assert versions and versions[0] == server.get("/v2").json()["version"]


def test_types_and_help(server: BerthServer) -> None:
    s = scrape(server)
    assert s.types["berth_requests"] == "counter"
    assert s.types["berth_worker_restarts"] == "counter"
    assert s.types["berth_process_cpu_seconds"] == "counter"
    for name in ("berth_request_duration_seconds", "berth_queue_duration_seconds",
                 "berth_compute_duration_seconds", "berth_batch_size"):
        assert s.types[name] == "histogram"
    for name in ("berth_queue_depth", "berth_inflight_requests", "berth_workers",
                 "berth_model_load_seconds", "berth_process_resident_memory_bytes", "berth_build_info"):
        assert s.types[name] == "gauge"
    for fam in s.types:
        assert f"# HELP {fam}" in s.text
    assert server.post("/metrics", {}).status == 405


def test_worker_restart_keeps_counters(server: BerthServer) -> None:
    body = infer_body([tensor("x", "FP32", [1], [1.0])])
    assert server.infer("raiser", body).status == 200
    before = scrape(server)
    lab = {"model": "raiser", "version": "1"}
    pid = server.wait_worker("raiser/1/0")
    os.kill(pid, signal.SIGKILL)
    server.wait_worker("raiser/1/0", not_pid=pid)
    wait_until(
        lambda: server.get("/v2/models/raiser/ready").status == 200, 30, "raiser ready again"
    )
    assert server.infer("raiser", body).status == 200
    after = scrape(server)
    assert after.get("berth_worker_restarts_total", **lab) == before.get("berth_worker_restarts_total", **lab) + 1
    assert after.requests("raiser", "rest", "success") == before.requests("raiser", "rest", "success") + 1
    assert after.requests("raiser", "rest", "server_error") == before.requests("raiser", "rest", "server_error")
    assert after.get("berth_workers", **lab) == 1


def test_metrics_port_and_tokens(berth_server: Any, zoo: ModelZoo) -> None:
    """With tokens configured /metrics needs one, like every non-admin
    endpoint, on the REST port and on server.metrics_port alike."""
    mport = free_port()
    server = berth_server(
        str(zoo.sklearn_classifier()),
        "--metrics-port", str(mport),
        "--auth-tokens-env", "BERTH_TEST_TOKENS",
        env={"BERTH_TEST_TOKENS": "scraper-token"},
        wait_for="listening",
    )
    for port in (server.port, mport):
        status, _, body = get(port, "/metrics")
        assert status == 401, body
        status, _, body = get(port, "/metrics", token="wrong")
        assert status == 401, body
        s = scrape(server, port=port, token="scraper-token")
        assert ("berth_build_info", frozenset()) not in s.samples
        assert any(k[0] == "berth_requests_total" for k in s.samples)
    assert get(mport, "/v2", token="scraper-token")[0] == 404
    assert get(mport, "/metrics", method="POST", token="scraper-token")[0] == 405
