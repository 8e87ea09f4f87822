#!/usr/bin/env bash
# Berth's side-by-side benchmark: `make bench` runs this.
#
#   bash bench/run.sh [--servers berth,mlserver,...] [--workloads W1,W2,W3,W1N,W2N|default]
#                     [--delays 0,500,2000] [--quick] [--reps N] [--seconds S] [--rounds N]
#                     [--pa-protocols http,grpc] [--no-perf-analyzer]
#
# Installs what it needs (idempotently: Debian's wrk, one virtual environment
# per server under bench/.venvs/, Berth built from this working tree), then
# runs the workloads and writes bench/results/<date>-<machine>.md/.png and
# bench/results/latest.md/.png. --quick: one 1-second repetition per point and
# fewer points, a smoke check (results get a -quick suffix, latest.* untouched).
# --delays: the max batch delays (µs) of the sweep (default 0,500,2000; --quick
# defaults to the shared 2000 only); W1, W2, W1N and W2N run at each.
# Needs Berth's Debian build dependencies (`make install` or `make deps`).
set -euo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ALL="berth,berth_py,kserve,mlserver,bentoml,ray,pytriton,mosec,litserve"
servers="$ALL"; workloads=default; delays=""; quick=0; extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --servers) servers="$2"; shift 2 ;;
    --servers=*) servers="${1#*=}"; shift ;;
    --workloads) workloads="$2"; shift 2 ;;
    --workloads=*) workloads="${1#*=}"; shift ;;
    --delays) delays="$2"; shift 2 ;;
    --delays=*) delays="${1#*=}"; shift ;;
    --quick) extra+=(--quick); quick=1; shift ;;
    --reps|--seconds|--rounds|--pa-protocols) extra+=("$1" "$2"); shift 2 ;;
    --no-perf-analyzer) extra+=("$1"); shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$servers" = all ] && servers="$ALL"
if [ -z "$delays" ]; then
  if [ $quick = 1 ]; then delays=2000; else delays=0,500,2000; fi
fi
t0=$SECONDS
# shellcheck source=setup.sh
. "$BENCH/setup.sh"
bench_setup "$BENCH" "$servers"
PY="$BENCH/.venvs/bench/bin/python"
stamp="$(date +%Y%m%d-%H%M%S)"
raw="$BENCH/work/raw-$stamp.json"
"$PY" "$BENCH/driver.py" --servers "$servers" --workloads "$workloads" --delays "$delays" \
  --out "$raw" ${extra[@]+"${extra[@]}"}
"$PY" "$BENCH/report.py" "$raw" --notes "$BENCH/results/NOTES.md"
echo ">> [bench] done in $(((SECONDS - t0) / 60)) min $(((SECONDS - t0) % 60)) s"
