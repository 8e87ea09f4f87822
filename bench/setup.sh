# Sourced by run.sh and paired.sh: one benchmark at a time, then everything
# the named servers need installed and the models and bodies prepared.
#
# bench_setup BENCH SERVERS: BENCH is bench/'s absolute path, SERVERS a
# comma-separated list (berth_py runs from Berth's venv). Holds the run lock
# on file descriptor 9 until the calling script exits. A server whose venv
# cannot be built is reported and left for the driver to skip.
bench_setup() {
  local bench="$1" servers="$2" t0=$SECONDS s
  if [ "$(nproc)" -lt 2 ]; then
    echo "bench: needs at least 2 cores (one for the servers, one for the load generator)" >&2
    return 2
  fi
  # Two benchmarks at once would share the cores and both would be wrong:
  # wait for a run in progress to finish.
  mkdir -p "$bench/work"
  exec 9>"$bench/work/.run.lock"
  if ! flock -n 9; then
    echo ">> [bench] another benchmark run is in progress; waiting for it to finish"
    flock 9
  fi
  bash "$bench/install.sh" bench || { echo "bench: the bench venv failed to install" >&2; return 1; }
  for s in $(tr ',' '\n' <<<"$servers" | sed 's/^berth_py$/berth/' | awk 'NF && !seen[$0]++'); do
    bash "$bench/install.sh" "$s" || echo ">> [bench] $s: install failed, skipping it"
  done
  echo ">> [bench] install step took $((SECONDS - t0))s"
  "$bench/.venvs/bench/bin/python" "$bench/prepare.py"
}
