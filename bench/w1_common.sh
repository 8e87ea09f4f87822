# Sourced by the W1 scripts (w1_instructions.sh, w1_cpu_ab.sh, loops_ab.sh).
#
# w1_files DIR [MAX_BATCH DELAY_US] writes DIR/app.yaml (the benchmark's W1
# model, identity on 16 floats, one worker; max batch 32 and 2 ms max queue
# delay unless given) and DIR/w1.json (one request of 16 FP32 values, always
# the same).
w1_files() {
  local bench
  bench="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  cat >"$1/app.yaml" <<YAML
models:
  - {name: w1, runtime: python, path: $bench/servers/berth_models.py, class: Identity,
     max_batch_size: ${2:-32}, max_queue_delay_us: ${3:-2000}, instances: 1}
YAML
  python3 - "$1" <<'PY'
import json, random, sys
random.seed(1)
body = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32",
                    "data": [round(random.random(), 6) for _ in range(16)]}]}
open(f"{sys.argv[1]}/w1.json", "w").write(json.dumps(body))
PY
}

# w1_wait_ready PORT PID LOG: waits (3 min at most) until the server on
# 127.0.0.1:PORT is ready; exits with LOG's tail if process PID ends first.
w1_wait_ready() {
  for _ in $(seq 900); do
    curl -sf "http://127.0.0.1:$1/v2/health/ready" >/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { tail "$3"; exit 1; }
    sleep 0.2
  done
  echo "the server on port $1 was not ready after 3 minutes; see $3" >&2
  exit 1
}
