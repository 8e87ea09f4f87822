"""The model repository API over REST: index, unload (drain, workers gone,
404 afterwards), load again, a new version loaded under load with no failed
request, and configs validated with errors naming the key."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tritonclient.http as httpclient
from berth_e2e import (
    BROKEN_LOAD_SOURCE,
    SLOW_SOURCE,
    BerthServer,
    add_python_model,
    assert_error,
    fill,
    http_call,
    outputs_by_name,
    proc_alive,
    wait_until,
    write_python_model,
)

ADDER_SOURCE = '''
import numpy as np
import berth


class Adder(berth.Model):
    """y = x + ADD."""

    inputs = [berth.TensorSpec("x", "FP64", [-1])]
    outputs = [berth.TensorSpec("y", "FP64", [-1])]

    def predict(self, inputs):
        return {"y": inputs["x"] + @ADD@}
'''


def x_body(value: float = 1.0) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [value]}]}


def index(server: BerthServer, **body: Any) -> dict[tuple[str, str], dict[str, Any]]:
    resp = server.post("/v2/repository/index", body or None)
    assert resp.status == 200, resp.body[:500]
    return {(m["name"], m["version"]): m for m in resp.json()}


def load(server: BerthServer, name: str, config: Any = None, timeout: float = 120.0) -> Any:
    body = {"parameters": {"config": config}} if config is not None else None
    return server.post(f"/v2/repository/models/{name}/load", body, timeout=timeout)


def unload(server: BerthServer, name: str, version: str | None = None, timeout: float = 120.0) -> Any:
    body = {"parameters": {"version": version}} if version is not None else None
    return server.post(f"/v2/repository/models/{name}/unload", body, timeout=timeout)


def server_repo(server: BerthServer) -> Path:
    """The repository folder the server serves (loads name files there)."""
    return Path(server.target[0])


def adder_entry(path: Path, version: str, cls: str = "Adder", **extra: Any) -> dict[str, Any]:
    return {"name": "adder", "version": version, "runtime": "python", "path": str(path), "class": cls, **extra}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    add_python_model(root, "adder", fill(ADDER_SOURCE, ADD=1), "Adder", yaml_extra="instances: 2\n")
    marks = tmp_path / "slow-marks.txt"
    add_python_model(root, "slow", fill(SLOW_SOURCE, MARKS=str(marks), DELAY=0.4), "Slow",
                     yaml_extra="instances: 1\nmax_batch_size: 0\n")
    return root


ADMIN = "repo-admin-token"


@pytest.fixture
def server(berth_server: Callable[..., BerthServer], repo: Path, tmp_path: Path) -> BerthServer:
    # The repository API is off by default (docs/security.md): explicit mode
    # turns it on; the admin token lets a request bring python entries.
    tokens = tmp_path / "admin-tokens"
    tokens.write_text(ADMIN + "\n")
    server = berth_server(str(repo), "--model-control-mode", "explicit",
                          "--admin-tokens-file", str(tokens))
    server.token = ADMIN
    return server


def test_index_lists_every_version(server: BerthServer) -> None:
    idx = index(server)
    assert set(idx) == {("adder", "1"), ("slow", "1")}
    for entry in idx.values():
        assert entry["state"] == "READY"
        assert entry["reason"] == ""
    assert set(index(server, ready=True)) == set(idx)
    assert "model_repository" in server.get("/v2").json()["extensions"]


def test_unload_stops_workers_then_load_restarts(server: BerthServer) -> None:
    before = {w: pid for w, pid in server.worker_pids().items() if w.startswith("adder/")}
    assert set(before) == {"adder/1/0", "adder/1/1"}
    resp = unload(server, "adder")
    assert resp.status == 200, resp.body[:500]
    assert resp.json()["versions"][0]["state"] == "UNAVAILABLE"
    # the worker processes are gone once unload answers
    for pid in before.values():
        wait_until(lambda pid=pid: not proc_alive(pid), 10, f"worker {pid} to exit")
    assert not any(w.startswith("adder/") for w in server.worker_pids())
    entry = index(server)[("adder", "1")]
    assert entry["state"] == "UNAVAILABLE" and entry["reason"] == "unloaded"
    assert ("adder", "1") not in index(server, ready=True)
    assert_error(server.infer("adder", x_body()), 404, "unloaded", "load")
    assert_error(server.get("/v2/models/adder/ready"), 404)
    assert_error(server.post("/v1/models/adder:predict", {"instances": [1.0]}), 404)
    # the other model, and so the server, is still ready
    assert server.get("/v2/health/ready").status == 200
    assert server.infer("slow", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}).status == 200
    # unloading again is fine
    assert unload(server, "adder").status == 200

    resp = load(server, "adder")
    assert resp.status == 200, resp.body[:500]
    assert resp.json()["versions"][0]["state"] == "READY"
    doc = server.infer_ok("adder", x_body(2.0))
    assert outputs_by_name(doc)["y"]["data"] == [3.0]
    after = {w: pid for w, pid in server.worker_pids().items() if w.startswith("adder/")}
    assert set(after) == set(before) and not set(after.values()) & set(before.values())
    # loading a ready model changes nothing
    assert load(server, "adder").status == 200
    assert server.worker_pids()["adder/1/0"] == after["adder/1/0"]


def test_unload_finishes_queued_requests(server: BerthServer) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [5]}]}
    results: list[int] = []

    def call() -> None:
        results.append(server.infer("slow", body).status)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    server.wait_queue("slow", inflight=3, queued=2)  # one running, two queued (one worker, 0.4 s each)
    started = time.monotonic()
    resp = unload(server, "slow")
    took = time.monotonic() - started
    for t in threads:
        t.join(30)
    assert resp.status == 200, resp.body[:500]
    assert results == [200, 200, 200], "queued requests must finish before the workers stop"
    assert took > 0.5, "unload answered before the queue drained"
    assert_error(server.infer("slow", body), 404)


def test_requests_during_unload_get_503(server: BerthServer) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}
    busy = threading.Thread(target=lambda: server.infer("slow", body))
    busy.start()
    server.wait_queue("slow", inflight=1, queued=0)  # on the worker
    done: list[Any] = []
    t = threading.Thread(target=lambda: done.append(unload(server, "slow")))
    t.start()
    wait_until(lambda: server.get("/v2/models/slow/ready").status != 200, 60, "slow to start unloading")
    assert_error(server.infer("slow", body), (503, 404), "unload")
    t.join(30)
    busy.join(30)
    assert done and done[0].status == 200


def test_new_version_under_load_drops_nothing(server: BerthServer, tmp_path: Path) -> None:
    v2 = write_python_model(server_repo(server) / "adder" / "2", "model.py", fill(ADDER_SOURCE, ADD=100))
    stop = threading.Event()
    seen: list[tuple[int, str | None, float | None]] = []
    lock = threading.Lock()

    def client() -> None:
        deadline = time.monotonic() + 90
        while not stop.is_set() and time.monotonic() < deadline:
            resp = server.infer("adder", x_body(1.0))
            version, y = None, None
            if resp.status == 200:
                doc = resp.json()
                version, y = doc["model_version"], outputs_by_name(doc)["y"]["data"][0]
            with lock:
                seen.append((resp.status, version, y))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        resp = load(server, "adder", adder_entry(v2, "2", instances=1))
        assert resp.status == 200, resp.body[:500]
        states = {v["version"]: v["state"] for v in resp.json()["versions"]}
        assert states == {"1": "READY", "2": "READY"}
        # unversioned requests move to the newest ready version
        wait_until(lambda: seen and seen[-1][1] == "2", 10, "requests to reach version 2")
        time.sleep(0.3)
        # the old version is unloaded while requests keep coming
        resp = unload(server, "adder", version="1")
        assert resp.status == 200, resp.body[:500]
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    failures = [s for s in seen if s[0] != 200]
    assert not failures, f"{len(failures)} of {len(seen)} requests failed: {failures[:5]}"
    assert {(v, y) for _, v, y in seen} <= {("1", 2.0), ("2", 101.0)}
    by_version = {v: sum(1 for _, x, _ in seen if x == v) for v in ("1", "2")}
    assert by_version["1"] > 10 and by_version["2"] > 10, by_version
    assert seen[-1][1:] == ("2", 101.0)
    idx = index(server)
    assert idx[("adder", "1")]["state"] == "UNAVAILABLE"
    assert idx[("adder", "2")]["state"] == "READY"
    assert server.infer("adder", x_body(), version="2").status == 200
    assert_error(server.infer("adder", x_body(), version="1"), 404, "unloaded")
    meta = server.get("/v2/models/adder").json()
    assert set(meta["versions"]) == {"1", "2"}


def test_reload_with_a_new_config(server: BerthServer, tmp_path: Path) -> None:
    v1b = write_python_model(server_repo(server) / "adder-v1b", "model.py", fill(ADDER_SOURCE, ADD=7))
    resp = load(server, "adder", json.dumps(adder_entry(v1b, "1")))  # a JSON string, as tritonclient sends
    assert resp.status == 200, resp.body[:500]
    assert outputs_by_name(server.infer_ok("adder", x_body(1.0)))["y"]["data"] == [8.0]
    assert server.get("/v2/models/adder/config").json()["instance_group"][0]["count"] >= 1


def test_tritonclient_repository_calls(server: BerthServer, tmp_path: Path) -> None:
    client = httpclient.InferenceServerClient(url=server.triton_url, network_timeout=120.0)
    h = {"Authorization": f"Bearer {ADMIN}"}
    try:
        names = {(m["name"], m["version"]) for m in client.get_model_repository_index(headers=h)}
        assert ("adder", "1") in names
        client.unload_model("adder", headers=h)
        assert not client.is_model_ready("adder", headers=h)
        client.load_model("adder", headers=h)
        assert client.is_model_ready("adder", headers=h)
        v3 = write_python_model(server_repo(server) / "adder" / "3", "model.py", fill(ADDER_SOURCE, ADD=3))
        client.load_model("adder", config=json.dumps(adder_entry(v3, "3", instances=1)), headers=h)
        assert client.is_model_ready("adder", "3", headers=h)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"name": "adder", "version": "9", "runtime": "python", "path": "/x", "max_batch_sise": 4},
         ("parameters.config.max_batch_sise", "unknown key")),
        ({"name": "adder", "version": "9", "runtime": "python"}, ("parameters.config.path", "required")),
        ({"name": "adder", "version": "9", "runtime": "python", "path": "/x", "instances": 0},
         ("parameters.config.instances",)),
        ({"name": "other", "version": "9", "runtime": "python", "path": "/x"}, ("parameters.config.name", "adder")),
        ("name: adder\nversion: 9\nruntime: python\npath: /x\nmax_queue_size: -1\n",
         ("parameters.config.max_queue_size",)),
        ("{not yaml: [", ("parameters.config",)),
        (42, ("parameters.config",)),
    ],
)
def test_load_with_a_bad_config(server: BerthServer, config: Any, words: tuple[str, ...]) -> None:
    assert_error(load(server, "adder", config), 400, *words)
    assert ("adder", "9") not in index(server)


def test_load_that_fails_reports_the_error(server: BerthServer, tmp_path: Path) -> None:
    bad = write_python_model(server_repo(server) / "broken" / "1", "model.py", BROKEN_LOAD_SOURCE)
    entry = {"name": "broken", "version": "1", "runtime": "python", "path": str(bad), "class": "Broken"}
    assert_error(load(server, "broken", entry), 500, "weights-missing.bin")
    # a version that failed through the API is unloaded, not retried
    entry = wait_until(lambda: index(server)[("broken", "1")]["state"] == "UNAVAILABLE"
                       and index(server)[("broken", "1")], 10, "broken to be unloaded")
    assert "weights-missing.bin" in entry["reason"]
    assert server.get("/v2/health/ready").status == 200
    assert_error(server.get("/v2/models/broken"), 404, "weights-missing.bin")


def test_repository_errors(server: BerthServer) -> None:
    assert_error(load(server, "nope"), 404, "failed to load 'nope'", "parameters.config")
    assert_error(unload(server, "nope"), 404, "Request for unknown model: 'nope' is not found")
    assert_error(unload(server, "adder", version="7"), 404,
                 "Request for unknown model: 'adder' version 7 is not found")
    assert_error(http_call(server.port, "GET", "/v2/repository/index",
                           headers={"Authorization": f"Bearer {ADMIN}"}), 405)
    assert_error(server.post("/v2/repository/models/adder/reload", None), 404)
    assert_error(server.post("/v2/repository/models/adder/load", "{"), 400, "JSON")
    assert_error(server.post("/v2/repository/models/adder/load",
                             {"parameters": {"file:1/model.py": "AAAA"}}), 400, "file:")
