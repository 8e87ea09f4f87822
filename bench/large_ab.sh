#!/usr/bin/env bash
# A/B smoke of two Berth installs on large tensors: an identity model whose
# rows are 1 MiB of FP32 (262144 floats), batched up to 8 rows, sent with
# the binary tensor extension (input and output) by wrk over keep-alive
# connections. Like smoke_ab.sh: berthd pinned to core 0, wrk to core 1;
# prints requests/s, p99, and berthd's and its Python worker's CPU time per
# request (from /proc) per install and concurrency. This is where copies of
# tensor bytes show.
#
#   bash bench/large_ab.sh OLD_BERTH NEW_BERTH [SECONDS] [ROW_FLOATS]
#
# OLD_WORKERS / NEW_WORKERS (environment, optional): a YAML flow mapping
# added as the app's `workers:` for that side, e.g. to compare one install
# with and without shared memory:
#   OLD_WORKERS='{shared_memory_size: 0}' bash bench/large_ab.sh B B 8 262144
set -euo pipefail
old=$1; new=$2; secs=${3:-8}; width=${4:-262144}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cat >"$work/big.py" <<PY
import berth

class Identity(berth.Model):
    inputs = [berth.TensorSpec("x", "FP32", [-1, $width])]
    outputs = [berth.TensorSpec("y", "FP32", [-1, $width])]

    def predict(self, inputs):
        return {"y": inputs["x"]}
PY
cat >"$work/app.yaml" <<YAML
models:
  - {name: big, runtime: python, path: $work/big.py, class: Identity,
     max_batch_size: 8, max_queue_delay_us: 1000, instances: 1}
YAML
hlen=$(python3 - "$work" "$width" <<'PY'
import json, random, struct, sys
w, n = sys.argv[1], int(sys.argv[2])
head = json.dumps({"inputs": [{"name": "x", "shape": [1, n], "datatype": "FP32",
                               "parameters": {"binary_data_size": 4 * n}}],
                   "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
data = struct.pack(f"<{n}f", *(random.random() for _ in range(n)))
open(f"{w}/big.bin", "wb").write(head + data)
print(len(head))
PY
)
port=$((20000 + RANDOM % 20000))
for label in old new; do
  berth=$old; [ $label = new ] && berth=$new
  workers=${OLD_WORKERS:-}; [ $label = new ] && workers=${NEW_WORKERS:-}
  cp "$work/app.yaml" "$work/app-$label.yaml"
  [ -n "$workers" ] && echo "workers: $workers" >>"$work/app-$label.yaml"
  taskset -c 0 "$berth" serve --config "$work/app-$label.yaml" --host 127.0.0.1 --port $port \
    --grpc-port $((port + 1)) >"$work/$label.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.2
  done
  berthd=$(pgrep -f "berthd --config-fd" -P $pid || echo $pid) # berth execs berthd
  # the worker: a child of berthd, or of its worker template (a grandchild)
  worker=
  for _ in $(seq 100); do
    for p in $(pgrep -P "$berthd") $(for c in $(pgrep -P "$berthd"); do pgrep -P "$c"; done); do
      tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'BERTH_WORKER_ID=big/1/0' && worker=$p
    done
    [ -n "$worker" ] && break; sleep 0.1
  done
  for c in 1 8; do
    t0=$(awk '{print $14 + $15}' /proc/$berthd/stat)
    w0=$(awk '{print $14 + $15}' /proc/$worker/stat)
    BENCH_BODY="$work/big.bin" BENCH_HEADER_LEN=$hlen BENCH_OUT="$work/out.json" taskset -c 1 \
      wrk -t1 -c$c -d${secs}s -s "$here/wrk.lua" "http://127.0.0.1:$port/v2/models/big/infer" >/dev/null
    t1=$(awk '{print $14 + $15}' /proc/$berthd/stat)
    w1=$(awk '{print $14 + $15}' /proc/$worker/stat)
    python3 - "$label" "$c" "$work/out.json" "$t0" "$t1" "$(getconf CLK_TCK)" "$width" "$w0" "$w1" <<'PY'
import json, sys
label, c, path, t0, t1, tick, width, w0, w1 = sys.argv[1:]
d = json.load(open(path))
errors = d["err_status"] + d["err_connect"] + d["err_read"] + d["err_write"] + d["err_timeout"]
per = 1e6 / int(tick) / max(d["requests"], 1)
cpu_us = (float(t1) - float(t0)) * per
wcpu_us = (float(w1) - float(w0)) * per
print(f"{label:4} big({int(width) * 4 // 1024} KiB) c={c:>2}: {d['requests'] / (d['duration_us'] / 1e6):7.0f} req/s  "
      f"p99 {d['p99_us'] / 1000:7.2f} ms  CPU/request: berthd {cpu_us:7.1f} us, worker {wcpu_us:7.1f} us  "
      f"errors {errors}")
PY
  done
  kill -TERM $pid; wait $pid || true
done
