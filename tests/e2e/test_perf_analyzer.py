"""Triton's ``perf_analyzer`` runs against Berth unchanged: it reads the
model's metadata and configuration, sends binary tensors, and reports the
server-side breakdown from the statistics extension.

The binary is installed by ``make venv`` (see ``perf_analyzer_bin.py`` for
why it comes out of the tritonclient 2.51.0 wheel).
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import perf_analyzer_bin
import pytest
from berth_e2e import BerthServer, add_python_model, berth_executable, free_port

DOUBLER_SOURCE = '''
import numpy as np
import berth


class Doubler(berth.Model):
    """y = 2x, batched along the first dimension."""

    inputs = [berth.TensorSpec("x", "FP32", [-1, 3])]
    outputs = [berth.TensorSpec("y", "FP32", [-1, 3])]

    def predict(self, inputs):
        return {"y": inputs["x"] * 2}
'''

#: How many requests each run sends, two at a time, two rows each.
REQUESTS = 40
# A fixed request count (--request-count) instead of perf_analyzer's default
# time windows: it sends exactly REQUESTS requests and reports them as one
# measurement, with no stability check, so a busy machine cannot fail the run
# ("Failed to obtain stable measurement"). Only completeness is asserted here;
# speed is measured in bench/.
RUN_ARGS = ["--concurrency-range", "2", "--request-count", str(REQUESTS), "-b", "2"]


@pytest.fixture(scope="module")
def perf_analyzer() -> str:
    binary = perf_analyzer_bin.find()
    if binary is None:
        pytest.skip("perf_analyzer is not installed; `make venv` installs it (tests/e2e/perf_analyzer_bin.py)")
    missing = perf_analyzer_bin.missing_libraries(binary)
    if missing:
        pytest.skip(
            f"perf_analyzer cannot start, missing {', '.join(missing)}: `make deps` installs libb64-0d, "
            "`make venv` nvidia-cuda-runtime-cu12"
        )
    return binary


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("perf-repo")
    add_python_model(root, "doubler", DOUBLER_SOURCE, "Doubler", yaml_extra="max_batch_size: 8\ninstances: 2\n")
    return root


def grpc_flag() -> str | None:
    """The `berth serve` flag for the gRPC port, when this build has one."""
    out = subprocess.run([berth_executable(), "serve", "--help"], capture_output=True, text=True, timeout=60)
    return "--grpc-port" if "--grpc-port" in out.stdout else None


def run(perf_analyzer: str, *args: str) -> str:
    res = subprocess.run(
        [perf_analyzer, "-m", "doubler", *args, *RUN_ARGS],
        capture_output=True,
        text=True,
        env=perf_analyzer_bin.runtime_env(),
        timeout=240,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"perf_analyzer exited {res.returncode}:\n{out[-4000:]}"
    return out


def success_counts(server: BerthServer, protocol: str) -> tuple[int, int, dict[str, int]]:
    """doubler's successful requests in its statistics, its executions, and
    berth_requests_total for protocol by outcome."""
    (st,) = server.get("/v2/models/doubler/stats").json()["model_stats"]
    metrics = server.get("/metrics").body.decode()
    outcomes = {
        m.group(1): int(m.group(2))
        for m in re.finditer(
            r'^berth_requests_total\{model="doubler",version="1",protocol="' + protocol
            + r'",outcome="(\w+)"\} (\d+)$', metrics, re.M)
    }
    assert outcomes, metrics[-3000:]
    return st["inference_stats"]["success"]["count"], st["execution_count"], outcomes


def check_run(server: BerthServer, protocol: str, *args: str) -> None:
    """perf_analyzer exits 0 after every request was answered, and Berth's
    statistics and metrics counted exactly those requests."""
    ok0, ex0, by_outcome0 = success_counts(server, protocol)
    out = run(*args)
    ok1, ex1, by_outcome1 = success_counts(server, protocol)
    # the client's side: every request it sent was answered
    m = re.search(r"Client:\s*\n\s+Request count: (\d+)", out)
    assert m and int(m.group(1)) == REQUESTS, out
    # The server-side breakdown comes from GET .../stats. perf_analyzer reads
    # them first after its load has started, so its own delta may miss the
    # first requests; the exact count is checked below, read around the run.
    assert "Server:" in out, out
    m = re.search(r"Successful request count: (\d+)", out)
    assert m and 1 <= int(m.group(1)) <= REQUESTS, out
    assert re.search(r"Avg request latency: \d+ usec \(overhead", out), out
    # Berth's own counts agree: the statistics and the metrics, no errors
    assert ok1 - ok0 == REQUESTS
    assert 1 <= ex1 - ex0 <= REQUESTS
    delta = {k: by_outcome1[k] - by_outcome0.get(k, 0) for k in by_outcome1}
    assert delta.pop("success") == REQUESTS, delta
    assert set(delta.values()) == {0}, delta


@pytest.fixture(scope="module")
def server(module_server: Any, repo: Path) -> tuple[BerthServer, int]:
    """The server, and its gRPC port (0 when this build has no gRPC)."""
    gport = free_port() if grpc_flag() else 0
    extra = ["--grpc-port", str(gport)] if gport else []
    return module_server(str(repo), *extra), gport


def test_perf_analyzer_over_http(perf_analyzer: str, server: tuple[BerthServer, int]) -> None:
    check_run(server[0], "rest", perf_analyzer, "-u", f"127.0.0.1:{server[0].port}", "-i", "http")


def test_perf_analyzer_over_grpc(perf_analyzer: str, server: tuple[BerthServer, int]) -> None:
    srv, gport = server
    if not gport:
        pytest.skip("this build's `berth serve` has no --grpc-port yet (the gRPC frontend is not in)")
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", gport), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"nothing listens on the gRPC port {gport}\n{srv.log_tail()}")
            time.sleep(0.1)
    check_run(srv, "grpc", perf_analyzer, "-u", f"127.0.0.1:{gport}", "-i", "grpc")
