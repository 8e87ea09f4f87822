#!/usr/bin/env bash
# W1 CPU per request, two Berth builds side by side: the benchmark's W1
# model (identity, 16 floats) served by each build in turn, PAIRS times
# (A, B, A, B, ...), berthd and its model worker pinned to core 1 and wrk to
# core 0, 64 keep-alive connections (C=...) for SECONDS (D=..., 3 by
# default) after a 1-s warm-up. Per run: requests/s and the CPU time per
# request of berthd (user, system) and of its workers (the zygote's
# children), from /proc; at the end the median of each column per build.
# The host's speed drifts by 10-20 % over minutes here, so only runs that
# alternate compare, and only their medians.
#
#   bash bench/w1_cpu_ab.sh A B [PAIRS]          (PAIRS: 6 by default)
#
# A and B are each a berthd binary served by this checkout's .venv (its
# `berth` CLI with BERTH_BERTHD), or CLI@BERTHD for another install (an
# older checkout with its own .venv: its CLI and its berthd, which must
# speak that CLI's config and worker protocol). Needs wrk and taskset.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,17p' "$0"; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
conc=${C:-64}; secs=${D:-3}; pairs=${3:-6}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
. "$here/w1_common.sh"
w1_files "$work"
# utime and stime (clock ticks) of pid, then the sums over its descendants
ticks() {
  local kids k u s ku=0 ks=0
  kids=$(pgrep -P "$1" | tr '\n' ' ' || true)
  for k in $kids; do kids="$kids $(pgrep -P "$k" | tr '\n' ' ' || true)"; done
  for k in $kids; do
    read -r u s < <(awk '{print $14, $15}' "/proc/$k/stat") || continue
    ku=$((ku + u)); ks=$((ks + s))
  done
  echo "$(awk '{print $14, $15}' "/proc/$1/stat") $ku $ks"
}
one() { # label, cli, berthd
  local port=$((20000 + RANDOM % 20000)) pid url
  BERTH_BERTHD=$3 taskset -c 1 "$2" serve --config "$work/app.yaml" --host 127.0.0.1 \
    --port "$port" --grpc-port $((port + 1)) >"$work/serve.log" 2>&1 &
  pid=$!
  w1_wait_ready "$port" $pid "$work/serve.log"
  url="http://127.0.0.1:$port/v2/models/w1/infer"
  BENCH_BODY="$work/w1.json" BENCH_OUT="$work/warm.json" taskset -c 0 wrk -t1 -c"$conc" -d1s -s "$here/wrk.lua" "$url" >/dev/null
  local before after
  before=$(ticks $pid)
  BENCH_BODY="$work/w1.json" BENCH_OUT="$work/run.json" taskset -c 0 wrk -t1 -c"$conc" -d"${secs}s" -s "$here/wrk.lua" "$url" >/dev/null
  after=$(ticks $pid)
  kill -TERM $pid; wait $pid 2>/dev/null || true
  python3 - "$1" "$work/run.json" "$(getconf CLK_TCK)" $before $after <<'PY' | tee -a "$work/rows"
import json, sys
label, run, hz = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3])
t = [int(x) for x in sys.argv[4:]]
n = max(run["requests"], 1)
us = [(t[i + 4] - t[i]) / hz * 1e6 / n for i in range(4)]
print(f"{label}\t{n / (run['duration_us'] / 1e6):.0f}\t" + "\t".join(f"{x:.2f}" for x in us) + f"\t{sum(us):.2f}")
PY
}
split() { case "$1" in *@*) echo "${1%@*} ${1#*@}" ;; *) echo "$here/../.venv/bin/berth $1" ;; esac; }
read -r cli_a bd_a < <(split "$1"); read -r cli_b bd_b < <(split "$2")
echo -e "build\treq/s\tberthd user\tberthd sys\tworker user\tworker sys\ttotal (us/request)"
for _ in $(seq "$pairs"); do one A "$cli_a" "$bd_a"; one B "$cli_b" "$bd_b"; done
python3 - "$work/rows" "$1" "$2" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
for label, name in (("A", sys.argv[2]), ("B", sys.argv[3])):
    cols = list(zip(*[[float(x) for x in r[1:]] for r in rows if r[0] == label]))
    m = [statistics.median(c) for c in cols]
    print(f"median {label} ({name}): {m[0]:.0f} req/s, berthd {m[1]:.2f} + {m[2]:.2f}, "
          f"worker {m[3]:.2f} + {m[4]:.2f}, total {m[5]:.2f} us/request")
PY
