#!/usr/bin/env bash
# Instructions per W1 request in berthd's event loop, counted by callgrind:
# a count that does not drift with the host's speed (CPU time here moves by
# 10-20 % over minutes, and this VM has no hardware counters). Each given
# berthd serves the benchmark's W1 model (identity, 16 floats) under
# valgrind --tool=callgrind, collecting only inside uv_run (the loop: not
# start-up, not the Python worker), while wrk sends JSON requests over 64
# keep-alive connections for 2 s (warm-up) and then SECONDS. Prints the
# instructions per request and the ten costliest functions.
#
#   SECONDS_W1=8 bash bench/w1_instructions.sh BERTHD [BERTHD...]   (8 s by default)
#
# Needs valgrind and wrk (Debian's packages) and Berth's .venv (make install).
# Under callgrind berthd runs ~30x slower, so batches differ from a real
# run's: compare builds with this, never quote its requests/s.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,16p' "$0"; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
berth="$here/../.venv/bin/berth"
secs=${SECONDS_W1:-8}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
. "$here/w1_common.sh"
w1_files "$work"
for bd in "$@"; do
  out="$work/cg.out"
  printf '#!/bin/sh\nexec valgrind --tool=callgrind --collect-atstart=no --toggle-collect=uv_run --callgrind-out-file=%s %s "$@"\n' \
    "$out" "$(readlink -f "$bd")" >"$work/vg.sh"
  chmod +x "$work/vg.sh"
  port=$((20000 + RANDOM % 20000))
  BERTH_BERTHD="$work/vg.sh" "$berth" serve --config "$work/app.yaml" --host 127.0.0.1 \
    --port "$port" --grpc-port $((port + 1)) >"$work/serve.log" 2>&1 &
  pid=$!
  w1_wait_ready "$port" $pid "$work/serve.log"
  url="http://127.0.0.1:$port/v2/models/w1/infer"
  BENCH_BODY="$work/w1.json" BENCH_OUT="$work/warm.json" wrk -t1 -c64 -d2s -s "$here/wrk.lua" "$url" >/dev/null
  BENCH_BODY="$work/w1.json" BENCH_OUT="$work/run.json" wrk -t1 -c64 -d"${secs}s" -s "$here/wrk.lua" "$url" >/dev/null
  kill -TERM $pid; wait $pid || true
  for _ in $(seq 50); do [ -s "$out" ] && break; sleep 0.2; done
  n=$(python3 -c "import json,sys; print(sum(json.load(open(f))['requests'] for f in sys.argv[1:]))" \
      "$work/warm.json" "$work/run.json")
  total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {gsub(",", "", $1); print $1; t = 1}')
  echo "== $bd: $n requests, $(( total / n )) instructions per request in the loop"
  callgrind_annotate "$out" 2>/dev/null | sed -n '/file:function/,$p' | sed -n '3,12p' |
    awk -v n="$n" '{gsub(",", "", $1); f = "?"; for (i = 2; i <= NF; i++) if ($i ~ /:/) { f = $i; break }
                    sub(/.*\//, "", f); printf "  %7.0f  %s\n", $1 / n, f}'
  rm -f "$out"
done
