"""Crash-isolated workers: a worker killed mid-request fails only what it was
running, is restarted, and nothing else notices; SIGTERM drains every
accepted request and exits 0; a model that cannot load is reported, not
crash-looped, while the others serve."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from berth_e2e import (
    BROKEN_LOAD_SOURCE,
    CRASH_SOURCE,
    DIES_AT_LOAD_SOURCE,
    SLOW_SOURCE,
    BerthServer,
    ModelZoo,
    Response,
    add_python_model,
    assert_error,
    copy_into,
    fill,
    infer_body,
    outputs_by_name,
    proc_alive,
    read_response,
    tensor,
    wait_until,
)

SLOW_DELAY_S = 1.0
IRIS_BODY = infer_body([tensor("input", "FP64", [1, 4], [5.1, 3.5, 1.4, 0.2])])


def slow_body(x: float) -> dict[str, Any]:
    return infer_body([tensor("x", "FP32", [1], [x])])


def marks_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def hammer(server: BerthServer, model: str, body: dict[str, Any], stop: threading.Event) -> list[Response]:
    """Sends requests to a model one after another until ``stop`` is set."""
    answers = []
    while not stop.is_set():
        answers.append(server.infer(model, body, timeout=30))
        time.sleep(0.05)
    return answers


# ------------------------------------------------------------ SIGKILL a worker


@pytest.fixture(scope="module")
def crash_repo(zoo: ModelZoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash-repo")
    add_python_model(
        root, "slow", fill(SLOW_SOURCE, MARKS=str(root / "slow.marks"), DELAY=SLOW_DELAY_S), "Slow"
    )
    add_python_model(root, "crash", CRASH_SOURCE, "Crash")
    copy_into(zoo.sklearn_classifier(), root / "iris" / "1", "model.joblib")
    return root


@pytest.fixture(scope="module")
def crash_server(module_server: Any, crash_repo: Path) -> BerthServer:
    return module_server(str(crash_repo))


def test_sigkill_worker_mid_request(crash_server: BerthServer, crash_repo: Path) -> None:
    server = crash_server
    marks = crash_repo / "slow.marks"
    slow_pid = server.wait_worker("slow/1/0")
    iris_pid = server.wait_worker("iris/1/0")
    crash_pid = server.wait_worker("crash/1/0")
    before = len(marks_lines(marks))

    n = 4
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=n + 1) as pool:
        iris_future = pool.submit(hammer, server, "iris", IRIS_BODY, stop)
        try:
            futures = [pool.submit(server.infer, "slow", slow_body(float(i)), None, 60.0) for i in range(n)]
            wait_until(
                lambda: len(marks_lines(marks)) > before,
                30,
                "the slow model to start a request",
                on_timeout=server.log_tail,
            )
            in_flight_pid, in_flight_x = marks_lines(marks)[before].split()
            assert int(in_flight_pid) == slow_pid
            os.kill(slow_pid, signal.SIGKILL)
            answers = [f.result(timeout=120) for f in futures]
        finally:
            stop.set()
        iris_answers = iris_future.result(timeout=60)

    victim = int(float(in_flight_x))
    for i, resp in enumerate(answers):
        if i == victim:
            assert_error(resp, 500, "worker", "exited")
        else:
            assert resp.status == 200, (
                f"request {i} was queued, not running, when the worker died; it must be "
                f"answered by the restarted worker, got {resp.status}: {resp.body[:300]!r}"
            )
            assert outputs_by_name(resp.json())["y"]["data"] == [i + 1.0]

    assert iris_answers, "the other model was not exercised"
    bad = [(r.status, r.body[:200]) for r in iris_answers if r.status != 200]
    assert not bad, f"the other model failed while a worker was restarted: {bad}"

    new_pid = server.wait_worker("slow/1/0", not_pid=slow_pid)
    assert new_pid != slow_pid
    assert server.worker_pids().get("iris/1/0") == iris_pid
    assert server.worker_pids().get("crash/1/0") == crash_pid
    doc = server.infer_ok("slow", slow_body(41.0))
    assert outputs_by_name(doc)["y"]["data"] == [42.0]
    assert server.running()


def test_client_disconnecting_mid_request(crash_server: BerthServer, crash_repo: Path) -> None:
    """A client that hangs up while its request runs hurts nobody: the
    engine, the worker and the next requests are fine."""
    server = crash_server
    marks = crash_repo / "slow.marks"
    slow_pid = server.wait_worker("slow/1/0")
    before = len(marks_lines(marks))
    body = json.dumps(slow_body(7.0)).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        wait_until(lambda: len(marks_lines(marks)) > before, 30, "the request to start running")
    # Hung up mid-request; the next requests are answered.
    doc = server.infer_ok("slow", slow_body(1.0))
    assert outputs_by_name(doc)["y"]["data"] == [2.0]
    assert server.infer("iris", IRIS_BODY).status == 200
    assert server.running()
    assert server.worker_pids().get("slow/1/0") == slow_pid


@pytest.mark.smoke
def test_worker_exiting_by_itself(crash_server: BerthServer) -> None:
    server = crash_server
    old = server.wait_worker("crash/1/0")
    iris_pid = server.wait_worker("iris/1/0")
    resp = server.infer("crash", infer_body([tensor("x", "FP32", [1], [-1.0])]))
    assert_error(resp, 500, "worker", "exited")

    # The engine and the other models are untouched, at once.
    assert server.running()
    assert server.infer("iris", IRIS_BODY).status == 200
    assert server.worker_pids().get("iris/1/0") == iris_pid

    new = server.wait_worker("crash/1/0", not_pid=old)
    wait_until(
        lambda: server.get("/v2/models/crash/ready").status == 200,
        30,
        "the crashed model to be ready again",
        on_timeout=server.log_tail,
    )
    doc = server.infer_ok("crash", infer_body([tensor("x", "FP32", [2], [2.0, 3.0])]))
    assert outputs_by_name(doc)["y"]["data"] == [4.0, 6.0]
    assert server.worker_pids().get("crash/1/0") == new


# ------------------------------------------------------------------- SIGTERM


def test_sigterm_drains_accepted_requests_and_exits_0(
    berth_server: Any, tmp_path: Path
) -> None:
    repo = tmp_path / "drain-repo"
    marks = tmp_path / "drain.marks"
    add_python_model(repo, "slow", fill(SLOW_SOURCE, MARKS=str(marks), DELAY=SLOW_DELAY_S), "Slow")
    server = berth_server(str(repo), "--drain-timeout", "30")
    worker = server.wait_worker("slow/1/0")

    n = 4
    sent = [threading.Event() for _ in range(n)]

    def call(i: int) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        try:
            conn.request(
                "POST",
                "/v2/models/slow/infer",
                body=json.dumps(slow_body(float(i))).encode(),
                headers={"Content-Type": "application/json"},
            )
            sent[i].set()
            return read_response(conn.getresponse())
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(call, i) for i in range(n)]
        wait_until(lambda: all(e.is_set() for e in sent), 30, "every request to be sent")
        wait_until(lambda: marks_lines(marks), 30, "the first request to run", on_timeout=server.log_tail)
        # the engine has accepted all of them (queued or running)
        wait_until(lambda: server.gauges("slow").get("berth_inflight_requests") == n, 60,
                   f"{n} requests to be in flight", on_timeout=server.log_tail)
        server.signal(signal.SIGTERM)
        t_term = time.monotonic()

        # Intake stops once the engine has handled the signal (it logs that;
        # a connection made before that moment may still be taken): nothing
        # new is served while the accepted ones drain.
        wait_until(
            lambda: any("drain" in str(r.get("msg", "")).lower() for r in server.log_records()),
            10,
            "the engine to log that it is draining",
            on_timeout=server.log_tail,
        )
        probe = _probe_new_request(server.port)
        assert probe in ("refused", 503), f"a new request during the drain got {probe}"

        answers = [f.result(timeout=120) for f in futures]

    for i, resp in enumerate(answers):
        assert resp.status == 200, f"accepted request {i} got {resp.status}: {resp.body[:300]!r}"
        assert outputs_by_name(resp.json())["y"]["data"] == [i + 1.0]

    rc = server.wait(timeout=40)
    assert rc == 0, f"berth exited {rc} after SIGTERM"
    assert time.monotonic() - t_term < 30 + 5, "exit took longer than the drain timeout"

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    wait_until(lambda: not proc_alive(worker), 10, f"worker {worker} to be gone after exit")


def _probe_new_request(port: int) -> str | int:
    """A new connection during a drain: 'refused' or the HTTP status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            "/v2/models/slow/infer",
            body=json.dumps(slow_body(99.0)).encode(),
            headers={"Content-Type": "application/json"},
        )
        return conn.getresponse().status
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        return "refused"
    finally:
        conn.close()


def test_sigterm_with_an_idle_keep_alive_connection_exits_0(berth_server: Any, zoo: ModelZoo) -> None:
    """An idle keep-alive connection (a load balancer's, say) does not hold
    the drain: the engine exits 0 well within --drain-timeout."""
    server = berth_server(str(zoo.sklearn_classifier()), "--drain-timeout", "30")
    worker = server.wait_worker("iris/1/0")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST", "/v2/models/iris/infer", body=json.dumps(IRIS_BODY).encode(),
                     headers={"Content-Type": "application/json"})
        assert read_response(conn.getresponse()).status == 200
        t_term = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=40) == 0
        assert time.monotonic() - t_term < 30, "the idle connection held the drain to its timeout"
    finally:
        conn.close()
    wait_until(lambda: not proc_alive(worker), 10, f"worker {worker} to be gone after exit")


# ------------------------------------------------------------ failing loads


@pytest.fixture(scope="module")
def load_repo(zoo: ModelZoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("load-repo")
    add_python_model(root, "broken", BROKEN_LOAD_SOURCE, "Broken")
    add_python_model(root, "dies", fill(DIES_AT_LOAD_SOURCE, MARKS=str(root / "dies.marks")), "Dies")
    copy_into(zoo.sklearn_classifier(), root / "iris" / "1", "model.joblib")
    return root


@pytest.fixture(scope="module")
def load_server(module_server: Any, load_repo: Path) -> BerthServer:
    # --no-exit-on-error: broken and dies fail to load at start; the server stays up
    return module_server(str(load_repo), "--no-exit-on-error", wait_for=["iris"])


def test_model_that_fails_to_load_is_503_with_the_error(load_server: BerthServer) -> None:
    server = load_server
    seen: list[tuple[int, str]] = []

    def reported() -> bool:
        resp = server.get("/v2/models/broken/ready")
        assert resp.status != 200, "a model whose load() raises must never be ready"
        seen.append((resp.status, resp.body[:300].decode(errors="replace")))
        return resp.status == 503 and b"weights-missing.bin" in resp.body

    wait_until(reported, 30, "the load error on /v2/models/broken/ready", interval=0.2,
               on_timeout=lambda: f"{seen[-3:]}\n{server.log_tail()}")
    assert_error(server.get("/v2/models/broken/ready"), 503, "weights-missing.bin")

    resp = server.infer("broken", infer_body([tensor("x", "FP32", [1], [1.0])]))
    assert_error(resp, 503, "broken")

    # The other model serves, and the engine is up.
    assert server.infer("iris", IRIS_BODY).status == 200
    assert server.running()


def test_worker_death_at_load_does_not_crash_loop(load_server: BerthServer, load_repo: Path) -> None:
    server = load_server
    marks = load_repo / "dies.marks"
    wait_until(lambda: marks_lines(marks), 30, "the dying model's first load", on_timeout=server.log_tail)
    start = len(marks_lines(marks))
    window_s = 8.0
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        resp = server.get("/v2/models/dies/ready")
        assert resp.status == 503, f"a model whose worker dies at load reported {resp.status}"
        assert server.infer("iris", IRIS_BODY).status == 200
        time.sleep(0.25)
    restarts = len(marks_lines(marks)) - start
    # Restart backoff (0.1 s doubling) allows about 7 attempts in 8 s; a
    # crash loop without backoff makes many more.
    assert restarts <= 12, f"{restarts} load attempts in {window_s:.0f}s: the worker is crash-looping"
    assert server.running()
    assert server.get("/v2/health/live").status == 200


def test_worker_death_at_load_is_reported(load_server: BerthServer, load_repo: Path) -> None:
    """A model whose worker dies while loading is not ready, and its ready
    endpoint says why (the worker exited) rather than that it is still
    loading."""
    server = load_server
    marks = load_repo / "dies.marks"
    wait_until(lambda: len(marks_lines(marks)) >= 3, 30, "three load attempts", on_timeout=server.log_tail)
    assert_error(server.get("/v2/models/dies/ready"), 503, "dies", "exited|died|signal|crash")
