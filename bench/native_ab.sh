#!/usr/bin/env bash
# The W2 shape on the native ONNX path (docs/native.md): a 256x256 MLP
# classifier (32 features) exported with skl2onnx, served by one Berth
# twice, backend: python (a worker process running onnxruntime) and
# backend: native (ONNX Runtime's C API in berthd), same batching settings,
# one intra-op thread each. The server is pinned to core 0, wrk to core 1;
# wrk sends the same one-row JSON request over keep-alive connections.
# Prints requests/s, p99, berthd's CPU time per request and the CPU of
# berthd and its workers together per request (utime + stime from /proc),
# then the model's batched in-process limit (onnxruntime called in a loop
# at batch 1 and 16, on core 0). Not a test: numbers for the report.
#
#   bash bench/native_ab.sh [BERTH] [SECONDS]
#
# BERTH is a `berth` command (default: .venv/bin/berth). Needs wrk and
# taskset (Debian), skl2onnx and onnxruntime in BERTH's environment.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
berth=${1:-$here/../.venv/bin/berth}; secs=${2:-8}
py="$(dirname "$berth")/python"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
"$py" - "$work" <<'PY'
import json, random, sys, warnings
import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import make_classification
from sklearn.neural_network import MLPClassifier
w = sys.argv[1]
warnings.filterwarnings("ignore")  # a fixed, short training is the point
X, y = make_classification(n_samples=4000, n_features=32, n_informative=16, random_state=0)
X = X.astype(np.float32)
clf = MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=10, random_state=0).fit(X, y)
onx = to_onnx(clf, X[:1], options={id(clf): {"zipmap": False}}, target_opset=15)
open(f"{w}/mlp.onnx", "wb").write(onx.SerializeToString())
body = {"inputs": [{"name": "X", "shape": [1, 32], "datatype": "FP32",
                    "data": [round(random.random(), 6) for _ in range(32)]}]}
open(f"{w}/body.json", "w").write(json.dumps(body))
PY
cat >"$work/app.yaml" <<YAML
models:
  - {name: py, runtime: onnx, path: $work/mlp.onnx, backend: python, max_batch_size: 64,
     max_queue_delay_us: 1000, instances: 1, parameters: {intra_op_threads: 1}}
  - {name: nat, runtime: onnx, path: $work/mlp.onnx, backend: native, max_batch_size: 64,
     max_queue_delay_us: 1000, instances: 1, parameters: {intra_op_threads: 1}}
YAML
port=$((20000 + RANDOM % 20000))
taskset -c 0 "$berth" serve --config "$work/app.yaml" --host 127.0.0.1 --port $port \
  --grpc-port $((port + 1)) >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.2
done
cpu() { # utime + stime (ticks) of the given pids
  for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0; done |
    awk '{s += $1} END {print s}'
}
for m in py nat; do
  for c in 1 16; do
    procs=$(echo $pid $(pgrep -P $pid || true))
    b0=$(cpu $pid); a0=$(cpu $procs)
    BENCH_BODY="$work/body.json" BENCH_OUT="$work/out.json" taskset -c 1 \
      wrk -t1 -c$c -d${secs}s -s "$here/wrk.lua" "http://127.0.0.1:$port/v2/models/$m/infer" >/dev/null
    b1=$(cpu $pid); a1=$(cpu $procs)
    python3 - "$m" "$c" "$work/out.json" "$b0" "$b1" "$a0" "$a1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
m, c, path, b0, b1, a0, a1, tick = sys.argv[1:]
d = json.load(open(path))
errors = d["err_status"] + d["err_connect"] + d["err_read"] + d["err_write"] + d["err_timeout"]
n = max(d["requests"], 1)
per = lambda t0, t1: (float(t1) - float(t0)) / int(tick) * 1e6 / n
backend = "python" if m == "py" else "native"
print(f"{backend:6} c={c:>2}: {n / (d['duration_us'] / 1e6):8.0f} req/s  p99 {d['p99_us'] / 1000:6.2f} ms  "
      f"berthd {per(b0, b1):6.1f} us CPU/req  berthd+workers {per(a0, a1):6.1f} us CPU/req  errors {errors}")
PY
  done
done
kill -TERM $pid; wait $pid || true
taskset -c 0 "$py" - "$work/mlp.onnx" <<'PY'
import sys, time
import numpy as np, onnxruntime as ort
o = ort.SessionOptions(); o.intra_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
for b in (1, 16):
    x = np.random.default_rng(0).random((b, 32), dtype=np.float32)
    for _ in range(200): s.run(None, {"X": x})
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < 2: s.run(None, {"X": x}); n += 1
    rate = n * b / (time.perf_counter() - t)
    print(f"in-process onnxruntime batch {b:>2}: {rate:8.0f} rows/s")
PY
