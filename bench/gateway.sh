#!/usr/bin/env bash
# Gateway overhead (docs/gateway.md): the latency a gateway adds at
# concurrency 1 (p50, p99 of wrk against a replica directly vs through the
# gateway) and throughput through the gateway with 1, 2 and 3 replicas.
# Everything on 127.0.0.1. A quick measurement, not asserted anywhere:
#   bench/gateway.sh [SECONDS] [CONNECTIONS]
# Needs `make install` (berth in .venv) and wrk. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
CONNS=${2:-16}
BERTH=.venv/bin/berth
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/double.py" <<'EOF'
import numpy as np
import berth
class Double(berth.Model):
    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]
    def predict(self, inputs):
        return {"y": inputs["x"] * 2}
EOF
cat >"$WORK/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"inputs":[{"name":"x","datatype":"FP32","shape":[4],"data":[1,2,3,4]}]}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %.1f %d %d %d\n", summary.requests,
    summary.requests / (summary.duration / 1e6), latency:percentile(50),
    latency:percentile(99), summary.errors.status + summary.errors.connect +
    summary.errors.read + summary.errors.write + summary.errors.timeout))
end
EOF

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() {
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$1/v2/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "not ready: port $1" >&2; exit 1
}
# wrk URL CONNS -> "requests rps p50_us p99_us errors"
run_wrk() {
  wrk -t1 -c"$2" -d"${SECS}s" -s "$WORK/post.lua" "$1" | awk '/^RESULT/ {print $2, $3, $4, $5, $6}'
}

REPLICA_PORTS=()
REPLICA_PIDS=()
for i in 1 2 3; do
  p=$(free_port); g=$(free_port)
  $BERTH serve "$WORK/double.py" --host 127.0.0.1 --port "$p" --grpc-port "$g" \
    --instances 1 >"$WORK/replica$i.log" 2>&1 &
  PIDS+=($!)
  REPLICA_PIDS+=($!)
  REPLICA_PORTS+=("$p")
done
for p in "${REPLICA_PORTS[@]}"; do wait_ready "$p"; done

start_gateway() { # N replicas -> sets GW_PORT
  local args=() n=$1
  for ((k = 0; k < n; k++)); do args+=(--replica "http://127.0.0.1:${REPLICA_PORTS[$k]}"); done
  GW_PORT=$(free_port)
  $BERTH gateway --port "$GW_PORT" --grpc-port "$(free_port)" "${args[@]}" \
    >"$WORK/gateway$n.log" 2>&1 &
  GW_PID=$!
  PIDS+=($GW_PID)
  wait_ready "$GW_PORT"
}
stop_gateway() { kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true; }

URL=/v2/models/double/infer
# CPU time (user + system, clock ticks) of one process so far
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
echo "| what | connections | requests/s | p50 | p99 | errors | berthd CPU per request (measured process) |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
row() { # label conns url pid: runs wrk, prints a row with pid's CPU per request
  local t0 t1 out
  t0=$(ticks "$4")
  out=$(run_wrk "$3" "$2")
  t1=$(ticks "$4")
  read -r req rps p50 p99 err <<<"$out"
  printf "| %s | %s | %.0f | %.2f ms | %.2f ms | %s | %.0f us |\n" "$1" "$2" "$rps" \
    "$(echo "$p50/1000" | bc -l)" "$(echo "$p99/1000" | bc -l)" "$err" \
    "$(echo "($t1-$t0)*1000000/$HZ/$req" | bc -l)"
}
start_gateway 1
run_wrk "http://127.0.0.1:${REPLICA_PORTS[0]}$URL" 1 >/dev/null # warm-up
R0="http://127.0.0.1:${REPLICA_PORTS[0]}$URL"
row "replica directly" 1 "$R0" "${REPLICA_PIDS[0]}"
row "gateway, 1 replica" 1 "http://127.0.0.1:$GW_PORT$URL" "$GW_PID"
row "replica directly" "$CONNS" "$R0" "${REPLICA_PIDS[0]}"
row "gateway, 1 replica" "$CONNS" "http://127.0.0.1:$GW_PORT$URL" "$GW_PID"
stop_gateway
for n in 2 3; do
  start_gateway "$n"
  run_wrk "http://127.0.0.1:$GW_PORT$URL" "$CONNS" >/dev/null # warm-up
  row "gateway, $n replicas" "$CONNS" "http://127.0.0.1:$GW_PORT$URL" "$GW_PID"
  stop_gateway
done
