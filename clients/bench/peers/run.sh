#!/usr/bin/env bash
# `make bench-peers`: Paradigm next to Seldon MLServer, measured by one driver, and Paradigm
# checked by an outside load tool (NVIDIA's perf_analyzer). Run from the repository root;
# docs/benchmarks/peers/README.md explains the steps and the knobs below.
#
# Everything it needs it installs itself, once: MLServer in .venv-peers, perf_analyzer in
# .venv-perf (each in its own venv: MLServer pins its own scikit-learn, fastapi and uvloop,
# and tritonclient 2.51 wants numpy < 2 and protobuf < 5, none of which may touch .venv),
# and Debian's libb64-0d. Servers, models and data live in a temporary directory removed
# at exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../../.."

OUT=${OUT:-docs/benchmarks/peers}
# MLServer's parallel_workers: 0 (inference in the server process) was its fastest setting
# on 2 cores; "default" leaves its own default of 1 worker process.
MLSERVER_WORKERS=${MLSERVER_WORKERS:-0}
# A second MLServer, "mlserver-batch", runs with adaptive batching (max_batch_size, and
# max_batch_time in seconds), since Paradigm batches by default and MLServer does not.
# 16 = the largest concurrency measured, so batches fill there; 0 leaves this one out.
MLSERVER_BATCH_SIZE=${MLSERVER_BATCH_SIZE:-16}
MLSERVER_BATCH_TIME=${MLSERVER_BATCH_TIME:-0.002}
PERF_CONCURRENCY=${PERF_CONCURRENCY:-1,4,16}
PERF_INTERVAL_MS=${PERF_INTERVAL_MS:-5000}
# Extra arguments for the shared driver (python -m clients.bench.run), word-split on purpose;
# they come after ours, so e.g. BENCH_ARGS="--paradigms classical,deep" overrides them.
BENCH_ARGS=${BENCH_ARGS:-}

PY=.venv/bin/python
PEERS_VENV=.venv-peers
PERF_VENV=.venv-perf
# Versions this was measured with; uvloop 0.22 crashes MLServer 1.7's default event loop.
PEERS_REQUIREMENTS=(mlserver==1.7.1 mlserver-sklearn==1.7.1 "uvloop<0.22")
# 2.51.0 is the newest tritonclient whose perf_analyzer binary runs on Debian 12 (glibc
# 2.36); the binary links libcudart.so.12 even for CPU-only use, hence the CUDA runtime wheel.
PERF_REQUIREMENTS=("tritonclient[all]==2.51.0" nvidia-cuda-runtime-cu12==12.9.79)
MODEL=digits-logistic

log() { printf '\n== %s\n' "$*"; }

# Creates (or reuses) a venv holding exactly these requirements. The marker records them,
# so a changed pin reinstalls and an unchanged one costs nothing.
ensure_venv() {
  local venv=$1
  shift
  local wanted="$*"
  if [[ -x $venv/bin/python && -f $venv/.installed && $(<"$venv/.installed") == "$wanted" ]]; then
    return
  fi
  log "installing $wanted into $venv"
  [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
  if ! "$venv/bin/python" -m pip install -q "$@" >"$venv/install.log" 2>&1; then
    tail -n 40 "$venv/install.log" >&2
    exit 1
  fi
  printf '%s' "$wanted" >"$venv/.installed"
}

ensure_libb64() {
  # grep without -q reads all of ldconfig's output, so pipefail sees no SIGPIPE.
  if ldconfig -p | grep 'libb64\.so\.0d' >/dev/null; then return; fi
  log "installing Debian's libb64-0d (perf_analyzer links libb64.so.0d)"
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -q >/dev/null
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends libb64-0d >/dev/null
}

# N free TCP ports on 127.0.0.1 (MLServer takes fixed ports, unlike our --port 0).
free_ports() {
  "$PY" -c '
import socket, sys
sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in sockets))
' "$1"
}

# Stops one process we started: SIGTERM, then SIGKILL if it has not gone within 20 s.
stop() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 40); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
}

PIDS=()
WORK=
cleanup() {
  local status=$? pid f
  for pid in "${PIDS[@]}"; do stop "$pid"; done
  wait 2>/dev/null || true
  if [[ $status -ne 0 && -n $WORK ]]; then
    for f in "$WORK"/*.log; do
      [[ -f $f ]] && { echo "--- last lines of $f" >&2; tail -n 20 "$f" >&2; }
    done
  fi
  [[ -z $WORK ]] || rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Lays out and starts one MLServer: start_mlserver NAME MAX_BATCH_SIZE. Sets ML_TARGET
# (gRPC) and ML_HTTP (REST).
start_mlserver() {
  local name=$1 batch_size=$2 grpc http
  read -r grpc http < <(free_ports 2)
  "$PEERS_VENV/bin/python" clients/bench/peers/mlserver_model.py --dir "$WORK/$name" \
    --grpc-port "$grpc" --http-port "$http" --parallel-workers "$MLSERVER_WORKERS" \
    --max-batch-size "$batch_size" --max-batch-time "$MLSERVER_BATCH_TIME"
  # From inside its own directory: MLServer creates .envs/ and .metrics/ in the working
  # directory, which must not land in the repository.
  (cd "$WORK/$name" && exec "$ROOT/$PEERS_VENV/bin/mlserver" start .) >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  ML_TARGET=127.0.0.1:$grpc
  ML_HTTP=127.0.0.1:$http
}

ROOT=$PWD
[[ -x $PY && -x .venv/bin/paradigm-server ]] || make install
ensure_venv "$PEERS_VENV" "${PEERS_REQUIREMENTS[@]}"
ensure_venv "$PERF_VENV" "${PERF_REQUIREMENTS[@]}"
ensure_libb64

PERF_ANALYZER=$PERF_VENV/bin/perf_analyzer
CUDART_DIR=$("$PERF_VENV/bin/python" -c '
import pathlib, nvidia.cuda_runtime as m
print(next(pathlib.Path(p, "lib") for p in m.__path__))')
[[ -x $PERF_ANALYZER && -e $CUDART_DIR/libcudart.so.12 ]] || {
  echo "perf_analyzer or libcudart.so.12 missing from $PERF_VENV" >&2
  exit 1
}

WORK=$(mktemp -d -t paradigm-peers.XXXXXX)
mkdir -p "$OUT"

# MLServers first: each takes several seconds to import and load, overlapping our training.
log "MLServer: training $MODEL in $PEERS_VENV (parallel_workers=$MLSERVER_WORKERS)"
PEER_ARGS=()
PERF_SERVERS=()
start_mlserver mlserver 0
PEER_ARGS+=(--peer "mlserver=$ML_TARGET:$MODEL")
# Its REST port too (JSON: MLServer has no binary tensor data extension), against ours.
REST_ARGS=(--rest-peer "mlserver-rest=$ML_HTTP:$MODEL")
# MLServer's input is [-1, 64] (a variable batch), so perf_analyzer needs --shape for it
# (the trailing :input); ours has fixed dims in its ModelConfig.
PERF_SERVERS+=(--server "mlserver=$ML_TARGET:$MODEL:input")
if ((MLSERVER_BATCH_SIZE > 1)); then
  log "MLServer with adaptive batching: max_batch_size=$MLSERVER_BATCH_SIZE," \
    "max_batch_time=$MLSERVER_BATCH_TIME s"
  start_mlserver mlserver-batch "$MLSERVER_BATCH_SIZE"
  PEER_ARGS+=(--peer "mlserver-batch=$ML_TARGET:$MODEL")
  PERF_SERVERS+=(--server "mlserver-batch=$ML_TARGET:$MODEL:input")
fi

log "Paradigm: starting the server and training $MODEL"
read -r METRICS_PORT HTTP_PORT < <(free_ports 2)
# Metrics are recorded whether or not they are served; the endpoint lets the driver read
# the batch sizes our server formed. Batching is on, its default.
.venv/bin/paradigm-server --host 127.0.0.1 --port 0 --port-file "$WORK/paradigm.port" \
  --metrics-port "$METRICS_PORT" --http-port "$HTTP_PORT" --data-dir "$WORK/paradigm-data" \
  >"$WORK/paradigm.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 120); do
  [[ -s $WORK/paradigm.port ]] && break
  kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "paradigm-server exited" >&2; exit 1; }
  sleep 0.5
done
[[ -s $WORK/paradigm.port ]] || { echo "paradigm-server wrote no port in 60 s" >&2; exit 1; }
OURS=127.0.0.1:$(<"$WORK/paradigm.port")
# perf_analyzer's model; the driver trains its own copy (bench-digits-lr) the same way.
.venv/bin/paradigm --target "$OURS" train digits logistic_regression --name "$MODEL"

log "Checking every server answers a v2 ModelInfer (FP32 [1, 64])"
{
  echo "# What ran ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  "$PEERS_VENV/bin/python" -m pip list 2>/dev/null |
    awk -v venv="$PEERS_VENV" \
      '$1 ~ /^(mlserver|mlserver-sklearn|scikit-learn|uvloop|grpcio)$/ {print venv ": " $1, $2}'
  LD_LIBRARY_PATH=$CUDART_DIR "$PERF_ANALYZER" --version 2>&1 || true
  "$PY" -m clients.bench.peers.probe --target "$OURS" --model "$MODEL"
  for spec in "${PEER_ARGS[@]}"; do
    [[ $spec == --peer ]] && continue
    target=${spec#*=}
    "$PY" -m clients.bench.peers.probe --target "${target%:*}" --model "$MODEL"
  done
} | tee "$OUT/servers.txt" # with pipefail a failed probe still stops the script

log "Shared driver: python -m clients.bench.run (ours, its limits, MLServer)"
# Classical only (MLServer serves the scikit-learn model), and no cold start: that compares
# nothing with the peers and `make bench` measures it.
# One run's files in $OUT: the driver names its JSON by time, so older ones would pile up.
rm -f "$OUT"/bench-*.json
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options, split on purpose
"$PY" -m clients.bench.run --target-ours "$OURS" --http-ours "127.0.0.1:$HTTP_PORT" \
  --metrics-ours "http://127.0.0.1:$METRICS_PORT/metrics" "${PEER_ARGS[@]}" "${REST_ARGS[@]}" \
  --paradigms classical --skip-cold-start --out "$OUT" $BENCH_ARGS

log "perf_analyzer against every server"
# It cannot drive MLServer (no ModelConfig); perf.py records that in its table.
"$PY" clients/bench/peers/perf.py --perf-analyzer "$PERF_ANALYZER" --lib-dir "$CUDART_DIR" \
  --server "paradigm=$OURS:$MODEL" "${PERF_SERVERS[@]}" \
  --concurrency "$PERF_CONCURRENCY" --interval-ms "$PERF_INTERVAL_MS" \
  --work-dir "$WORK/perf" --out "$OUT/perf_analyzer.md"

log "done: $OUT"
