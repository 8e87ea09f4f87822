#!/usr/bin/env python3
"""Which C files one REST inference runs, measured with gcov.

Builds nothing itself: give it a meson build folder configured with
`-Db_coverage=true` (its berthd) and a `berth` command. It serves a small
scikit-learn model twice: once to start and stop, once to start, answer one
`POST /v2/models/iris/infer` N times (N = 5), and stop. Readiness is read
from the server's log, not asked over HTTP, so the first run serves no
request at all. A function belongs to the inference when it ran at least N
times more in the second run (timer work, such as the dashboard's
once-a-second sample, differs by a run or two at most); the files holding
such functions are the files one inference touches. docs/architecture.md
quotes the count.

    python3 engine/tools/request_files.py BUILD_DIR BERTH_COMMAND
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


N = 5


def wait_ready(log: Path) -> None:
    for _ in range(1200):
        if b'"model ready"' in log.read_bytes():
            return
        time.sleep(0.1)
    raise RuntimeError("the server did not become ready: " + log.read_text()[-2000:])


def run_once(build: Path, berth: str, model: Path, infer: bool) -> dict[str, int]:
    for f in build.rglob("*.gcda"):
        f.unlink()
    port, gport = free_port(), free_port()
    env = dict(os.environ, BERTH_BERTHD=str(build / "engine" / "berthd"))
    log = model.parent / f"server-{infer}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([berth, "serve", str(model), "--host", "127.0.0.1", "--port",
                                 str(port), "--grpc-port", str(gport), "--log-format", "json"],
                                env=env, stdout=out, stderr=out)
    try:
        wait_ready(log)
        time.sleep(1)
        for _ in range(N if infer else 0):
            body = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64",
                                           "data": [5.1, 3.5, 1.4, 0.2]}]}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/iris/infer",
                                         data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        objdir = build / "engine" / "libberth_core.a.p"
        gcdas = [str(p) for p in objdir.glob("*.gcda")]
        subprocess.run(["gcov", "--json-format", "-o", str(objdir), *gcdas], cwd=tmp,
                       capture_output=True, check=True)
        for j in Path(tmp).glob("*.gcov.json.gz"):
            doc = json.loads(gzip.decompress(j.read_bytes()))
            for f in doc["files"]:
                for fn in f.get("functions", []):
                    key = f"{Path(f['file']).name}:{fn['name']}"
                    counts[key] = counts.get(key, 0) + fn["execution_count"]
    return counts


def main(argv: list[str]) -> int:
    build, berth = Path(argv[1]).resolve(), argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        import joblib
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        x, y = load_iris(return_X_y=True)
        model = Path(tmp) / "iris.joblib"
        joblib.dump(LogisticRegression(max_iter=500).fit(x, y), model)
        idle = run_once(build, berth, model, infer=False)
        one = run_once(build, berth, model, infer=True)
    ran = sorted({k.split(":")[0] for k, n in one.items()
                  if n >= idle.get(k, 0) + N and k.split(":")[0].endswith(".c")})
    print(f"{len(ran)} C files run by one REST inference:")
    print("  " + " ".join(ran))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
