#!/usr/bin/env bash
# A/B smoke of two Berth installs on the benchmark's W1 (identity, 16 floats)
# and W2 (the tabular MLP) models: each install serves the same models with
# the same settings in turn, pinned to core 0, while wrk (core 1) sends the
# same JSON requests over keep-alive connections. Prints requests/s, p99 and
# berthd's CPU time per request (utime + stime from /proc: unlike
# requests/s, not inflated when a busy host steals the CPU) per install,
# workload and concurrency, for a quick "did the change move anything?"
# check; bench/run.sh is the real benchmark.
#
#   bash bench/smoke_ab.sh OLD_BERTH NEW_BERTH [SECONDS]
#
# OLD_BERTH and NEW_BERTH are `berth` commands (e.g. another clone's
# .venv/bin/berth). Needs wrk (Debian's package) and taskset.
set -euo pipefail
old=$1; new=$2; secs=${3:-8}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
if [ ! -f "$here/work/tabular.joblib" ]; then # W2's model (bench/prepare.py)
  mkdir -p "$here/work"
  "$(dirname "$new")/python" -c "import sys; sys.path.insert(0, '$here')
from pathlib import Path; from prepare import train_tabular
train_tabular(Path('$here/work/tabular.joblib'))"
fi
cat >"$work/app.yaml" <<YAML
models:
  - {name: w1, runtime: python, path: $here/servers/berth_models.py, class: Identity,
     max_batch_size: 64, max_queue_delay_us: 1000, instances: 1}
  - {name: w2, runtime: python, path: $here/servers/berth_models.py, class: Tabular,
     max_batch_size: 64, max_queue_delay_us: 1000, instances: 1}
YAML
python3 - "$work" <<'PY'
import json, random, sys
w = sys.argv[1]
for name, n in (("w1", 16), ("w2", 32)):
    body = {"inputs": [{"name": "x", "shape": [1, n], "datatype": "FP32",
                        "data": [round(random.random(), 6) for _ in range(n)]}]}
    open(f"{w}/{name}.json", "w").write(json.dumps(body))
PY
port=$((20000 + RANDOM % 20000))
for label in old new; do
  berth=$old; [ $label = new ] && berth=$new
  taskset -c 0 "$berth" serve --config "$work/app.yaml" --host 127.0.0.1 --port $port \
    --grpc-port $((port + 1)) >"$work/$label.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.2
  done
  berthd=$(pgrep -f "berthd --config-fd" -P $pid || echo $pid) # berth execs berthd
  for w in w1 w2; do
    for c in 1 16; do
      t0=$(awk '{print $14 + $15}' /proc/$berthd/stat)
      BENCH_BODY="$work/$w.json" BENCH_OUT="$work/out.json" taskset -c 1 \
        wrk -t1 -c$c -d${secs}s -s "$here/wrk.lua" "http://127.0.0.1:$port/v2/models/$w/infer" >/dev/null
      t1=$(awk '{print $14 + $15}' /proc/$berthd/stat)
      python3 - "$label" "$w" "$c" "$work/out.json" "$t0" "$t1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
label, w, c, path, t0, t1, tick = sys.argv[1:]
d = json.load(open(path))
errors = d["err_status"] + d["err_connect"] + d["err_read"] + d["err_write"] + d["err_timeout"]
cpu_us = (float(t1) - float(t0)) / int(tick) * 1e6 / max(d["requests"], 1)
print(f"{label:4} {w} c={c:>2}: {d['requests'] / (d['duration_us'] / 1e6):9.0f} req/s  "
      f"p99 {d['p99_us'] / 1000:6.2f} ms  berthd {cpu_us:5.1f} us CPU/request  errors {errors}")
PY
    done
  done
  kill -TERM $pid; wait $pid || true
done
