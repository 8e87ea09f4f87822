"""Large tensors through the Python worker path, end to end.

The engine writes a batch's INFER frame to the worker straight from the
requests' own buffers (scatter-gather, engine/src/worker/wp_gather.c), one
piece per request and input: these tests send 4 MiB FP32 rows and 4 MiB
BYTES elements from several clients at once (Triton's HTTP client with the
binary extension, its gRPC client, raw HTTP), have the engine batch them,
and check that every request gets back exactly its own values, computed
from what the worker saw. A gated request holds the model's one worker
while the others queue, so the batch is known; nothing is timed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from berth_e2e import BerthServer
from tritonclient.utils import InferenceServerException

WIDTH = 1 << 20  # FP32 elements per row: 4 MiB
BIG = 4 << 20  # bytes in a big BYTES element

SOURCE = '''
import os, time
import numpy as np
import berth

GATES = @GATES@


class Big(berth.Model):
    """y = x + 1 per row; t = each element reversed; sums = the row's x
    summed in float64 and its BYTES element's length and byte sum; rows =
    the batch's rows. A BYTES element b"gate:<n>" holds predict until the
    test creates GATES/gate-<n>."""

    inputs = [berth.TensorSpec("x", "FP32", [-1, @WIDTH@]),
              berth.TensorSpec("s", "BYTES", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1, @WIDTH@]),
               berth.TensorSpec("t", "BYTES", [-1]),
               berth.TensorSpec("sums", "FP64", [-1, 3]),
               berth.TensorSpec("rows", "INT64", [-1])]

    def predict(self, inputs):
        x, s = inputs["x"], inputs["s"]
        for item in s:
            if bytes(item).startswith(b"gate:"):
                path = os.path.join(GATES, "gate-" + bytes(item)[5:].decode())
                end = time.monotonic() + 120
                while not os.path.exists(path) and time.monotonic() < end:
                    time.sleep(0.01)
        n = x.shape[0]
        sums = np.zeros((n, 3), dtype=np.float64)
        for i in range(n):
            b = np.frombuffer(bytes(s[i]), dtype=np.uint8)
            sums[i] = (x[i].astype(np.float64).sum(), b.size, b.sum(dtype=np.float64))
        t = np.array([bytes(v)[::-1] for v in s], dtype=object)
        return {"y": x + 1, "t": t, "sums": sums,
                "rows": np.full(n, n, dtype=np.int64)}
'''


class Gates:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._ids = itertools.count(1)

    def next(self) -> tuple[bytes, Path]:
        n = next(self._ids)
        return f"gate:{n}".encode(), self.folder / f"gate-{n}"


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> Gates:
    return Gates(tmp_path_factory.mktemp("large-gates"))


@pytest.fixture(scope="module")
def server(module_server: Any, tmp_path_factory: pytest.TempPathFactory, gates: Gates) -> BerthServer:
    repo = tmp_path_factory.mktemp("large-repo")
    d = repo / "big" / "1"
    d.mkdir(parents=True)
    src = SOURCE.replace("@GATES@", repr(str(gates.folder))).replace("@WIDTH@", str(WIDTH))
    (d / "model.py").write_text(src)
    (repo / "big" / "berth.yaml").write_text("max_batch_size: 8\nmax_queue_delay_us: 1000\ninstances: 1\n")
    return module_server(str(repo))


def rows_for(seed: int, n: int) -> tuple[np.ndarray, list[bytes]]:
    """n rows of distinct, exactly representable values, and n BYTES
    elements, each 4 MiB, of a pattern unique to (seed, row)."""
    base = np.arange(WIDTH, dtype=np.float32) % 4096
    x = np.stack([base + np.float32(seed * 16 + r) for r in range(n)])
    items = []
    for r in range(n):
        rng = np.random.default_rng(seed * 100 + r)
        items.append(rng.integers(0, 256, BIG, dtype=np.uint8).tobytes())
    return x, items


def check(x: np.ndarray, items: list[bytes], y: np.ndarray, t: np.ndarray, sums: np.ndarray) -> None:
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.array_equal(y, x + 1)  # exact: small integers in float32
    assert [bytes(v) for v in t] == [b[::-1] for b in items]
    want = np.array(
        [[x[i].astype(np.float64).sum(), len(b), np.frombuffer(b, np.uint8).sum(dtype=np.float64)]
         for i, b in enumerate(items)]
    )
    assert np.array_equal(sums, want)


def http_infer(server: BerthServer, x: np.ndarray, items: list[bytes]) -> dict[str, np.ndarray]:
    c = httpclient.InferenceServerClient(url=server.triton_url, network_timeout=120.0)
    try:
        ix = httpclient.InferInput("x", list(x.shape), "FP32")
        ix.set_data_from_numpy(x, binary_data=True)
        isb = httpclient.InferInput("s", [len(items)], "BYTES")
        isb.set_data_from_numpy(np.array(items, dtype=object), binary_data=True)
        outs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("y", "t", "sums", "rows")]
        r = c.infer("big", [ix, isb], outputs=outs, timeout=120_000_000)
        return {n: r.as_numpy(n) for n in ("y", "t", "sums", "rows")}
    finally:
        c.close()


def grpc_infer(server: BerthServer, x: np.ndarray, items: list[bytes],
               client: grpcclient.InferenceServerClient | None = None) -> dict[str, np.ndarray]:
    c = client or grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        ix = grpcclient.InferInput("x", list(x.shape), "FP32")
        ix.set_data_from_numpy(x)
        isb = grpcclient.InferInput("s", [len(items)], "BYTES")
        isb.set_data_from_numpy(np.array(items, dtype=object))
        r = c.infer("big", [ix, isb], client_timeout=120.0)
        return {n: r.as_numpy(n) for n in ("y", "t", "sums", "rows")}
    finally:
        if client is None:
            c.close()


def test_one_large_request_round_trips_exactly(server: BerthServer) -> None:
    x, items = rows_for(1, 1)
    got = http_infer(server, x, items)
    check(x, items, got["y"], got["t"], got["sums"])
    assert list(got["rows"]) == [1]


def run_batch(server: BerthServer, gates: Gates, plan: list[tuple[str, int, int]]) -> None:
    """Sends the plan's requests ((client, seed, rows) each; client "http",
    "grpc" (a channel of its own) or "grpc1" (one channel shared by all of
    them)) while a gated request holds the worker, then opens the gate: they
    must run as one batch, and each must get its own values back."""
    gate, gate_file = gates.next()
    bx, _ = rows_for(0, 1)
    reqs = [(how, rows_for(seed, n)) for how, seed, n in plan]
    shared = grpcclient.InferenceServerClient(url=server.grpc_url)
    with ThreadPoolExecutor(max_workers=len(reqs) + 1) as pool:
        block = pool.submit(http_infer, server, bx, [gate])
        server.wait_queue("big", inflight=1, queued=0)
        futures = [
            pool.submit(http_infer, server, x, items) if how == "http"
            else pool.submit(grpc_infer, server, x, items, shared if how == "grpc1" else None)
            for how, (x, items) in reqs
        ]
        server.wait_queue("big", inflight=1 + len(reqs), queued=len(reqs))
        gate_file.touch()
        results = [f.result() for f in futures]
        blocked = block.result()
    shared.close()
    assert list(blocked["rows"]) == [1]
    total = sum(n for _, _, n in plan)
    for (_, (x, items)), got in zip(reqs, results):
        check(x, items, got["y"], got["t"], got["sums"])
        assert list(got["rows"]) == [total] * len(items)


def test_large_http_requests_from_several_clients_batch_and_each_gets_its_own_values(
        server: BerthServer, gates: Gates) -> None:
    # Requests of 1, 2, 1 and 1 rows queue behind a gated request and run
    # as one batch of 5 rows (40 MiB of input), written to the worker from
    # the requests' own buffers.
    run_batch(server, gates, [("http", 2, 1), ("http", 3, 2), ("http", 4, 1), ("http", 5, 1)])


def test_large_grpc_requests_batch_and_each_gets_its_own_values(server: BerthServer, gates: Gates) -> None:
    run_batch(server, gates, [("grpc", 6, 1), ("grpc", 7, 2)])


def test_large_grpc_requests_on_one_channel_batch_and_each_gets_its_own_values(
        server: BerthServer, gates: Gates) -> None:
    # The batch's answers go back over one HTTP/2 connection, written
    # together (the supervisor corks them: httpd.h, berth_httpd_cork).
    run_batch(server, gates, [("grpc1", 10, 1), ("grpc1", 11, 1), ("grpc1", 12, 2), ("grpc1", 13, 1)])


def test_worker_killed_while_a_large_frame_is_still_being_written(server: BerthServer) -> None:
    # The worker is stopped (SIGSTOP), so an 8 MiB INFER frame cannot all
    # reach its socket: the rest waits in the engine, pointing into the
    # request's buffers. Killing the worker then fails that request (the
    # engine closes the pipe before it frees the batch) and the requests
    # queued behind it run on the restarted worker with their own values.
    pid = server.wait_worker("big/1/0")
    first, later = rows_for(30, 1), [rows_for(31, 1), rows_for(32, 1)]
    os.kill(pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            f0 = pool.submit(http_infer, server, *first)
            server.wait_queue("big", inflight=1, queued=0)
            fs = [pool.submit(http_infer, server, x, items) for x, items in later]
            server.wait_queue("big", inflight=3, queued=2)
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(InferenceServerException, match="exited"):
                f0.result(timeout=120)
            results = [f.result(timeout=120) for f in fs]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for (x, items), got in zip(later, results):
        check(x, items, got["y"], got["t"], got["sums"])
    assert server.wait_worker("big/1/0", not_pid=pid) != pid
    assert server.running()


def test_server_serves_small_requests_after_large_ones(server: BerthServer) -> None:
    # The worker's channel is left in step after the large frames.
    for seed in (8, 9):
        x, _ = rows_for(seed, 1)
        items = [b"ab"]
        got = http_infer(server, x, items)
        check(x, items, got["y"], got["t"], got["sums"])
