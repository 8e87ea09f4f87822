"""`python -m berth.worker` as a real process, spoken to over a socketpair on fd 3."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import berth
import numpy as np
import pytest
from berth.tensors import decode_tensor_set, encode_tensor_set

HEADER = struct.Struct("<IHHQ")
LOAD, READY, LOAD_FAILED, INFER, RESULT, ERROR, SHUTDOWN = range(1, 8)
PACKAGE_ROOT = str(Path(berth.__file__).resolve().parent.parent)
# bash, not sh: dash cannot redirect descriptors above 9.
BASH = shutil.which("bash") or "/bin/bash"


class Worker:
    """A worker process and the engine's end of its channel."""

    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None) -> None:
        self.engine, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.engine.settimeout(60)
        n = child.fileno()
        redirect = "" if n == 3 else f" 3<&{n} {n}<&-"
        full_env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
        full_env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")])),
            BERTH_WORKER_ID="m/1/0",
            **(env or {}),
        )
        self.stderr_path = tmp_path / "worker-stderr.txt"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [BASH, "-c", f'exec "$0" -m berth.worker{redirect}', sys.executable],
                pass_fds=(n,),
                env=full_env,
                stdin=subprocess.DEVNULL,
                stderr=stderr,
            )
        child.close()

    def send(self, ftype: int, payload: bytes = b"", frame_id: int = 0, flags: int = 0) -> None:
        self.engine.sendall(HEADER.pack(len(payload), ftype, flags, frame_id) + payload)

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.engine.recv(n - len(buf))
            if not chunk:
                raise EOFError(f"worker closed the channel; stderr:\n{self.stderr()}")
            buf += chunk
        return bytes(buf)

    def recv(self) -> tuple[int, int, bytes]:
        length, ftype, flags, frame_id = HEADER.unpack(self._exact(HEADER.size))
        assert flags == 0
        return ftype, frame_id, self._exact(length)

    def load(self, entry: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.send(LOAD, json.dumps({"version": "1", "instance": 0, **entry}).encode())
        ftype, frame_id, payload = self.recv()
        assert frame_id == 0
        return ftype, json.loads(payload)

    def infer(
        self, frame_id: int, inputs: dict[str, np.ndarray], params: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        self.send(INFER, encode_tensor_set(inputs, params), frame_id)
        ftype, got_id, payload = self.recv()
        assert got_id == frame_id
        if ftype == RESULT:
            return ftype, decode_tensor_set(payload)[0]
        return ftype, json.loads(payload)

    def wait(self) -> int:
        return self.proc.wait(timeout=60)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> None:
        self.engine.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    workers: list[Worker] = []

    def make(**env: str) -> Worker:
        worker = Worker(tmp_path, env)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.close()


CUSTOM = textwrap.dedent(
    """
    import os
    import numpy as np
    import berth

    class Picky(berth.Model):
        inputs = [berth.TensorSpec("x", "FP64", [-1])]
        outputs = [berth.TensorSpec("y", "FP64", [-1])]

        def predict(self, inputs, parameters):
            x = inputs["x"]
            mode = parameters.get("mode")
            if mode == "crash":
                raise ValueError("boom")
            if mode == "list":
                return [1, 2]
            if mode == "threads":
                return {"threads": np.array([os.environ["OMP_NUM_THREADS"]])}
            if (x < 0).any():
                raise berth.InvalidInput("x must be >= 0")
            return {"y": x * 2}
    """
)


def test_sklearn_load_infer_shutdown(spawn: Any, tmp_path: Path) -> None:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(x, y)
    joblib.dump(model, tmp_path / "iris.joblib")

    worker = spawn()
    ftype, ready = worker.load(
        {"name": "iris", "runtime": "sklearn", "path": str(tmp_path / "iris.joblib")}
    )
    assert ftype == READY, ready
    assert ready == {
        "protocol": 3,
        "platform": "sklearn_sklearn",
        "max_batch_size": 64,
        "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
        ],
    }
    for frame_id in (1, 2**63 + 5):
        ftype, outputs = worker.infer(frame_id, {"input": x[:10]})
        assert ftype == RESULT
        np.testing.assert_array_equal(outputs["predict"], model.predict(x[:10]))
        np.testing.assert_allclose(outputs["predict_proba"], model.predict_proba(x[:10]))
    worker.send(SHUTDOWN)
    assert worker.wait() == 0
    assert "worker m/1/0" in worker.stderr()


def test_errors_keep_the_worker_serving(spawn: Any, tmp_path: Path) -> None:
    (tmp_path / "picky.py").write_text(CUSTOM)
    worker = spawn()
    ftype, ready = worker.load(
        {"name": "m", "runtime": "python", "path": str(tmp_path / "picky.py")}
    )
    assert ftype == READY and ready["platform"] == "berth_python"

    assert worker.infer(1, {"x": np.array([-1.0])}) == (
        ERROR,
        {"error": "x must be >= 0", "kind": "input"},
    )
    assert worker.infer(2, {"x": np.array([1.0])}, {"mode": "crash"}) == (
        ERROR,
        {"error": "ValueError: boom", "kind": "model"},
    )
    ftype, error = worker.infer(3, {"x": np.array([1.0])}, {"mode": "list"})
    assert ftype == ERROR and error["kind"] == "model" and "dict" in error["error"]
    ftype, outputs = worker.infer(4, {"x": np.array([1.0, 2.5])})
    assert ftype == RESULT
    np.testing.assert_array_equal(outputs["y"], [2.0, 5.0])

    assert "Traceback" in worker.stderr() or "boom" in worker.stderr()
    worker.engine.shutdown(socket.SHUT_WR)  # end of file: exit 0
    assert worker.wait() == 0


def test_large_frames_both_ways(spawn: Any, tmp_path: Path) -> None:
    (tmp_path / "picky.py").write_text(CUSTOM)
    worker = spawn()
    assert (
        worker.load({"name": "m", "runtime": "python", "path": str(tmp_path / "picky.py")})[0]
        == READY
    )
    x = np.arange(3_000_000, dtype=np.float64)  # 24 MB each way
    ftype, outputs = worker.infer(9, {"x": x})
    assert ftype == RESULT
    np.testing.assert_array_equal(outputs["y"], x * 2)
    worker.send(SHUTDOWN)
    assert worker.wait() == 0


KEEPER = textwrap.dedent(
    """
    import numpy as np
    import berth

    class Keeper(berth.Model):
        \"\"\"Keeps the input array of every call whose "keep" parameter is set
        (a view of the worker's receive buffer) and returns, with x + 1, the
        sums of every array it keeps: they must not change when later
        batches arrive.\"\"\"
        inputs = [berth.TensorSpec("x", "FP64", [-1])]
        outputs = [berth.TensorSpec("y", "FP64", [-1])]

        def load(self):
            self.kept = []

        def predict(self, inputs, parameters):
            x = inputs["x"]
            if parameters.get("keep"):
                self.kept.append(x)
            sums = np.array([k.sum() for k in self.kept], dtype=np.float64)
            return {"y": x + 1, "sums": sums}
    """
)


def test_large_batches_reuse_the_receive_buffer_but_never_under_a_kept_array(
        spawn: Any, tmp_path: Path) -> None:
    # Payloads of 64 KiB and more are received into a buffer kept from batch
    # to batch (Channel.recv); an array the model keeps from one batch must
    # still hold its values after later batches of every size arrive.
    (tmp_path / "keeper.py").write_text(KEEPER)
    worker = spawn()
    assert worker.load({"name": "m", "runtime": "python", "path": str(tmp_path / "keeper.py")})[0] == READY
    kept_sums: list[float] = []
    sizes = [100_000, 100_000, 50_000, 200_000, 10, 100_000, 30_000, 100_000]
    for i, n in enumerate(sizes):
        x = np.full(n, float(i + 1)) + np.arange(n) % 7
        keep = i in (1, 3, 5)
        ftype, outputs = worker.infer(100 + i, {"x": x}, {"keep": True} if keep else None)
        assert ftype == RESULT, outputs
        np.testing.assert_array_equal(outputs["y"], x + 1)
        if keep:
            kept_sums.append(float(x.sum()))
        np.testing.assert_array_equal(outputs["sums"], np.array(kept_sums))
    worker.send(SHUTDOWN)
    assert worker.wait() == 0


def test_thread_defaults_follow_instances_unless_set(spawn: Any, tmp_path: Path) -> None:
    (tmp_path / "picky.py").write_text(CUSTOM)
    entry = {"name": "m", "runtime": "python", "path": str(tmp_path / "picky.py"), "instances": 2}
    expected = str(max(1, len(os.sched_getaffinity(0)) // 2))
    for env, want in (({}, expected), ({"OMP_NUM_THREADS": "3"}, "3")):
        worker = spawn(**env)
        assert worker.load(entry)[0] == READY
        ftype, outputs = worker.infer(1, {"x": np.zeros(1)}, {"mode": "threads"})
        assert ftype == RESULT and outputs["threads"].tolist() == [want.encode()]
        worker.send(SHUTDOWN)
        assert worker.wait() == 0


def test_load_failed_then_exit_1(spawn: Any, tmp_path: Path) -> None:
    worker = spawn()
    ftype, failed = worker.load(
        {"name": "m", "runtime": "sklearn", "path": str(tmp_path / "nope.joblib")}
    )
    assert ftype == LOAD_FAILED
    assert failed["error"].startswith("ModelLoadError: ") and "nope.joblib" in failed["error"]
    assert worker.wait() == 1
    assert "Traceback" in worker.stderr()


def test_load_of_a_raising_model(spawn: Any, tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "import berth\n"
        "class Bad(berth.Model):\n"
        "    def load(self):\n"
        "        raise RuntimeError('no weights')\n"
    )
    worker = spawn()
    assert worker.load({"name": "m", "runtime": "python", "path": str(tmp_path / "bad.py")}) == (
        LOAD_FAILED,
        {"error": "RuntimeError: no weights"},
    )
    assert worker.wait() == 1


def test_sigterm_when_idle_exits_0(spawn: Any, tmp_path: Path) -> None:
    (tmp_path / "picky.py").write_text(CUSTOM)
    worker = spawn()
    assert (
        worker.load({"name": "m", "runtime": "python", "path": str(tmp_path / "picky.py")})[0]
        == READY
    )
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_protocol_error_exits_1(spawn: Any, tmp_path: Path) -> None:
    worker = spawn()
    worker.send(LOAD, b"{}", flags=1)
    assert worker.wait() == 1
    assert "flags" in worker.stderr()


def test_shutdown_before_load_exits_0(spawn: Any) -> None:
    worker = spawn()
    worker.send(SHUTDOWN)
    assert worker.wait() == 0
