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

import pytest

import perf_analyzer_bin
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

#: A short run: one-second windows, stable within 50 %, at most 5 windows.
# A short run whose only job is to show that perf_analyzer works against
# Berth: its stability check (-s, percent) is loose and it may take up to 10
# windows, so a busy CI machine does not fail it. Speed is measured in bench/.
RUN_ARGS = ["--concurrency-range", "2", "-p", "1000", "-r", "10", "-s", "100", "-b", "2"]


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


def check_report(out: str) -> None:
    assert "Throughput:" in out, out
    # the server-side breakdown comes from GET .../stats
    assert "Server:" in out, out
    m = re.search(r"Inference count: (\d+)", out)
    assert m and int(m.group(1)) > 0, out
    m = re.search(r"Successful request count: (\d+)", out)
    assert m and int(m.group(1)) > 0, out
    assert re.search(r"Avg request latency: \d+ usec \(overhead", out), out


@pytest.fixture(scope="module")
def server(module_server: Any, repo: Path) -> tuple[BerthServer, int]:
    """The server, and its gRPC port (0 when this build has no gRPC)."""
    gport = free_port() if grpc_flag() else 0
    extra = ["--grpc-port", str(gport)] if gport else []
    return module_server(str(repo), *extra), gport


def test_perf_analyzer_over_http(perf_analyzer: str, server: tuple[BerthServer, int]) -> None:
    out = run(perf_analyzer, "-u", f"127.0.0.1:{server[0].port}", "-i", "http")
    check_report(out)


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
    out = run(perf_analyzer, "-u", f"127.0.0.1:{gport}", "-i", "grpc")
    check_report(out)
