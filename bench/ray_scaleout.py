"""Berth on Ray, measured on one machine (docs/ray.md): a 3-node Ray cluster
on 127.0.0.1, ``berth serve --ray`` with 1, 2 and 3 replicas of a small
Python model, and wrk against one replica directly and against the gateway.
Prints a Markdown table: latency at concurrency 1 (p50, p99: the gateway's
added latency is the difference) and throughput at concurrency 16.

    .venv/bin/python bench/ray_scaleout.py [--seconds 8] [--out bench/results/ray.md]

Needs wrk (Debian's package). Not part of `make bench`. On a 2-core machine
every process shares the same two cores: read the numbers as a smoke, not
as a capacity figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

HERE = Path(__file__).resolve().parent
BERTH = str(Path(sys.executable).parent / "berth")
MODEL = '''
import berth


class Echo(berth.Model):
    inputs = [berth.TensorSpec("x", "FP32", [-1, 16])]
    outputs = [berth.TensorSpec("y", "FP32", [-1, 16])]

    def predict(self, inputs):
        return {"y": inputs["x"]}
'''


def wrk(url: str, body: Path, connections: int, seconds: int, work: Path) -> dict:
    out = work / "wrk.json"
    env = dict(os.environ, BENCH_BODY=str(body), BENCH_OUT=str(out))
    subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(HERE / "wrk.lua"),
         f"{url}/v2/models/echo/infer"],
        check=True, capture_output=True, env=env,
    )
    doc = json.loads(out.read_text())
    doc["rps"] = doc["requests"] / (doc["duration_us"] / 1e6)
    doc["errors"] = sum(doc[k] for k in ("err_status", "err_connect", "err_read", "err_write",
                                         "err_timeout"))
    return doc


def berth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BERTH, *args], capture_output=True, text=True, timeout=600)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--out", default=None)
    ns = parser.parse_args()
    from ray.cluster_utils import Cluster

    work = Path(tempfile.mkdtemp(prefix="berth-ray-bench-"))
    (work / "repo" / "echo" / "1").mkdir(parents=True)
    (work / "repo" / "echo" / "1" / "model.py").write_text(MODEL)
    (work / "repo" / "echo" / "berth.yaml").write_text(
        "runtime: python\nclass: Echo\nmax_batch_size: 64\n")
    body = work / "body.json"
    body.write_text(json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16],
                                            "data": [0.5] * 16}]}))
    gateway = berth("gateway", "--help").returncode == 0
    (work / "berth.yaml").write_text(
        "ray:\n  name: bench\n  replicas: 1\n"
        "  resources: {num_cpus: 0.25, custom: {berth_slot: 1}}\n"
        f"  gateway: {{enabled: {'true' if gateway else 'false'}, port: 0, grpc_port: 0}}\n"
    )
    common = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 << 20, "num_cpus": 1,
              "resources": {"berth_slot": 1}}
    cluster = Cluster(initialize_head=True, head_node_args={**common, "include_dashboard": False})
    serve = None
    rows = []
    try:
        for _ in range(2):
            cluster.add_node(**common)
        serve = subprocess.Popen(
            [BERTH, "serve", str(work / "repo"), "--config", str(work / "berth.yaml"),
             "--ray", cluster.address],
            stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "wb"))
        deadline = time.monotonic() + 300
        while "serving on Ray" not in (work / "serve.log").read_text():
            if serve.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((work / "serve.log").read_text())
            time.sleep(0.5)
        flags = ["--ray", cluster.address, "--app", "bench"]
        for replicas in (1, 2, 3):
            done = berth("ray", "scale", "--replicas", str(replicas), "--wait", *flags)
            assert done.returncode == 0, done.stderr
            status = json.loads(berth("status", "--json", *flags).stdout)
            direct = sorted(r["url"] for r in status["replicas"])[0]
            for url in [direct] + ([status["gateway"]] if status["gateway"] else []):
                urllib.request.urlopen(url + "/v2/health/ready", timeout=10).read()
                wrk(url, body, 1, 2, work)  # warm up
                one = wrk(url, body, 1, ns.seconds, work)
                many = wrk(url, body, 16, ns.seconds, work)
                rows.append((replicas, "gateway" if url != direct else "one replica, direct",
                             one, many))
                print(rows[-1][:2], f"p50 {one['p50_us']} us p99 {one['p99_us']} us, "
                      f"{many['rps']:.0f} req/s at c=16", file=sys.stderr)
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(timeout=120)
        cluster.shutdown()
    lines = [
        f"# Berth on Ray, measured ({time.strftime('%Y-%m-%d')}, {platform.node()}, "
        f"{os.cpu_count()} cores; every process on the same cores)",
        "",
        f"wrk, {ns.seconds} s per cell, JSON request of 16 FP32 (an echo model), keep-alive.",
        "" if gateway else "The gateway was not built in: direct numbers only.",
        "",
        "| replicas | target | p50 c=1 (us) | p99 c=1 (us) | req/s c=1 | req/s c=16 | p99 c=16 (us) "
        "| errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for replicas, target, one, many in rows:
        lines.append(
            f"| {replicas} | {target} | {one['p50_us']} | {one['p99_us']} | {one['rps']:.0f} | "
            f"{many['rps']:.0f} | {many['p99_us']} | {one['errors'] + many['errors']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if ns.out:
        Path(ns.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
