#!/usr/bin/env bash
# Network loops (docs/threads.md) on the benchmark's W1 model (identity, 16
# floats): one Berth install serves it with each --network-loops value in
# turn (berthd not pinned: its threads may use every core), while wrk sends
# the same JSON requests over keep-alive connections. Prints requests/s, p99
# and berthd's CPU time per request (utime + stime of all its threads, from
# /proc) per loop count and concurrency. Requests/s is noisy on a small,
# shared host; the CPU time per request much less so.
#
#   bash bench/loops_ab.sh BERTH [SECONDS] [LOOPS...]   (default: 8 s, 1 2)
#
# LOOPS_TLS=1 serves HTTPS instead (a throwaway self-signed certificate made
# with the openssl command). Needs wrk (Debian's package).
set -euo pipefail
berth=$1; secs=${2:-8}; shift $(( $# >= 2 ? 2 : $# ))
loops=("$@"); [ ${#loops[@]} -eq 0 ] && loops=(1 2)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
# shellcheck source=w1_common.sh
. "$here/w1_common.sh"
w1_files "$work" 64 1000
port=$((20000 + RANDOM % 20000))
scheme=http; tls=(); label=""
if [ "${LOOPS_TLS:-0}" = 1 ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -keyout "$work/key.pem" \
    -out "$work/cert.pem" -subj "/CN=127.0.0.1" >/dev/null 2>&1
  scheme=https; tls=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem"); label=" (TLS)"
fi
for n in "${loops[@]}"; do
  "$berth" serve --config "$work/app.yaml" --host 127.0.0.1 --port $port \
    --grpc-port $((port + 1)) --network-loops "$n" "${tls[@]}" >"$work/$n.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    curl -skf "$scheme://127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.2
  done
  berthd=$(pgrep -f "berthd --config-fd" -P $pid || echo $pid) # berth execs berthd
  for c in 1 16 64; do
    t0=$(awk '{print $14 + $15}' /proc/$berthd/stat)
    BENCH_BODY="$work/w1.json" BENCH_OUT="$work/out.json" \
      wrk -t1 -c$c -d${secs}s -s "$here/wrk.lua" "$scheme://127.0.0.1:$port/v2/models/w1/infer" >/dev/null
    t1=$(awk '{print $14 + $15}' /proc/$berthd/stat)
    python3 - "$n$label" "$c" "$work/out.json" "$t0" "$t1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
n, c, path, t0, t1, tick = sys.argv[1:]
d = json.load(open(path))
errors = d["err_status"] + d["err_connect"] + d["err_read"] + d["err_write"] + d["err_timeout"]
cpu_us = (float(t1) - float(t0)) / int(tick) * 1e6 / max(d["requests"], 1)
print(f"loops={n} W1 c={c:>2}: {d['requests'] / (d['duration_us'] / 1e6):9.0f} req/s  "
      f"p99 {d['p99_us'] / 1000:6.2f} ms  berthd {cpu_us:5.1f} us CPU/request  errors {errors}")
PY
  done
  kill -TERM $pid; wait $pid || true
done
