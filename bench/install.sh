#!/usr/bin/env bash
# Create (idempotently) the virtual environments the benchmark needs:
#   bench/.venvs/<name> for the harness ("bench") and for each server.
# Usage: bash bench/install.sh [name ...]   (default: bench and every server)
# A venv is rebuilt only when its line in bench/requirements.txt (or the
# "common"/"nodeps" lines) changes; the stamp file records what it holds.
# Berth itself is (re)built from this working tree into bench/.venvs/berth
# every time (incremental: the meson build folder lives in bench/work/).
set -euo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
VENVS="$BENCH/.venvs"
PY="${PYTHON:-python3}"
mkdir -p "$VENVS" "$BENCH/work/logs"

say() { printf '>> [install] %s\n' "$*"; }

# Debian tools: wrk is the load generator; linux-perf is not needed.
need_deb=""
command -v wrk >/dev/null || need_deb="$need_deb wrk"
if [ -n "$need_deb" ]; then
  say "installing Debian packages:$need_deb"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need_deb >/dev/null
fi

req_line() { awk -v n="$1" '$1==n { $1=""; sub(/^ +/, ""); print; exit }' "$BENCH/requirements.txt"; }
ALL_SERVERS="$(awk '!/^#/ && NF && $1!="common" && $1!="nodeps" && $1!="bench" {print $1}' "$BENCH/requirements.txt")"

make_venv() {  # name
  local name="$1" dir="$VENVS/$1" spec common nodeps want log
  spec="$(req_line "$name")"; common="$(req_line common)"; nodeps="$(req_line nodeps)"
  want="$(printf '%s\n%s\n%s\n%s\n' "$spec" "$common" "$nodeps" "$(cat "$BENCH/constraints.txt")" | sha256sum | cut -c1-16)"
  log="$BENCH/work/logs/install-$name.log"
  if [ -f "$dir/.bench-stamp" ] && [ "$(cat "$dir/.bench-stamp")" = "$want" ]; then
    say "$name: venv up to date"
  else
    say "$name: creating bench/.venvs/$name ($spec) - log in bench/work/logs/install-$name.log"
    local t0=$SECONDS
    rm -rf "$dir"
    "$PY" -m venv "$dir"
    {
      "$dir/bin/python" -m pip install -q --upgrade pip
      # shellcheck disable=SC2086
      "$dir/bin/python" -m pip install -c "$BENCH/constraints.txt" $common $spec
      # shellcheck disable=SC2086
      "$dir/bin/python" -m pip install --no-deps $nodeps
    } >"$log" 2>&1 || { say "$name: FAILED, last lines of $log:"; tail -15 "$log"; return 1; }
    echo "$want" >"$dir/.bench-stamp"
    say "$name: done in $((SECONDS - t0))s"
  fi
  if [ "$name" = bench ] && [ ! -x "$dir/bin/perf_analyzer" ]; then
    # Triton's perf_analyzer: the registry's perf-analyzer wheels (2.58+) and
    # tritonclient 2.52+ are built for glibc 2.38 and do not start on Debian 12
    # (glibc 2.36). tritonclient 2.51.0's wheel carries one that does: take only
    # the binary. It needs libb64 (Debian) and libcudart.so.12 even on a CPU
    # (nvidia-cuda-runtime-cu12 from the registry).
    say "bench: installing perf_analyzer (binary of tritonclient 2.51.0) and its libraries"
    if ! dpkg-query -W -f='${Status}' libb64-0d 2>/dev/null | grep -q "ok installed"; then
      SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
      $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libb64-0d >/dev/null
    fi
    local tmp; tmp="$(mktemp -d)"
    if "$dir/bin/python" -m pip install -q 'nvidia-cuda-runtime-cu12==12.*' >>"$log" 2>&1 &&
       "$dir/bin/python" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" tritonclient==2.51.0 >>"$log" 2>&1 &&
       "$dir/bin/python" - "$tmp" "$dir/bin/perf_analyzer" <<'PYEOF'
import glob, os, shutil, sys, zipfile
whl = glob.glob(os.path.join(sys.argv[1], "tritonclient-*.whl"))[0]
with zipfile.ZipFile(whl) as z, z.open("tritonclient-2.51.0.data/data/bin/perf_analyzer") as src, \
        open(sys.argv[2] + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2] + ".tmp", 0o755)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
PYEOF
    then say "bench: perf_analyzer ready"; else say "bench: perf_analyzer could not be installed (the run uses wrk only); see $log"; fi
    rm -rf "$tmp"
  fi
  if [ "$name" = berth ]; then
    say "berth: building and installing berth from $ROOT into bench/.venvs/berth"
    # -Dwerror=false: the benchmark measures whatever the working tree is; a new
    # compiler warning in someone's edit in progress must not stop the run
    # (`make test` is where warnings fail).
    local rev; rev="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    if PATH="$dir/bin:$PATH" "$dir/bin/python" -m pip install -q --no-deps --no-build-isolation \
      -Cbuild-dir="$BENCH/work/berth-build" -Csetup-args=-Dwerror=false "$ROOT" >"$BENCH/work/logs/build-berth.log" 2>&1; then
      echo "$rev built $(date -u +%Y-%m-%dT%H:%MZ)" >"$dir/.berth-build"
    elif [ -x "$dir/bin/berth" ]; then
      # the working tree does not build right now (someone's edit in progress):
      # measure the last build that did, and say so in the report
      say "berth: the working tree ($rev) does not build; using the previous build: $(cat "$dir/.berth-build" 2>/dev/null)"
      grep -m3 -E "error:" "$BENCH/work/logs/build-berth.log" | sed 's/^/   /' || true
    else
      say "berth: build FAILED:"; tail -20 "$BENCH/work/logs/build-berth.log"; return 1
    fi
  fi
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(bench $ALL_SERVERS)
rc=0
for t in "${targets[@]}"; do make_venv "$t" || rc=1; done
exit $rc
