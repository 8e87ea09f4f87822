"""Native vs Python-worker ONNX at rising concurrency, with the why.

Not a test: a measurement (bench/results/NOTES-native-p99.md). Serves the
bench's W2N graph (bench/prepare.py's tabular.onnx; W2N's settings: max
batch 32, max queue delay 2 ms, one instance, one intra-op thread) with
`backend: native` or `backend: python`, the server pinned to one core and
wrk to the other, as bench/driver.py runs it, and for each point prints
req/s, p50/p99, the mean batch size (berth_batch_size from /metrics), and
per thread of berthd (and of its workers) the CPU time and the voluntary and
involuntary context switches, so that where the time goes shows.

  .venv/bin/python bench/native_p99.py --model PATH/tabular.onnx \
      --body PATH/oip-tabular.json [--backends native,python] [--conc 16,64]
      [--reps 3] [--seconds 3] [--params '{"allow_spinning": true}']
      [--server-core 0,1 --load-core 0,1]   # a user's unpinned 2-core box
  --params '{"intra_op_threads": null}' leaves the threads to the default.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
HZ = os.sysconf("SC_CLK_TCK")


# --hog BUSY/IDLE (ms): a process in its own session on the server core that
# spins BUSY ms and sleeps IDLE ms while wrk runs (someone else's work on
# the core, as on a shared machine; its share shows as "foreign").
HOG = """
import sys, time
busy, idle = float(sys.argv[1]) / 1000, float(sys.argv[2]) / 1000
while True:
    t = time.monotonic() + busy
    while time.monotonic() < t:
        pass
    if idle > 0:
        time.sleep(idle)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def threads(pids: list[int]) -> dict[str, list[float]]:
    """(process comm/thread comm) -> [cpu s, voluntary cs, involuntary cs]."""
    res: dict[str, list[float]] = {}
    for p in pids:
        try:
            pcomm = open(f"/proc/{p}/comm").read().strip()
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                stat = open(f"/proc/{p}/task/{t}/stat").read()
                status = open(f"/proc/{p}/task/{t}/status").read()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            f = stat.rsplit(")", 1)[1].split()
            cpu = (int(f[11]) + int(f[12])) / HZ
            vol = int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", status).group(1))
            inv = int(re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", status).group(1))
            key = f"{pcomm}/{comm}/{t}"
            acc = res.setdefault(key, [0.0, 0, 0])
            acc[0] += cpu
            acc[1] += vol
            acc[2] += inv
    return res


def core_busy(cores: str) -> float:
    """Busy seconds of the cores ("1" or "0,1") so far (/proc/stat)."""
    busy = 0.0
    for line in open("/proc/stat"):
        name = line.split(" ", 1)[0]
        if name[3:] in cores.split(",") and name.startswith("cpu") and name != "cpu":
            v = [int(x) for x in line.split()[1:]]
            busy += (sum(v[:8]) - v[3] - v[4]) / HZ
    return busy


def batch_hist(port: int) -> tuple[float, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    s = c = 0.0
    for line in text.splitlines():
        if line.startswith("berth_batch_size_sum"):
            s += float(line.split()[-1])
        elif line.startswith("berth_batch_size_count"):
            c += float(line.split()[-1])
    return s, c


def wrk(port: int, conc: int, secs: float, body: str, load_core: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = dict(os.environ, BENCH_BODY=body, BENCH_OUT=out.name)
        subprocess.run(
            [
                "taskset",
                "-c",
                load_core,
                "wrk",
                "-t1",
                f"-c{conc}",
                f"-d{max(1, round(secs))}s",
                "-s",
                str(HERE / "wrk.lua"),
                f"http://127.0.0.1:{port}/v2/models/m/infer",
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return json.load(open(out.name))


def serve(
    berth: str, model: str, backend: str, params: dict, core: str, extra_env: dict
) -> tuple[subprocess.Popen, int, Path]:
    work = Path(tempfile.mkdtemp())
    port = free_port()
    p = {k: v for k, v in {"intra_op_threads": 1, **params}.items() if v is not None}
    (work / "app.yaml").write_text(
        "models:\n  - name: m\n    runtime: onnx\n"
        f"    path: {model}\n    backend: {backend}\n    parameters: {json.dumps(p)}\n"
        "    instances: 1\n    max_batch_size: 32\n    max_queue_delay_us: 2000\n"
    )
    env = dict(os.environ, BERTH_GRPC_PORT=str(free_port()))
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    env.update(extra_env)  # "" unsets one: berthd then picks its own default
    log = open(work / "server.log", "w")
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            core,
            berth,
            "serve",
            "--config",
            str(work / "app.yaml"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/m/ready", timeout=1)
            return proc, port, work
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    sys.exit(f"server did not come up: {(work / 'server.log').read_text()[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", default=str(HERE.parent / ".venv" / "bin" / "berth"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--body", required=True)
    ap.add_argument("--backends", default="native,python")
    ap.add_argument("--conc", default="16,64")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--params", default="{}", help="extra parameters (JSON) for the entry")
    ap.add_argument("--env", default="{}", help="extra environment (JSON) for the server")
    ap.add_argument("--server-core", default="1")
    ap.add_argument("--load-core", default="0")
    ap.add_argument("--hog", default="", help="BUSY/IDLE ms of a competing process")
    ap.add_argument("--threads", action="store_true", help="print per-thread CPU and switches")
    a = ap.parse_args()
    params, extra_env = json.loads(a.params), json.loads(a.env)
    rows = []
    for rep in range(a.reps):
        for backend in a.backends.split(","):  # alternate A/B within each repetition
            proc, port, _work = serve(a.berth, a.model, backend, params, a.server_core, extra_env)
            try:
                wrk(port, 8, 1.0, a.body, a.load_core)  # warm-up
                for c in [int(x) for x in a.conc.split(",")]:
                    pids = tree(proc.pid)
                    t0, (s0, n0) = threads(pids), batch_hist(port)
                    b0, w0 = core_busy(a.server_core), time.monotonic()
                    hog = None
                    if a.hog:
                        busy, idle = a.hog.split("/")
                        hog = subprocess.Popen(
                            ["taskset", "-c", a.server_core, sys.executable, "-c", HOG, busy, idle],
                            start_new_session=True,
                        )
                    try:
                        r = wrk(port, c, a.seconds, a.body, a.load_core)
                    finally:
                        if hog is not None:
                            hog.kill()
                            hog.wait()
                    b1, w1 = core_busy(a.server_core), time.monotonic()
                    t1, (s1, n1) = threads(pids), batch_hist(port)
                    own = sum(v[0] for v in t1.values()) - sum(v[0] for v in t0.values())
                    foreign = max(0.0, (b1 - b0) - own) / (w1 - w0)
                    if set(a.server_core.split(",")) & set(a.load_core.split(",")):
                        foreign = float("nan")  # wrk shares the cores: not measurable
                    n = max(r["requests"], 1)
                    errs = sum(r[k] for k in r if k.startswith("err_"))
                    row = {
                        "rep": rep,
                        "backend": backend,
                        "c": c,
                        "rps": n / (r["duration_us"] / 1e6),
                        "p50": r["p50_us"] / 1000,
                        "p99": r["p99_us"] / 1000,
                        "max": r["max_us"] / 1000,
                        "batch": (s1 - s0) / max(n1 - n0, 1),
                        "batches": n1 - n0,
                        "errors": errs,
                        "foreign": foreign,
                        "threads": {},
                    }
                    for k, v in t1.items():
                        u = t0.get(k, [0.0, 0, 0])
                        d = [v[0] - u[0], v[1] - u[1], v[2] - u[2]]
                        if d[0] > 0 or d[1] > 100:
                            row["threads"][k] = {
                                "cpu_us_per_req": d[0] * 1e6 / n,
                                "vol": d[1],
                                "invol": d[2],
                            }
                    rows.append(row)
                    print(
                        f"{backend:6} c={c:>2} rep={rep}: {row['rps']:8.0f} req/s  "
                        f"p50 {row['p50']:6.2f}  p99 {row['p99']:6.2f}  max {row['max']:6.1f} ms  "
                        f"batch {row['batch']:5.1f} ({row['batches']:.0f})  errors {errs}  "
                        f"foreign {foreign:4.0%}",
                        flush=True,
                    )
                    if a.threads:
                        for k, v in sorted(row["threads"].items()):
                            print(
                                f"      {k:32} {v['cpu_us_per_req']:7.1f} us CPU/req  "
                                f"vol cs {v['vol']:7d}  invol cs {v['invol']:6d}",
                                flush=True,
                            )
            finally:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    out = os.environ.get("NATIVE_P99_OUT")
    if out:
        Path(out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
