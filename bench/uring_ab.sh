#!/usr/bin/env bash
# A/B of berthd's write path (server.write_path, docs/http.md) on the
# benchmark's W1 (identity, 16 floats) and W2 (tabular MLP) over keep-alive
# HTTP/1.1 JSON, like bench/smoke_ab.sh: each variant serves the same models
# in turn, pinned to core 0 (its worker with it), wrk on core 1. Per variant,
# workload and concurrency it prints requests/s, berthd's CPU µs per request
# (utime + stime from /proc) and berthd's syscalls per request, split by
# kind (perf stat on syscall tracepoints, all of berthd's threads).
#
#   bash bench/uring_ab.sh SECONDS LABEL=BERTH[:WRITE_PATH[:BERTHD]] ...
#
# (BERTHD: an engine binary to run instead of the install's, through
# BERTH_BERTHD; e.g. a build of the base commit, whose berthd does not know
# server.write_path: give it an empty WRITE_PATH.)
# e.g. bash bench/uring_ab.sh 5 main=/work/main/.venv/bin/berth \
#        writev=.venv/bin/berth:writev uring=.venv/bin/berth:uring
# WRK_SCRIPT=wrk_pipeline.lua (BENCH_PIPELINE=8) sends pipelined requests.
# Needs wrk, taskset and perf (kernel.perf_event_paranoid <= 2 for a
# process of one's own).
set -euo pipefail
secs=$1; shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
conc=${CONC:-1 16 64}
loads=${LOADS:-w1 w2}
first_berth=${1#*=}; first_berth=${first_berth%%:*}
if [ ! -f "$here/work/tabular.joblib" ]; then # W2's model (bench/prepare.py)
  mkdir -p "$here/work"
  "$(dirname "$first_berth")/python" -c "import sys; sys.path.insert(0, '$here')
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
events=raw_syscalls:sys_enter
for s in read write writev epoll_wait epoll_ctl io_uring_enter recvmsg sendmsg; do
  events="$events,syscalls:sys_enter_$s"
done
for spec in "$@"; do
  label=${spec%%=*}; rest=${spec#*=}
  IFS=: read -r berth wp berthd <<<"$rest"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  path=""; [ -n "$wp" ] && path="--write-path $wp"
  # shellcheck disable=SC2086
  env ${berthd:+BERTH_BERTHD=$berthd} taskset -c 0 "$berth" serve --config "$work/app.yaml" --host 127.0.0.1 --port $port \
    --grpc-port 0 $path >"$work/$label.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.2
  done
  berthd=$(pgrep -f "berthd --config-fd" -P $pid || echo $pid) # berth execs berthd
  for w in $loads; do
    for c in $conc; do
      BENCH_BODY="$work/$w.json" BENCH_OUT="$work/warm.json" taskset -c 1 \
        wrk -t1 -c"$c" -d1s -s "$here/${WRK_SCRIPT:-wrk.lua}" "http://127.0.0.1:$port/v2/models/$w/infer" >/dev/null
      t0=$(awk '{print $14 + $15}' /proc/"$berthd"/stat)
      perf stat -x, -e "$events" -p "$berthd" -o "$work/perf.csv" -- sleep "$secs" &
      perfpid=$!
      BENCH_BODY="$work/$w.json" BENCH_OUT="$work/out.json" taskset -c 1 \
        wrk -t1 -c"$c" -d"${secs}"s -s "$here/${WRK_SCRIPT:-wrk.lua}" "http://127.0.0.1:$port/v2/models/$w/infer" >/dev/null
      t1=$(awk '{print $14 + $15}' /proc/"$berthd"/stat)
      wait $perfpid || true
      python3 - "$label" "$w" "$c" "$work/out.json" "$t0" "$t1" "$(getconf CLK_TCK)" "$work/perf.csv" <<'PY'
import json, sys
label, w, c, path, t0, t1, tick, perf = sys.argv[1:]
d = json.load(open(path))
n = max(d["requests"], 1)
errors = d["err_status"] + d["err_connect"] + d["err_read"] + d["err_write"] + d["err_timeout"]
cpu_us = (float(t1) - float(t0)) / int(tick) * 1e6 / n
counts = {}
for line in open(perf):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].replace(".", "").isdigit():
        counts[parts[2].split(":")[-1].replace("sys_enter_", "")] = float(parts[0])
total = counts.pop("sys_enter", 0.0)
kinds = " ".join(f"{k} {v / n:.2f}" for k, v in counts.items() if v > 0)
print(f"{label:7} {w} c={c:>2}: {n / (d['duration_us'] / 1e6):8.0f} req/s  "
      f"berthd {cpu_us:5.1f} us CPU/req  syscalls/req {total / n:5.2f} ({kinds})  "
      f"errors {errors}", flush=True)
PY
    done
  done
  kill -TERM $pid; wait $pid || true
done
