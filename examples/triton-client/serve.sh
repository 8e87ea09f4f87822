#!/bin/sh
# Serve the stand-in models of models/ the way Triton's Python client
# examples expect them: on 127.0.0.1, one instance each, the repository API
# on (the model-control examples unload and load `simple`).
#
#   examples/triton-client/serve.sh [HTTP_PORT [GRPC_PORT [MODEL...]]]
#
# Ports default to 8000 and 8001 (the examples' defaults). With MODEL names,
# only those are served, from a temporary copy of their folders (the
# model-control examples count the repository's models). More `berth serve`
# settings may be given in BERTH_* variables (berth serve --help).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
http_port=${1:-8000}
grpc_port=${2:-8001}
[ $# -gt 2 ] && shift 2 || set --
repo="$here/models"
if [ $# -gt 0 ]; then
    repo=$(mktemp -d)
    trap 'rm -rf "$repo"' EXIT
    trap 'exit 130' INT TERM
    for m in "$@"; do
        [ -d "$here/models/$m" ] || { echo "serve.sh: no stand-in named $m" >&2; exit 2; }
        cp -R "$here/models/$m" "$repo/$m"
    done
fi
berth serve "$repo" \
    --host 127.0.0.1 --port "$http_port" --grpc-port "$grpc_port" \
    --instances 1 --model-control-mode explicit &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' INT TERM
wait "$pid"
