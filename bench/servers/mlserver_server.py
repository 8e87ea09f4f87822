"""MLServer (pip `mlserver`): a custom runtime, OIP v2 REST, adaptive batching.

Writes settings.json and model-settings.json into a folder, then execs
`mlserver start <folder>`. parallel_workers=1: the model runs in one worker
process beside the main (HTTP) process, as Berth's does.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=0)
    ap.add_argument("--delay-us", type=int, default=0)
    ap.add_argument("--dir", required=True)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    with open(os.path.join(a.dir, "settings.json"), "w") as f:
        json.dump({"http_port": a.port, "grpc_port": a.port + 1, "metrics_port": a.port + 2,
                   "parallel_workers": a.workers, "debug": False, "metrics_endpoint": None,
                   "logging": None, "host": "127.0.0.1"}, f)
    ms = {"name": a.model, "implementation": "mlserver_runtime.BenchRuntime",
          "parameters": {"extra": {"kind": a.model}}}
    if a.max_batch > 1:
        ms["max_batch_size"] = a.max_batch
        ms["max_batch_time"] = a.delay_us / 1e6
    with open(os.path.join(a.dir, "model-settings.json"), "w") as f:
        json.dump(ms, f)
    os.environ["PYTHONPATH"] = HERE + os.pathsep + os.path.join(HERE, "..", "models")
    mlserver = os.path.join(os.path.dirname(sys.executable), "mlserver")
    os.execv(mlserver, [mlserver, "start", a.dir])
