#!/usr/bin/env bash
# Paired runs: servers started one at a time and measured in rotating rounds
# (bench/paired.py says why). Installs and prepares as run.sh does.
#
#   bash bench/paired.sh [--servers berth,kserve,...] [--workload W3]
#                        [--points short:16,long:1] [--rounds 4] [--seconds 5]
#                        [--delay-us US]
#
# Writes bench/results/paired-<workload>.md (paired-<workload>-delay<US>.md
# with --delay-us).
set -euo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
servers="berth,kserve,mlserver,bentoml,pytriton,mosec,litserve"; workload=W3; args=(); tag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --servers) servers="$2"; shift 2 ;;
    --workload) workload="$2"; shift 2 ;;
    --points|--rounds|--seconds) args+=("$1" "$2"); shift 2 ;;
    --delay-us) args+=("$1" "$2"); tag="-delay$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "paired.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
# shellcheck source=setup.sh
. "$BENCH/setup.sh"
bench_setup "$BENCH" "$servers"
out="$BENCH/results/paired-$(tr '[:upper:]' '[:lower:]' <<<"$workload")$tag.md"
cd "$BENCH"
"$BENCH/.venvs/bench/bin/python" "$BENCH/paired.py" --servers "$servers" --workload "$workload" \
  --out "$out" ${args[@]+"${args[@]}"}
echo ">> [bench] paired report in $out"
