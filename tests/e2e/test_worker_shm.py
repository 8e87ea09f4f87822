"""Large tensors through the worker's shared memory region (worker protocol 3,
docs/worker-protocol.md "Shared memory").

berthd gives each worker a sealed memfd; inputs of at least
``workers.shared_memory_threshold`` bytes are copied into it and the INFER
frame carries offsets, the worker writes large outputs into its half and the
RESULT frame carries offsets. These tests send 1 MiB and 8 MiB FP32, INT64
and BYTES tensors from several clients at once (Triton's HTTP client with
the binary extension, gRPC's raw_input_contents, JSON), batched behind a
gated request so the batch is known, and check every answer exactly. That
the region was used is counted, not timed: berthd's read and written bytes
(``/proc/<pid>/io``: its clients' sockets and its workers') grow by about the
tensors' size once (the clients' requests and answers), not twice (the
worker's socket too), and the worker maps ``memfd:berth-worker``. The same requests
with shared memory off, and with a region smaller than a batch, give the
same answers through the socket.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from berth_e2e import BerthServer, wait_until
from tritonclient.utils import InferenceServerException

MIB = 1 << 20
WIDTH = MIB // 4  # FP32 elements per row of x: 1 MiB; INT64 per row of i: 2 MiB / 2

SOURCE = '''
import os, time
import numpy as np
import berth

GATES = @GATES@


class Big(berth.Model):
    """y = 2x + 1; same = x itself (a view of the input: through shared
    memory, the engine reads it where it wrote it); j = i reversed per row,
    minus 7; t = each BYTES element reversed; rows = the batch's rows. A BYTES element b"gate:<n>" holds
    predict until GATES/gate-<n> exists; b"crash" ends the process."""

    inputs = [berth.TensorSpec("x", "FP32", [-1, -1]),
              berth.TensorSpec("i", "INT64", [-1, -1]),
              berth.TensorSpec("s", "BYTES", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1, -1]),
               berth.TensorSpec("same", "FP32", [-1, -1]),
               berth.TensorSpec("j", "INT64", [-1, -1]),
               berth.TensorSpec("t", "BYTES", [-1]),
               berth.TensorSpec("rows", "INT64", [-1])]
    max_batch_size = 16

    def predict(self, inputs):
        x, i, s = inputs["x"], inputs["i"], inputs["s"]
        for item in s:
            item = bytes(item)
            if item == b"crash":
                os._exit(3)
            if item.startswith(b"gate:"):
                path = os.path.join(GATES, "gate-" + item[5:].decode())
                end = time.monotonic() + 120
                while not os.path.exists(path) and time.monotonic() < end:
                    time.sleep(0.01)
        n = x.shape[0]
        t = np.array([bytes(v)[::-1] for v in s], dtype=object)
        return {"y": x * 2 + 1, "same": x, "j": i[:, ::-1] - 7, "t": t,
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
    return Gates(tmp_path_factory.mktemp("shm-gates"))


def make_repo(tmp_path_factory: pytest.TempPathFactory, gates: Gates, name: str) -> Path:
    repo = tmp_path_factory.mktemp(name)
    d = repo / "big" / "1"
    d.mkdir(parents=True)
    (d / "model.py").write_text(SOURCE.replace("@GATES@", repr(str(gates.folder))))
    (repo / "big" / "berth.yaml").write_text(
        "max_batch_size: 16\nmax_queue_delay_us: 1000\ninstances: 1\n"
    )
    return repo


def start(module_server: Any, tmp_path_factory: pytest.TempPathFactory, gates: Gates,
          label: str, workers: dict[str, Any] | None) -> BerthServer:
    repo = make_repo(tmp_path_factory, gates, f"shm-{label}")
    # --write-path direct: the byte counts below come from /proc's rchar and
    # wchar, which count read and write system calls; io_uring's sends (a
    # BERTH_WRITE_PATH=uring run) would not show.
    flags: list[str] = ["--max-body-bytes", str(256 * MIB), "--write-path", "direct"]
    if workers is not None:
        app = repo.parent / f"shm-{label}.yaml"
        app.write_text(json.dumps({"workers": workers}))
        flags += ["--config", str(app)]
    return module_server(str(repo), *flags, label=label)


@pytest.fixture(scope="module")
def server(module_server: Any, tmp_path_factory: pytest.TempPathFactory, gates: Gates) -> BerthServer:
    return start(module_server, tmp_path_factory, gates, "shm-default", None)


def rows_for(seed: int, n: int, width: int = WIDTH) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """n rows of exactly representable FP32 values, n rows of INT64 and n
    BYTES elements, each of a pattern unique to (seed, row)."""
    base = np.arange(width, dtype=np.float32) % 2048
    x = np.stack([base + np.float32(seed * 16 + r) for r in range(n)])
    i = np.stack([np.arange(width // 2, dtype=np.int64) * (seed + 3) + r for r in range(n)])
    items = [f"s{seed}-{r}".encode() * (r + 1) for r in range(n)]
    return x, i, items


def check(x: np.ndarray, i: np.ndarray, items: list[bytes], got: dict[str, np.ndarray]) -> None:
    assert got["y"].dtype == np.float32 and got["y"].shape == x.shape
    assert np.array_equal(got["y"], x * 2 + 1)
    assert got["same"].dtype == np.float32 and np.array_equal(got["same"], x)
    assert got["j"].dtype == np.int64 and np.array_equal(got["j"], i[:, ::-1] - 7)
    assert [bytes(v) for v in got["t"]] == [b[::-1] for b in items]


OUTS = ("y", "same", "j", "t", "rows")


def http_infer(server: BerthServer, x: np.ndarray, i: np.ndarray, items: list[bytes]) -> dict[str, np.ndarray]:
    c = httpclient.InferenceServerClient(url=server.triton_url, network_timeout=120.0)
    try:
        ins = []
        for name, arr, dt in (("x", x, "FP32"), ("i", i, "INT64"),
                              ("s", np.array(items, dtype=object), "BYTES")):
            t = httpclient.InferInput(name, list(arr.shape), dt)
            t.set_data_from_numpy(arr, binary_data=True)
            ins.append(t)
        outs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in OUTS]
        r = c.infer("big", ins, outputs=outs, timeout=120_000_000)
        return {n: r.as_numpy(n) for n in OUTS}
    finally:
        c.close()


def grpc_infer(server: BerthServer, x: np.ndarray, i: np.ndarray, items: list[bytes]) -> dict[str, np.ndarray]:
    c = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        ins = []
        for name, arr, dt in (("x", x, "FP32"), ("i", i, "INT64"),
                              ("s", np.array(items, dtype=object), "BYTES")):
            t = grpcclient.InferInput(name, list(arr.shape), dt)
            t.set_data_from_numpy(arr)  # raw_input_contents
            ins.append(t)
        r = c.infer("big", ins, client_timeout=120.0)
        return {n: r.as_numpy(n) for n in OUTS}
    finally:
        c.close()


def json_infer(server: BerthServer, x: np.ndarray, i: np.ndarray, items: list[bytes]) -> dict[str, np.ndarray]:
    body = {"inputs": [
        {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()},
        {"name": "i", "datatype": "INT64", "shape": list(i.shape), "data": i.ravel().tolist()},
        {"name": "s", "datatype": "BYTES", "shape": [len(items)], "data": [b.decode() for b in items]},
    ]}
    doc = server.infer_ok("big", body)
    got = {o["name"]: o for o in doc["outputs"]}
    return {
        "y": np.array(got["y"]["data"], dtype=np.float32).reshape(got["y"]["shape"]),
        "same": np.array(got["same"]["data"], dtype=np.float32).reshape(got["same"]["shape"]),
        "j": np.array(got["j"]["data"], dtype=np.int64).reshape(got["j"]["shape"]),
        "t": np.array([v.encode() for v in got["t"]["data"]], dtype=object),
        "rows": np.array(got["rows"]["data"], dtype=np.int64),
    }


CLIENTS = {"http": http_infer, "grpc": grpc_infer, "json": json_infer}


def engine_io(server: BerthServer) -> tuple[int, int]:
    """Bytes berthd read and wrote through read/write system calls so far:
    its clients' sockets and its workers' (libuv reads and writes both with
    read and writev)."""
    assert Path(f"/proc/{server.pid}/comm").read_text().strip() == "berthd"
    text = Path(f"/proc/{server.pid}/io").read_text()
    fields = dict(line.split(": ") for line in text.splitlines())
    return int(fields["rchar"]), int(fields["wchar"])


def maps_region(pid: int) -> set[str]:
    """Inodes of the memfd regions the process maps."""
    return {line.split()[4] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
            if "memfd:berth-worker" in line}


def run_batch(server: BerthServer, gates: Gates, plan: list[tuple[str, int, int]],
              width: int = WIDTH) -> tuple[int, int, int]:
    """Sends the plan's requests ((client, seed, rows) each) while a gated
    request holds the worker, then opens the gate: they run as one batch and
    each must get its own values back. Returns the batch's FP32 and INT64
    bytes (its outputs y and j are as large, and same as large as x) and
    the bytes berthd read and wrote meanwhile."""
    pid = server.wait_worker("big/1/0")
    gate, gate_file = gates.next()
    bx, bi, _ = rows_for(0, 1, 16)
    reqs = [(how, rows_for(seed, n, width)) for how, seed, n in plan]
    with ThreadPoolExecutor(max_workers=len(reqs) + 1) as pool:
        block = pool.submit(http_infer, server, bx, bi, [gate])
        server.wait_queue("big", inflight=1, queued=0)
        before = engine_io(server)
        futures = [pool.submit(CLIENTS[how], server, *args) for how, args in reqs]
        server.wait_queue("big", inflight=1 + len(reqs), queued=len(reqs))
        gate_file.touch()
        results = [f.result() for f in futures]
        blocked = block.result()
        after = engine_io(server)
    assert list(blocked["rows"]) == [1]
    total = sum(n for _, _, n in plan)
    for (_, (x, i, items)), got in zip(reqs, results):
        check(x, i, items, got)
        assert list(got["rows"]) == [total] * len(items)
    size = sum(x.nbytes + i.nbytes for _, (x, i, _) in reqs)
    assert server.wait_worker("big/1/0") == pid
    return size, after[0] - before[0], after[1] - before[1]


def test_worker_maps_a_private_region(server: BerthServer) -> None:
    pid = server.wait_worker("big/1/0")
    assert len(wait_until(lambda: maps_region(pid), 60, "the worker maps its region")) == 1
    # No name on disk: nothing of it under /dev/shm.
    assert not any("berth" in p.name for p in Path("/dev/shm").iterdir())


def test_large_requests_from_several_clients_go_through_shared_memory(
        server: BerthServer, gates: Gates) -> None:
    # 1 + 8 + 1 rows: 10 MiB of FP32 and 10 MiB of INT64 in, as much out;
    # the small BYTES input of the same batch stays in the frame.
    size, read, written = run_batch(server, gates, [("http", 1, 1), ("http", 2, 8), ("http", 3, 1)])
    assert size == 20 * MIB
    assert read < size + MIB and written < 1.5 * size + MIB, (size, read, written)
    # gRPC's raw_input_contents: 8 MiB and 1 MiB rows of each.
    size, read, written = run_batch(server, gates, [("grpc", 4, 4), ("grpc", 5, 1)])
    assert size == 10 * MIB
    assert read < size + MIB and written < 1.5 * size + MIB, (size, read, written)


def test_json_requests_batch_through_shared_memory(server: BerthServer, gates: Gates) -> None:
    # JSON text is larger than the tensors, so berthd's byte counts say
    # little here: the answers, exact, are what this checks.
    size, _, _ = run_batch(server, gates, [("json", 4, 1), ("json", 5, 2)])
    assert size == 6 * MIB


def test_small_tensors_stay_in_the_frame(server: BerthServer, gates: Gates) -> None:
    # 4 KiB rows: under the 64 KiB threshold, so the bytes cross the socket.
    size, read, written = run_batch(server, gates, [("http", 7, 1), ("http", 8, 2)], width=1024)
    assert size == 3 * 1024 * 8
    assert read >= 2 * size and written >= 2.5 * size, (size, read, written)


def test_a_model_that_keeps_its_input_array_sees_it_unchanged(
        module_server: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    repo = tmp_path_factory.mktemp("shm-keep")
    d = repo / "keep" / "1"
    d.mkdir(parents=True)
    (d / "model.py").write_text(
        "import numpy as np, berth\n"
        "class Keep(berth.Model):\n"
        "    inputs = [berth.TensorSpec('x', 'FP32', [-1, -1])]\n"
        "    outputs = [berth.TensorSpec('first', 'FP32', [-1, -1])]\n"
        "    kept = None\n"
        "    def predict(self, inputs):\n"
        "        if self.kept is None:\n"
        "            self.kept = inputs['x']\n"
        "        return {'first': self.kept + 0}\n"
    )
    srv = module_server(str(repo), label="shm-keep")
    answers = []
    for seed in (1, 2, 3):
        x = np.full((1, WIDTH), seed, dtype=np.float32)
        c = httpclient.InferenceServerClient(url=srv.triton_url, network_timeout=60.0)
        try:
            t = httpclient.InferInput("x", list(x.shape), "FP32")
            t.set_data_from_numpy(x, binary_data=True)
            r = c.infer("keep", [t], outputs=[httpclient.InferRequestedOutput("first", binary_data=True)])
            answers.append(r.as_numpy("first"))
        finally:
            c.close()
    # The first batch's array stays as it was, whatever came after it: the
    # worker saw it kept and the engine wrote no more inputs into the region.
    assert all(np.array_equal(a, np.full((1, WIDTH), 1, dtype=np.float32)) for a in answers)
    assert "inputs no longer travel through shared memory" in srv.log_tail(200)


def test_worker_crash_mid_batch_fails_only_its_request_and_the_new_worker_gets_a_new_region(
        server: BerthServer, gates: Gates) -> None:
    pid = server.wait_worker("big/1/0")
    region = maps_region(pid)
    gate, gate_file = gates.next()
    bx, bi, _ = rows_for(0, 1)
    cx, ci, _ = rows_for(40, 2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        held = pool.submit(http_infer, server, bx, bi, [gate])
        server.wait_queue("big", inflight=1, queued=0)
        crash = pool.submit(http_infer, server, cx, ci, [b"crash", b"x"])
        server.wait_queue("big", inflight=2, queued=1)
        gate_file.touch()
        got = held.result(timeout=120)
        with pytest.raises(InferenceServerException, match="exited"):
            crash.result(timeout=120)
    check(bx, bi, [gate], got)
    new_pid = server.wait_worker("big/1/0", not_pid=pid)
    new_region = wait_until(lambda: maps_region(new_pid), 60, "the new worker maps its region")
    assert len(new_region) == 1 and new_region != region
    size, read, written = run_batch(server, gates, [("http", 41, 2), ("http", 42, 1)])
    assert read < size + MIB and written < 1.5 * size + MIB, (size, read, written)
    assert server.running()


def test_worker_killed_while_its_inputs_sit_in_the_region(server: BerthServer) -> None:
    # SIGSTOP the worker after the batch's inputs went to the region, kill
    # it: the request fails, the next ones run on the restarted worker.
    pid = server.wait_worker("big/1/0")
    first, later = rows_for(50, 2), rows_for(51, 1)
    os.kill(pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            f0 = pool.submit(http_infer, server, *first[:2], [b"a", b"b"])
            server.wait_queue("big", inflight=1, queued=0)
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(InferenceServerException, match="exited"):
                f0.result(timeout=120)
            got = pool.submit(http_infer, server, *later).result(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    check(*later, got)


@pytest.fixture(scope="module")
def no_shm(module_server: Any, tmp_path_factory: pytest.TempPathFactory, gates: Gates) -> BerthServer:
    return start(module_server, tmp_path_factory, gates, "shm-off", {"shared_memory_size": 0})


def test_shared_memory_off_gives_the_same_answers_through_the_socket(
        no_shm: BerthServer, gates: Gates) -> None:
    pid = no_shm.wait_worker("big/1/0")
    assert maps_region(pid) == set()
    size, read, written = run_batch(no_shm, gates, [("http", 1, 1), ("http", 2, 8), ("http", 3, 1)])
    assert read >= 2 * size and written >= 2.5 * size, (size, read, written)
    size, read, written = run_batch(no_shm, gates, [("grpc", 4, 4), ("grpc", 5, 1)])
    assert read >= 2 * size and written >= 2.5 * size, (size, read, written)


@pytest.fixture(scope="module")
def small_shm(module_server: Any, tmp_path_factory: pytest.TempPathFactory, gates: Gates) -> BerthServer:
    # 4 MiB: 2 MiB for a batch's inputs, 2 MiB for its outputs.
    return start(module_server, tmp_path_factory, gates, "shm-small", {"shared_memory_size": "4MiB"})


def test_a_batch_larger_than_the_region_falls_back_to_the_frame(
        small_shm: BerthServer, gates: Gates) -> None:
    pid = small_shm.wait_worker("big/1/0")
    assert len(wait_until(lambda: maps_region(pid), 60, "the worker maps its region")) == 1
    # 3 rows: 3 MiB of FP32 and 3 MiB of INT64, neither fits in 2 MiB.
    size, read, written = run_batch(small_shm, gates, [("http", 1, 1), ("http", 2, 2)])
    assert read >= 2 * size and written >= 2.5 * size, (size, read, written)
    # One row: x (1 MiB) and i (1 MiB) fill the region exactly.
    size, read, written = run_batch(small_shm, gates, [("http", 3, 1)])
    assert read < size + MIB and written < 1.5 * size + MIB, (size, read, written)


def test_bad_shared_memory_config_is_refused(berth_server: Any, tmp_path: Path) -> None:
    app = tmp_path / "app.yaml"
    (tmp_path / "big.py").write_text(SOURCE.replace("@GATES@", repr(str(tmp_path))))
    for bad in ("lots", -1, "32GiB"):
        app.write_text(json.dumps({"workers": {"shared_memory_size": bad}}))
        with pytest.raises(BaseException) as info:
            berth_server(str(tmp_path / "big.py"), "--config", str(app))
        assert "workers.shared_memory_size" in str(info.value), info.value


# ------------------------------------------------- a worker that lies about offsets

ROGUE = r'''
"""A worker (workers.command) that speaks protocol 3 and answers each INFER
with a RESULT whose output "y" lies in the shared memory region where the
request's "attack" parameter says."""
import json, mmap, os, socket, struct, sys

H = struct.Struct("<IHHQ")
sock = socket.socket(fileno=3)


def exact(n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            sys.exit(0)
        buf += chunk
    return buf


def send(ftype, fid, payload):
    sock.sendall(H.pack(len(payload), ftype, 0, fid) + payload)


data, anc, _, _ = sock.recvmsg(16, socket.CMSG_SPACE(4))
fds = [struct.unpack("i", blob[:4])[0] for level, kind, blob in anc]
data += exact(16 - len(data))
length, ftype, _, _ = H.unpack(data)
entry = json.loads(exact(length))
offer = entry["shared_memory"]
size, split = offer["size"], offer["split"]
region = mmap.mmap(fds[0], size)
spec = {"name": "x", "datatype": "FP32", "shape": [-1, -1]}
out = {"name": "y", "datatype": "FP32", "shape": [-1, -1]}
send(2, 0, json.dumps({"protocol": 3, "platform": "rogue", "inputs": [spec],
                       "outputs": [out, {"name": "t", "datatype": "BYTES", "shape": [-1]}],
                       "max_batch_size": 0, "shared_memory": True}).encode())
while True:
    length, ftype, _, fid = H.unpack(exact(16))
    payload = exact(length)
    if ftype == 7:
        sys.exit(0)
    n, plen = struct.unpack_from("<II", payload)
    attack = json.loads(payload[8:8 + plen] or b"{}").get("attack", "good")
    at = {"good": split + 64, "past": size - 8, "unaligned": split + 4,
          "wrap": 2**64 - 8, "bytes": split + 64}[attack]
    if attack == "bytes":  # one BYTES element whose length prefix overruns its data
        region[split + 64:split + 72] = struct.pack("<I", 100) + b"abcd"
        rec = struct.pack("<BBHI", 13, 1, 1, 1) + struct.pack("<q", 1) + struct.pack("<Q", 8)
        rec += b"t" + bytes(7) + struct.pack("<Q", at)
    else:
        if 0 <= at <= size - 16:
            region[at:at + 16] = struct.pack("<4f", 1, 2, 3, 4)
        rec = struct.pack("<BBHI", 11, 2, 1, 1) + struct.pack("<qq", 1, 4) + struct.pack("<Q", 16)
        rec += b"y" + bytes(7) + struct.pack("<Q", at)
    send(5, fid, struct.pack("<II", 1, 0) + rec)
'''


@pytest.fixture(scope="module")
def rogue(module_server: Any, tmp_path_factory: pytest.TempPathFactory) -> BerthServer:
    root = tmp_path_factory.mktemp("shm-rogue")
    script = root / "rogue_worker.py"
    script.write_text(ROGUE)
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "model.py").write_text(
        "import berth\nclass M(berth.Model):\n    def predict(self, inputs):\n        return {}\n"
    )
    app = root / "app.yaml"
    app.write_text(json.dumps({"workers": {
        "command": [sys.executable, str(script)],
        "restart_backoff_s": 0.01, "restart_backoff_max_s": 0.05}}))
    return module_server(str(root / "m"), "--config", str(app), label="shm-rogue")


def rogue_infer(server: BerthServer, attack: str) -> Any:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}],
            "parameters": {"attack": attack}}
    return server.infer("m", body)


def test_a_worker_that_places_outputs_right_is_served(rogue: BerthServer) -> None:
    r = rogue_infer(rogue, "good")
    assert r.status == 200, r.body
    got = {o["name"]: o for o in r.json()["outputs"]}
    assert got["y"]["data"] == [1.0, 2.0, 3.0, 4.0] and got["y"]["shape"] == [1, 4]


@pytest.mark.parametrize("attack", ["past", "unaligned", "wrap", "bytes"])
def test_offsets_outside_the_workers_part_kill_the_worker_and_fail_only_that_request(
        rogue: BerthServer, attack: str) -> None:
    pid = rogue.wait_worker("m/1/0")
    r = rogue_infer(rogue, attack)
    assert r.status == 500, r.body
    error = r.json()["error"]
    assert "malformed outputs" in error and "worker exited" in error, error
    assert rogue.wait_worker("m/1/0", not_pid=pid) != pid
    r = rogue_infer(rogue, "good")  # the restarted worker, with a new region
    assert r.status == 200, r.body
    assert rogue.running()
