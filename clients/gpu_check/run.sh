#!/usr/bin/env bash
# `make gpu-check`: everything the GPU verification needs, in one device call (docs/gpu.md).
#
# Runs ON the lent GPU machine (no network), from the repository root, after the carries of
# `make gpu-wheels` were copied to /tmp/gpu-wheels (or lie in .gpu-wheels/). Steps:
#   1 wheels   reassemble the carried wheels, sha256-verified
#   2 install  pip install --no-deps --target /tmp/paradigm-site (ahead of the image's
#              CPU-only onnxruntime on PYTHONPATH)
#   3 facts    device facts + an InferenceSession that must really run on CUDA
#   4 pytest   the tests marked gpu
#   5 bench    python -m clients.bench.gpu --devices cpu,cuda
#   6 classical  hummingbird on CUDA vs ORT CPU, if hummingbird was carried
#   7 SUMMARY.md
# Each step's failure is recorded and the next step still runs; the exit status is non-zero
# if any step failed. Everything lands in $OUT/gpu (the device tool brings back at most
# 8 files: this script writes 4 — facts.txt, pytest-gpu.txt, classical-gpu.md, SUMMARY.md —
# and leaves the rest to the benchmark). Bounded by GPU_CHECK_BUDGET_S (default 540 s).
set -u
cd "$(dirname "$0")/../.."
REPO=$(pwd)
GPU_PY=${GPU_PY:-python3}
OUT_DIR=${OUT:-$REPO/gpu-out}/gpu
SITE=${GPU_SITE:-/tmp/paradigm-site}
WHEELS=/tmp/gpu-wheels-whole
LOGS=/tmp/gpu-check-logs
BUDGET=${GPU_CHECK_BUDGET_S:-540}
DEADLINE=$((SECONDS + BUDGET))
mkdir -p "$OUT_DIR" "$LOGS"
rm -f "$LOGS"/*.log
STEPS=()    # "name|status|seconds|log"
FAILED=0

# step NAME LIMIT_S LOGFILE COMMAND...: run with a timeout that respects the overall budget.
step() {
    local name=$1 limit=$2 log=$3
    shift 3
    local left=$((DEADLINE - SECONDS - 15))
    if ((left < 10)); then
        STEPS+=("$name|SKIPPED (time budget spent)|0|$log")
        FAILED=1
        echo "== $name: skipped, budget spent" | tee -a "$log"
        return 1
    fi
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit}s) $(date -u +%T)"
    local start=$SECONDS rc
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    local took=$((SECONDS - start)) status="ok"
    if ((rc == 124 || rc == 137)); then
        status="FAILED (timed out after ${limit}s)"
    elif ((rc != 0)); then
        status="FAILED (exit $rc)"
    fi
    [[ $status != ok ]] && FAILED=1
    STEPS+=("$name|$status|$took|$log")
    echo "   $name: $status in ${took}s"
    [[ $status == ok ]]
}

# 1. Wheels: reassemble from every carry that came over (/tmp copies and .gpu-wheels/).
rm -rf "$WHEELS"
step wheels 60 "$LOGS/wheels.log" "$GPU_PY" -m clients.gpu_check.wheels reassemble \
    --src /tmp/gpu-wheels --src "$REPO/.gpu-wheels" --out "$WHEELS"

# 2. Install whatever was reassembled (a missing wheel shows in the later steps).
install_wheels() {
    rm -rf "$SITE"
    shopt -s nullglob
    local wheels=("$WHEELS"/*.whl)
    if ((${#wheels[@]} == 0)); then
        echo "no wheels in $WHEELS"
        return 1
    fi
    "$GPU_PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --disable-pip-version-check --target "$SITE" "${wheels[@]}"
}
export -f install_wheels
export WHEELS SITE GPU_PY
step install 120 "$LOGS/install.log" bash -c install_wheels

# The carried packages come first (onnxruntime-gpu ahead of the image's onnxruntime), then
# the repo. ONNX Runtime finds CUDA 13 and cuDNN in the image's nvidia-* wheels.
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
NV_LIBS=$(PYTHONPATH= "$GPU_PY" -c 'import glob, site, sysconfig
dirs = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
print(":".join(sorted({d for p in dirs for d in glob.glob(p + "/nvidia/*/lib")})))' 2>/dev/null)
export LD_LIBRARY_PATH="${NV_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1

# 3. Facts and the ORT CUDA check (fails loudly, with ONNX Runtime's reason).
FACTS="$OUT_DIR/facts.txt"
{
    echo "# gpu-check facts"
    echo "GPU_PY=$GPU_PY"
    echo
    echo "## wheels"
    cat "$LOGS/wheels.log" 2>/dev/null
    echo
    echo "## install"
    cat "$LOGS/install.log" 2>/dev/null
    echo
    echo "## device"
} >"$FACTS"
step facts 90 "$FACTS" "$GPU_PY" -m clients.gpu_check.facts

# 4. The GPU tests: only the files that hold a gpu mark (the other test modules import test
#    tools the image lacks: moto, cryptography, tritonclient, kubernetes-validate).
mapfile -t GPU_TESTS < <(grep -l "mark.gpu" tests/test_*.py)
PYTEST_OUT="$OUT_DIR/pytest-gpu.txt"
echo "files: ${GPU_TESTS[*]}" >"$PYTEST_OUT"
step pytest 180 "$PYTEST_OUT" "$GPU_PY" -m pytest -m gpu -q -p no:cacheprovider \
    --continue-on-collection-errors "${GPU_TESTS[@]}"

# 5. The serving benchmark on both devices (clients/bench/gpu.py).
# GPU_BENCH_ARGS adds arguments (e.g. "--rows 20000") where the full run does not fit.
# shellcheck disable=SC2086
step bench 300 "$LOGS/bench.log" "$GPU_PY" -m clients.bench.gpu --out "$OUT_DIR" \
    --devices cpu,cuda ${GPU_BENCH_ARGS:-}

# 6. Classical models on the GPU, only if hummingbird came with the wheels (optional).
if PYTHONPATH="$PYTHONPATH" "$GPU_PY" -c "import hummingbird.ml" >"$LOGS/hb-import.log" 2>&1; then
    step classical 120 "$LOGS/classical.log" "$GPU_PY" -m clients.gpu_check.classical_gpu \
        --out "$OUT_DIR/classical-gpu.md"
else
    STEPS+=("classical|not run (hummingbird not importable; optional)|0|$LOGS/hb-import.log")
fi

# 7. SUMMARY.md: what ran, how it went, the device, and the tail of each step's log.
DEVICE=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
SUMMARY="$OUT_DIR/SUMMARY.md"
{
    echo "# gpu-check summary"
    echo
    echo "- date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- device: ${DEVICE:-unknown (nvidia-smi gave nothing)}"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
    echo "- python: $GPU_PY ($("$GPU_PY" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null))"
    echo "- onnxruntime: $(grep -m1 '^onnxruntime:' "$FACTS" 2>/dev/null | cut -d' ' -f2-)"
    echo "- ORT CUDA check: $(grep -m1 -E '^(OK|FAIL) ' "$FACTS" 2>/dev/null || echo 'not reached')"
    echo "- pytest -m gpu: $(grep -E '(passed|failed|skipped|error|no tests ran)' "$PYTEST_OUT" 2>/dev/null | tail -1)"
    echo "- total: ${SECONDS}s of a ${BUDGET}s budget"
    echo
    echo "| step | result | seconds |"
    echo "|---|---|---:|"
    for entry in "${STEPS[@]}"; do
        IFS='|' read -r name status took _ <<<"$entry"
        echo "| $name | $status | $took |"
    done
    echo
    echo "Files here: facts.txt (device, versions, ORT CUDA check), pytest-gpu.txt,"
    echo "classical-gpu.md (if hummingbird was carried), and the benchmark's own files."
    for entry in "${STEPS[@]}"; do
        IFS='|' read -r name status _ log <<<"$entry"
        [[ -f $log ]] || continue
        echo
        echo "## $name: last lines of its log"
        echo
        echo '```'
        tail -n 25 "$log"
        echo '```'
    done
} >"$SUMMARY"
cat "$SUMMARY"
exit "$FAILED"
