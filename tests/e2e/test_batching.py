"""Dynamic batching, priorities, timeouts and overload, end to end.

Every model here is a custom ``berth.Model`` that reports, per row, how many
rows the batch it ran in had and which call of ``predict`` it was, so the
tests can see what the engine's batcher did. Nothing here asserts speed.
A test that needs the worker busy sends a *gated* request, whose predict
waits until the test creates its gate file, and waits for the model's queue
gauges (/metrics) to show that request on the worker and the next ones
queued: no sleep stands for "the request got there". The only clocks left
are bounds on semantics with a wide margin (a lone request or a full batch
does not wait a 60 s batching delay), and the two adaptive-wait tests, which
check the batcher's timing itself (its decisions have C unit tests,
engine/tests, on the pure batch planner).
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from berth_e2e import BerthServer, assert_error, outputs_by_name, tensor, wait_until

ECHO = '''
import os, threading, time
import numpy as np
import berth

GATES = @GATES@

_calls = 0
_lock = threading.Lock()

class Echo(berth.Model):
    inputs = [berth.TensorSpec("x", "FP32", [-1, 2])]
    outputs = [berth.TensorSpec("y", "FP32", [-1, 2]),
               berth.TensorSpec("rows", "INT64", [-1]),
               berth.TensorSpec("call", "INT64", [-1])]

    def predict(self, inputs):
        global _calls
        with _lock:
            _calls += 1
            call = _calls
        x = inputs["x"]
        delay = float(x[:, 1].max()) if x.size else 0.0
        if delay > 0:
            time.sleep(min(delay, 5.0))
        gate = -float(x[:, 1].min()) if x.size else 0.0
        if gate > 0:  # held until the test opens gate-<n> (at most 120 s)
            path = os.path.join(GATES, "gate-%d" % int(gate))
            end = time.monotonic() + 120
            while not os.path.exists(path) and time.monotonic() < end:
                time.sleep(0.01)
        n = x.shape[0]
        return {"y": x.copy(),
                "rows": np.full(n, n, dtype=np.int64),
                "call": np.full(n, call, dtype=np.int64)}
'''


class Gates:
    """Gated requests: `row()` is a request row whose predict waits until
    `open()` creates its gate file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._ids = itertools.count(1)
        self.current = 0

    def row(self) -> list[float]:
        self.current = next(self._ids)
        return [0.0, -float(self.current)]

    def open(self) -> None:
        (self.folder / f"gate-{self.current}").touch()


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> Gates:
    return Gates(tmp_path_factory.mktemp("gates"))


def make_model(repo: Path, name: str, yaml: str, gates: Gates) -> None:
    d = repo / name / "1"
    d.mkdir(parents=True)
    (d / "model.py").write_text(ECHO.replace("@GATES@", repr(str(gates.folder))))
    (repo / name / "berth.yaml").write_text(yaml)


@pytest.fixture(scope="module")
def server(module_server: Any, tmp_path_factory: pytest.TempPathFactory, gates: Gates) -> BerthServer:
    repo = tmp_path_factory.mktemp("batching-repo")
    # Batches of up to 8 rows, gathered for at most 2 s.
    make_model(repo, "batched", "max_batch_size: 8\nmax_queue_delay_us: 2000000\ninstances: 1\n", gates)
    # Natural batching only (no delay): stacks what queued while busy.
    make_model(repo, "natural", "max_batch_size: 16\ninstances: 1\n", gates)
    # Never batched.
    make_model(repo, "single", "max_batch_size: 0\ninstances: 1\n", gates)
    # A tiny queue, to overload.
    make_model(repo, "tiny", "max_batch_size: 0\ninstances: 1\nmax_queue_size: 2\n", gates)
    # A 60 s delay (the most allowed): a request that waited it would show.
    make_model(repo, "patient", "max_batch_size: 8\nmax_queue_delay_us: 60000000\ninstances: 1\n", gates)
    # Two workers and a 60 s delay: an idle worker takes a lone request at once.
    make_model(repo, "delayed", "max_batch_size: 8\nmax_queue_delay_us: 60000000\ninstances: 2\n", gates)
    # One worker each, to see the adaptive wait at work (one model per test:
    # the batcher remembers the concurrency and batch times it has seen).
    make_model(repo, "gather", "max_batch_size: 8\nmax_queue_delay_us: 2000000\ninstances: 1\n", gates)
    make_model(repo, "bounded", "max_batch_size: 8\nmax_queue_delay_us: 300000\ninstances: 1\n", gates)
    # A model-wide default timeout of 0.3 s.
    make_model(repo, "deadline", "max_batch_size: 0\ninstances: 1\ntimeout_us: 300000\n", gates)
    return module_server(str(repo))


def body(rows: list[list[float]], **params: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"inputs": [tensor("x", "FP32", [len(rows), 2], rows)]}
    if params:
        doc["parameters"] = params
    return doc


def infer(server: BerthServer, model: str, rows: list[list[float]], **params: Any) -> Any:
    return server.infer(model, body(rows, **params), timeout=60)


def outs(resp: Any) -> dict[str, list[Any]]:
    assert resp.status == 200, resp.body[:500]
    return {k: v["data"] for k, v in outputs_by_name(resp.json()).items()}


def test_lone_request_does_not_wait_for_the_batch_delay(server: BerthServer) -> None:
    # The delay is 60 s; an idle server must answer a lone request at once
    # (the bound is half the delay, so a busy machine cannot fail it).
    start = time.monotonic()
    o = outs(infer(server, "patient", [[1.0, 0.0]]))
    assert time.monotonic() - start < 30
    assert o["rows"] == [1]
    assert o["y"] == [1.0, 0.0]


def run_concurrently(server: BerthServer, model: str, requests: list[list[list[float]]],
                     gates: Gates, **params: Any) -> list[Any]:
    """Holds the model's one worker with a gated request, sends every request
    concurrently and waits until all of them are queued behind it, then
    opens the gate; returns the responses of `requests`."""
    with ThreadPoolExecutor(max_workers=len(requests) + 1) as pool:
        block = pool.submit(infer, server, model, [gates.row()])
        server.wait_queue(model, inflight=1, queued=0)  # the blocker is on the worker
        futures = [pool.submit(infer, server, model, rows, **params) for rows in requests]
        server.wait_queue(model, inflight=1 + len(requests), queued=len(requests))
        gates.open()
        results = [f.result() for f in futures]
        assert block.result().status == 200
    return results


def test_batches_form_under_load_and_each_request_gets_its_own_rows(
        server: BerthServer, gates: Gates) -> None:
    # While a gated request holds the worker, eight one-row requests queue;
    # they fill a batch of 8, which is sent without waiting out the 60 s delay.
    reqs = [[[float(i + 10), 0.0]] for i in range(8)]
    start = time.monotonic()
    results = run_concurrently(server, "patient", reqs, gates)
    assert time.monotonic() - start < 30  # a full batch does not wait 60 s
    calls = set()
    for i, resp in enumerate(results):
        o = outs(resp)
        assert o["y"] == [float(i + 10), 0.0]  # its own row, not a neighbour's
        assert o["rows"] == [8]
        calls.update(o["call"])
    assert len(calls) == 1  # one predict call ran all eight


def test_requests_with_several_rows_are_packed_whole(server: BerthServer, gates: Gates) -> None:
    # 1 + 2 + 3 rows queue behind a blocker and run as one batch of 6.
    reqs = [
        [[1.0, 0.0]],
        [[2.0, 0.0], [3.0, 0.0]],
        [[4.0, 0.0], [5.0, 0.0], [6.0, 0.0]],
    ]
    results = run_concurrently(server, "natural", reqs, gates)
    for rows, resp in zip(reqs, results):
        o = outs(resp)
        assert o["y"] == [v for row in rows for v in row]
        assert o["rows"] == [6] * len(rows)
        assert len(set(o["call"])) == 1
    assert len({outs(r)["call"][0] for r in results}) == 1


def test_batch_size_bound_is_respected(server: BerthServer, gates: Gates) -> None:
    # Twelve one-row requests to a model with max_batch_size 8: no batch
    # has more than 8 rows, and all twelve get their own row.
    reqs = [[[float(i), 0.0]] for i in range(12)]
    results = run_concurrently(server, "batched", reqs, gates)
    for i, resp in enumerate(results):
        o = outs(resp)
        assert o["y"] == [float(i), 0.0]
        assert 1 <= o["rows"][0] <= 8


def test_requests_queued_while_busy_run_together(server: BerthServer, gates: Gates) -> None:
    # Two requests queue behind a running one; when the worker frees up they
    # go together as one batch.
    results = run_concurrently(server, "natural", [[[1.0, 0.0]], [[2.0, 0.0]]], gates)
    o1, o2 = outs(results[0]), outs(results[1])
    assert o1["call"] == o2["call"]
    assert o1["rows"] == [2] and o2["rows"] == [2]


def test_no_waiting_while_a_worker_is_idle(server: BerthServer, gates: Gates) -> None:
    # Two workers, a 60 s delay. A is held on one worker; B arrives while the
    # other worker is idle and nothing else is queued: it runs at once, alone.
    with ThreadPoolExecutor(max_workers=3) as pool:
        a = pool.submit(infer, server, "delayed", [gates.row()])
        server.wait_queue("delayed", inflight=1, queued=0)
        start = time.monotonic()
        ob = outs(infer(server, "delayed", [[1.0, 0.0]]))
        b_latency = time.monotonic() - start
        gates.open()
        oa = outs(a.result())
    assert ob["rows"] == [1] and ob["y"] == [1.0, 0.0]
    assert oa["rows"] == [1]  # each ran alone (the call counters are per worker)
    assert b_latency < 30  # not the 60 s delay


def test_the_queue_delay_gathers_requests_it_expects(server: BerthServer) -> None:
    # One worker, a 2 s delay. A runs 1.5 s (the batcher learns that a batch
    # takes that long); shortly before it ends, B, C and D queue: the batcher
    # has now seen four requests at once. A's client then goes quiet; when
    # the worker frees up, B, C and D (fewer than four, the last one arrived
    # well within half a batch's time) wait for company, and E, sent 0.1 s
    # after A ends, runs in the same batch.
    reqs = [[[float(i), 0.0]] for i in (1, 2, 3)]
    with ThreadPoolExecutor(max_workers=5) as pool:
        a = pool.submit(infer, server, "gather", [[0.0, 1.5]])
        time.sleep(1.2)
        start = time.monotonic()
        queued = [pool.submit(infer, server, "gather", rows) for rows in reqs]
        assert a.result().status == 200
        time.sleep(0.1)
        e = pool.submit(infer, server, "gather", [[4.0, 0.0]])
        results = [outs(f.result()) for f in queued] + [outs(e.result())]
        b_latency = time.monotonic() - start
    for i, o in enumerate(results):
        assert o["y"] == [float(i + 1), 0.0]  # its own row
        assert o["rows"] == [4]
    assert len({o["call"][0] for o in results}) == 1
    assert b_latency < 2.0 + 0.9  # the delay (2 s) bounds the wait


def test_the_queue_delay_bounds_the_wait(server: BerthServer) -> None:
    # One worker, a 0.3 s delay. A runs 3 s; 0.2 s before it ends, B, C and D
    # queue. When the worker frees up they would wait for a fourth (their
    # burst is recent), but B's delay runs out 0.1 s later: they run then,
    # together, not after the 1.5 s lull of half a batch's time.
    reqs = [[[float(i), 0.0]] for i in (1, 2, 3)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        a = pool.submit(infer, server, "bounded", [[0.0, 3.0]])
        time.sleep(2.8)
        start = time.monotonic()
        queued = [pool.submit(infer, server, "bounded", rows) for rows in reqs]
        results = [outs(f.result()) for f in queued]
        waited = time.monotonic() - start
        assert a.result().status == 200
    for i, o in enumerate(results):
        assert o["y"] == [float(i + 1), 0.0]
        assert o["rows"] == [3]
    assert waited < 0.2 + 0.3 + 0.6  # A's rest, the delay, slack; not the lull


def test_a_model_with_max_batch_size_0_is_never_batched(server: BerthServer, gates: Gates) -> None:
    reqs = [[[float(i), 0.0]] for i in range(4)]
    results = run_concurrently(server, "single", reqs, gates)
    calls = [outs(r)["call"][0] for r in results]
    assert len(set(calls)) == 4
    assert all(outs(r)["rows"] == [1] for r in results)


def test_high_priority_requests_run_first(server: BerthServer, gates: Gates) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        block = pool.submit(infer, server, "single", [gates.row()])
        server.wait_queue("single", inflight=1, queued=0)
        normal = [pool.submit(infer, server, "single", [[1.0, 0.0]]) for _ in range(3)]
        server.wait_queue("single", inflight=4, queued=3)
        high = pool.submit(infer, server, "single", [[2.0, 0.0]], priority=1)
        server.wait_queue("single", inflight=5, queued=4)
        gates.open()
        high_call = outs(high.result())["call"][0]
        normal_calls = [outs(f.result())["call"][0] for f in normal]
        assert block.result().status == 200
    assert high_call < min(normal_calls)


def test_bad_priority_is_a_clear_400(server: BerthServer) -> None:
    assert_error(infer(server, "single", [[1.0, 0.0]], priority="urgent"), 400, "priority")


def overload(server: BerthServer, model: str, gates: Gates, sent: int, queue_size: int) -> list[Any]:
    """Holds the model's one worker, sends `sent` requests at once and
    returns their responses: those beyond `queue_size` must be refused while
    the worker is still held (the gate opens only after they are answered)."""
    with ThreadPoolExecutor(max_workers=sent + 1) as pool:
        block = pool.submit(infer, server, model, [gates.row()])
        server.wait_queue(model, inflight=1, queued=0)
        futures = [pool.submit(infer, server, model, [[1.0, 0.0]]) for _ in range(sent)]
        server.wait_queue(model, inflight=1 + queue_size, queued=queue_size)
        wait_until(lambda: sum(f.done() for f in futures) >= sent - queue_size, 60,
                   f"{sent - queue_size} requests to {model} to be answered while its worker is held")
        assert sum(f.done() for f in futures) == sent - queue_size
        gates.open()
        results = [f.result() for f in futures]
        assert block.result().status == 200
    return results


def test_overload_is_a_fast_429_and_the_server_recovers(server: BerthServer, gates: Gates) -> None:
    # One request runs, two queue (max_queue_size 2); the other four are
    # refused at once, while the worker is still held.
    results = overload(server, "tiny", gates, sent=6, queue_size=2)
    refused = [r for r in results if r.status == 429]
    served = [r for r in results if r.status == 200]
    assert len(refused) == 4 and len(served) == 2
    for r in refused:
        assert_error(r, 429, "queue")
        assert r.header("retry-after") == "1"
    # Afterwards the model serves normally.
    assert outs(infer(server, "tiny", [[5.0, 0.0]]))["y"] == [5.0, 0.0]


def test_a_request_timeout_answers_504_and_frees_the_slot(server: BerthServer, gates: Gates) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        block = pool.submit(infer, server, "single", [gates.row()])
        server.wait_queue("single", inflight=1, queued=0)
        late = pool.submit(infer, server, "single", [[1.0, 0.0]], timeout=200000)  # 0.2 s
        # answered at its deadline while the worker is still held, not when
        # the model got to it
        late_resp = late.result(timeout=60)
        server.wait_queue("single", inflight=1, queued=0)  # its slot is free
        gates.open()
        assert block.result().status == 200
    assert_error(late_resp, 504, "timed out")
    assert outs(infer(server, "single", [[3.0, 0.0]]))["y"] == [3.0, 0.0]


def test_a_running_request_past_its_deadline_gets_504(server: BerthServer) -> None:
    # The model's own timeout_us (0.3 s) applies; predict takes 1 s.
    resp = infer(server, "deadline", [[1.0, 1.0]])
    assert_error(resp, 504, "timed out")
    # The worker finishes that batch and keeps serving; a request's own
    # timeout parameter overrides the model's default.
    assert outs(infer(server, "deadline", [[2.0, 0.0]], timeout=5000000))["y"] == [2.0, 0.0]


def test_bad_timeout_parameter_is_a_clear_400(server: BerthServer) -> None:
    assert_error(infer(server, "single", [[1.0, 0.0]], timeout=-5), 400, "timeout")


def test_statistics_count_batches(server: BerthServer, gates: Gates) -> None:
    reqs = [[[float(i), 0.0]] for i in range(4)]
    run_concurrently(server, "natural", reqs, gates)
    # Four requests ran in one batch after the blocker: executions < inferences.
    doc = server.get("/v2/models/natural/stats")
    if doc.status == 404:
        pytest.skip("the statistics endpoint is not there yet")
    st = doc.json()["model_stats"][0]
    assert st["inference_count"] > st["execution_count"]


# ------------------------------------------------- the same keys set by flags


@pytest.fixture(scope="module")
def flagged(module_server: Any, tmp_path_factory: pytest.TempPathFactory, gates: Gates) -> BerthServer:
    """A model whose berth.yaml says "never batch, a big queue"; the flags of
    `berth serve` override both, as they do for every model served."""
    repo = tmp_path_factory.mktemp("batching-flags-repo")
    make_model(repo, "flagged", "max_batch_size: 0\nmax_queue_size: 1000\ninstances: 1\n", gates)
    return module_server(
        str(repo), "--max-batch-size", "4", "--max-queue-delay-us", "200000",
        "--max-queue-size", "8",
    )  # fmt: skip


def test_batching_flags_override_berth_yaml(flagged: BerthServer, gates: Gates) -> None:
    # Eight one-row requests queue behind a blocker: they run in batches of
    # at most 4 rows (the flag), never one by one (the berth.yaml's 0).
    reqs = [[[float(i), 0.0]] for i in range(8)]
    results = run_concurrently(flagged, "flagged", reqs, gates)
    sizes: dict[int, int] = {}
    for i, resp in enumerate(results):
        o = outs(resp)
        assert o["y"] == [float(i), 0.0]
        sizes[o["call"][0]] = o["rows"][0]
    assert max(sizes.values()) == 4 and all(1 <= n <= 4 for n in sizes.values())
    doc = flagged.get("/v2/models/flagged/stats")
    if doc.status != 404:
        st = doc.json()["model_stats"][0]
        assert st["inference_count"] > st["execution_count"]

    # --max-queue-size 8: with the worker busy, requests beyond eight queued
    # are refused with 429 at once; then the model serves normally again.
    results = overload(flagged, "flagged", gates, sent=14, queue_size=8)
    refused = [r for r in results if r.status == 429]
    served = [r for r in results if r.status == 200]
    assert len(refused) == 6 and len(served) == 8
    for r in refused:
        assert_error(r, 429, "queue")
    assert outs(infer(flagged, "flagged", [[5.0, 0.0]]))["y"] == [5.0, 0.0]


def test_requests_from_different_protocols_share_a_batch(server: BerthServer, gates: Gates) -> None:
    """A JSON request, a binary-extension request (tritonclient HTTP) and a
    gRPC request with the same inputs queue behind a gated one and run in
    one batch: how a request was encoded is no reason to keep it apart."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    def binary(value: float) -> list[float]:
        client = httpclient.InferenceServerClient(server.triton_url, network_timeout=60.0)
        try:
            inp = httpclient.InferInput("x", [1, 2], "FP32")
            inp.set_data_from_numpy(np.array([[value, 0.0]], dtype=np.float32), binary_data=True)
            outs_ = [httpclient.InferRequestedOutput(n, binary_data=True)
                     for n in ("y", "rows", "call")]
            r = client.infer("natural", [inp], outputs=outs_)
            return [float(r.as_numpy("y")[0][0]), int(r.as_numpy("rows")[0]),
                    int(r.as_numpy("call")[0])]
        finally:
            client.close()

    def grpc(value: float) -> list[float]:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            inp = grpcclient.InferInput("x", [1, 2], "FP32")
            inp.set_data_from_numpy(np.array([[value, 0.0]], dtype=np.float32))
            r = client.infer("natural", [inp])
            return [float(r.as_numpy("y")[0][0]), int(r.as_numpy("rows")[0]),
                    int(r.as_numpy("call")[0])]
        finally:
            client.close()

    def json_(value: float) -> list[float]:
        o = outs(infer(server, "natural", [[value, 0.0]]))
        return [o["y"][0], o["rows"][0], o["call"][0]]

    with ThreadPoolExecutor(max_workers=4) as pool:
        block = pool.submit(infer, server, "natural", [gates.row()])
        server.wait_queue("natural", inflight=1, queued=0)
        futures = [pool.submit(json_, 1.0), pool.submit(binary, 2.0), pool.submit(grpc, 3.0)]
        server.wait_queue("natural", inflight=4, queued=3)
        gates.open()
        got = [f.result() for f in futures]
        assert block.result().status == 200
    assert [g[0] for g in got] == [1.0, 2.0, 3.0]  # each its own row
    assert [g[1] for g in got] == [3, 3, 3], got  # one batch of three rows
    assert len({g[2] for g in got}) == 1, got  # one predict call
