"""berthd's write path (server.write_path, docs/http.md), each test run with
io_uring forced, with batched writev and with direct writes (the default): HTTP/1.1 pipelining (many requests in
one send, answers in order and exact), HTTP/2 with many concurrent streams on
one connection (gRPC), large responses that the socket takes in several
writes, a client that stops reading (the server holds about one answer, not
all of them), a client that leaves in the middle of a large answer, and a bad
value for the key. Where io_uring is not available here, the uring half is
skipped and `auto` is checked to fall back; the default is `direct`.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from berth_e2e import (
    BerthServer,
    add_python_model,
    berth_executable,
    free_port,
    infer_body,
    server_env,
    tensor,
    wait_until,
)

grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")

ECHO_SOURCE = '''
import berth


class Echo(berth.Model):
    def predict(self, inputs):
        return {"y": inputs["x"]}
'''

# y: n float32 values i * 0.5 (exact in FP32 up to 2^24), n from input "n".
BIG_SOURCE = '''
import numpy as np
import berth


class Big(berth.Model):
    def predict(self, inputs):
        n = int(np.asarray(inputs["n"]).reshape(-1)[0])
        return {"y": (np.arange(n, dtype=np.float32) * np.float32(0.5)).reshape(1, n)}
'''

MIB = 1 << 20


def uring_works() -> bool:
    """Whether this kernel lets a process set up io_uring (a container's
    seccomp profile may not)."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    params = (ctypes.c_uint8 * 120)()
    fd = libc.syscall(425, 4, ctypes.byref(params))  # io_uring_setup
    if fd < 0:
        return False
    libc.close(fd)
    return True


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("write-path-repo")
    add_python_model(root, "echo", ECHO_SOURCE, "Echo", yaml_extra="max_batch_size: 32\n")
    add_python_model(root, "big", BIG_SOURCE, "Big")
    return root


@pytest.fixture(scope="module", params=["uring", "writev", "direct", "uring on 2 network loops"])
def server(request: pytest.FixtureRequest, module_server: Any, repo: Path) -> BerthServer:
    """Every test on each write path, and io_uring on network loops: a loop
    with no timer of its own must still hear of a send that waited for room
    in the socket (a 6 MiB answer once never arrived there)."""
    path, _, loops = str(request.param).partition(" on ")
    if path == "uring" and not uring_works():
        pytest.skip("io_uring is not available on this machine")
    extra = ["--network-loops", loops.split()[0]] if loops else []
    srv = module_server(str(repo), "--write-path", path, "--log-level", "debug", *extra)
    assert f'"write_path":"{path}"' in srv.log_text().replace(" ", ""), (
        srv.log_tail()
    )
    return srv


def echo_request(i: int) -> bytes:
    body = json.dumps(infer_body([tensor("x", "FP32", [1, 3], [i, i + 0.5, -i])])).encode()
    return (
        b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def read_http_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """Reads count HTTP/1.1 responses (Content-Length framed) from sock."""
    buf = b""
    out: list[tuple[int, bytes]] = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(1 << 20)
            assert chunk, f"connection closed after {len(out)} of {count} answers"
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        assert m is not None, head
        length = int(m.group(1))
        while len(buf) < length:
            chunk = sock.recv(1 << 20)
            assert chunk, "connection closed inside a body"
            buf += chunk
        out.append((status, buf[:length]))
        buf = buf[length:]
    return out


def test_pipelined_requests_are_answered_in_order(server: BerthServer) -> None:
    n = 64
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(b"".join(echo_request(i) for i in range(n)))  # one send
        answers = read_http_responses(sock, n)
        for i, (status, body) in enumerate(answers):
            assert status == 200, body
            doc = json.loads(body)
            assert doc["outputs"][0]["data"] == [i, i + 0.5, -i]
        # and the connection still serves one more
        sock.sendall(echo_request(n))
        assert json.loads(read_http_responses(sock, 1)[0][1])["outputs"][0]["data"] == [
            n,
            n + 0.5,
            -n,
        ]


def test_many_concurrent_http2_streams_on_one_connection(server: BerthServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        results: dict[int, Any] = {}

        def done(i: int) -> Any:
            return lambda result, error: results.__setitem__(i, (result, error))

        n = 200
        for i in range(n):
            inp = grpcclient.InferInput("x", [1, 2], "FP32")
            inp.set_data_from_numpy(np.array([[i, -i]], dtype=np.float32))
            client.async_infer("echo", [inp], done(i))
        wait_until(lambda: len(results) == n, timeout=60, what=f"{n} gRPC answers")
        for i in range(n):
            result, error = results[i]
            assert error is None, error
            np.testing.assert_array_equal(result.as_numpy("y"), [[i, -i]])
    finally:
        client.close()


@pytest.mark.parametrize("size_mib", [1, 6])
def test_large_responses_arrive_whole(server: BerthServer, size_mib: int) -> None:
    n = size_mib * MIB // 4
    want = np.arange(n, dtype=np.float32) * np.float32(0.5)
    client = httpclient.InferenceServerClient(server.url.split("://", 1)[1])
    try:
        for _ in range(3):
            inp = httpclient.InferInput("n", [1], "INT64")
            inp.set_data_from_numpy(np.array([n], dtype=np.int64), binary_data=False)
            out = httpclient.InferRequestedOutput("y", binary_data=True)
            result = client.infer("big", [inp], outputs=[out])
            np.testing.assert_array_equal(result.as_numpy("y").reshape(-1), want)
    finally:
        client.close()
    # over HTTP/2 (gRPC) as well: 6 MiB is past the default 4 MiB message cap
    if size_mib == 1:
        g = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            inp = grpcclient.InferInput("n", [1], "INT64")
            inp.set_data_from_numpy(np.array([n], dtype=np.int64))
            np.testing.assert_array_equal(g.infer("big", [inp]).as_numpy("y").reshape(-1), want)
        finally:
            g.close()


def big_request(n: int) -> bytes:
    body = json.dumps(
        {
            "inputs": [{"name": "n", "datatype": "INT64", "shape": [1], "data": [n]}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return (
        b"POST /v2/models/big/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_small_answers_queued_behind_a_large_one_keep_their_order(server: BerthServer) -> None:
    # small answers before and after a 6 MiB one on one pipelined connection,
    # read only after a pause: the large answer fills the socket, so the small
    # ones behind it wait for it in the server (the direct path writes what
    # the socket takes at once and queues the rest) and must still arrive
    # whole and in order
    n = 6 * MIB // 4
    want = np.arange(n, dtype=np.float32) * np.float32(0.5)
    sends = [echo_request(0), echo_request(1), big_request(n)]
    sends += [echo_request(i) for i in range(2, 10)]
    sends += [big_request(n), echo_request(10)]
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"".join(sends))
        time.sleep(0.5)  # lets the server fill the socket before anything is read
        answers = read_http_responses(sock, len(sends))
    small = 0
    for k, (status, body) in enumerate(answers):
        assert status == 200, body[:200]
        if k in (2, 11):
            header = json.loads(body[: len(body) - n * 4])  # then the raw tensor
            assert header["outputs"][0]["parameters"]["binary_data_size"] == n * 4, header
            np.testing.assert_array_equal(np.frombuffer(body[-n * 4 :], dtype=np.float32), want)
        else:
            assert json.loads(body)["outputs"][0]["data"] == [small, small + 0.5, -small]
            small += 1
    assert small == 11


def test_a_client_that_stops_reading_does_not_grow_the_server(server: BerthServer) -> None:
    count, each = 32, 4 * MIB  # 128 MiB of answers if the server queued them all
    n = each // 4
    before = rss_bytes(server.pid)
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"".join(big_request(n) for _ in range(count)))
        time.sleep(2.0)  # the server answers what it can; nobody reads
        grown = rss_bytes(server.pid) - before
        assert grown < 48 * MIB, f"berthd grew by {grown / MIB:.0f} MiB for a stalled client"
        # the other clients are still served meanwhile
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as other:
            other.sendall(echo_request(7))
            assert read_http_responses(other, 1)[0][0] == 200
        # then everything arrives, in order and whole
        answers = read_http_responses(sock, count)
    want = (np.arange(n, dtype=np.float32) * np.float32(0.5)).tobytes()
    for status, body in answers:
        assert status == 200
        assert body.endswith(want)  # the JSON head, then the binary tensor


def test_a_client_that_leaves_mid_response_does_not_hurt_the_server(
    server: BerthServer,
) -> None:
    n = 8 * MIB // 4
    for _ in range(4):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
            sock.sendall(big_request(n) * 2)
            got = sock.recv(4096)
            assert got.startswith(b"HTTP/1.1 200")
        # closed with most of the answer unread: a reset for the server
    # the server is fine and still answers everyone
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(echo_request(3) * 3)
        assert [s for s, _ in read_http_responses(sock, 3)] == [200, 200, 200]
    wait_until(
        lambda: server.get("/metrics").status == 200, timeout=10, what="metrics"
    )


def test_a_bad_write_path_is_refused_with_a_clear_error(tmp_path: Path, repo: Path) -> None:
    doc = tmp_path / "berth.yaml"
    doc.write_text("server:\n  write_path: fast\n")
    proc = subprocess.run(
        [berth_executable(), "serve", str(repo), "--config", str(doc), "--port",
         str(free_port()), "--host", "127.0.0.1"],
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "write_path" in text and "fast" in text, text
    proc = subprocess.run(
        [berth_executable(), "serve", str(repo), "--write-path", "fast"],
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "--write-path" in proc.stdout + proc.stderr


@pytest.mark.parametrize("flag, want", [(None, "direct"), ("auto", None)])
def test_the_default_and_auto(module_server: Any, repo: Path, flag: str | None,
                              want: str | None) -> None:
    args = ["--log-level", "debug"] + (["--write-path", flag] if flag else [])
    srv = module_server(str(repo), *args)
    want = want or ("uring" if uring_works() else "writev")
    assert f'"write_path":"{want}"' in srv.log_text().replace(" ", ""), srv.log_tail()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(echo_request(1) * 4)
        assert [s for s, _ in read_http_responses(sock, 4)] == [200] * 4
