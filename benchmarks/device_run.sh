#!/usr/bin/env bash
# Every benchmark row in one run on the lent H200, results under $OUT, in under 8 minutes.
#
#   here, first:   bash benchmarks/fetch_wheels.sh        (fills the git-ignored benchmarks/wheels/)
#   device call:   command "bash benchmarks/device_run.sh", carry ["benchmarks/wheels"], timeout_s 600
#   dry run here:  bash benchmarks/device_run.sh --cpu    (the tiny models on this CPU, .venv's python)
#
# On the device: installs the carried wheels (diffusers, websockets, importlib_metadata) and the project
# itself without dependencies into /tmp/cb-site (the image has torch, transformers, peft, opencv, ...),
# builds full-size random-weight SD1.5 / SDXL (twice each: stock and ours), then runs, most important first,
# each step under its own time limit so one slow step cannot eat the rest:
#   1. live rows a, b, t, s (SD1.5 512, depth (+canny), 4 and 1 steps, stream batch, TAESD) + whole-server rows
#   2. quality row c (SDXL 1024 + depth, CFG, 12 steps, full VAE) + its server row
#   3. cpu-side host steps, and the server-overhead row on the tiny model on the CPU
# Writes $OUT/RESULTS.md (sections to append to benchmarks/RESULTS.md), $OUT/results.jsonl, $OUT/log.txt,
# $OUT/env.txt. Nothing here changes the GPU's settings.
set -u
cd "$(dirname "$0")/.."
MODE=gpu
[[ "${1:-}" == "--cpu" ]] && MODE=cpu
OUT=${OUT:-/tmp/controlbridge-device-out}
mkdir -p "$OUT"
START=$SECONDS
BUDGET=${BUDGET_S:-450}          # the whole script; the device command limit is 600 s
export PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error HF_HUB_OFFLINE=1
LOG="$OUT/log.txt"

if [[ $MODE == gpu ]]; then
    PY=python3
    SITE=/tmp/cb-site
    ls benchmarks/wheels/*.whl >/dev/null 2>&1 || { echo "no benchmarks/wheels: run benchmarks/fetch_wheels.sh here and carry it"; exit 2; }
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" benchmarks/wheels/*.whl \
        || { echo "wheel install failed"; exit 2; }
    # The project itself, without dependencies; its source tree on the path if the build backend is missing.
    if ! $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE/project" . \
            >>"$LOG" 2>&1; then
        echo "project install failed (see log.txt); using the source tree" | tee -a "$LOG"
        mkdir -p "$SITE/project"
        export PYTHONPATH="$PWD/server:$PWD/shared"
    fi
    export PYTHONPATH="$SITE/project:$SITE:${PYTHONPATH:-}"
    ITERS=30; ITERS_C=10; WARM=3; TINY=""
else
    PY=${PYTHON:-.venv/bin/python}
    ITERS=2; ITERS_C=2; WARM=1; TINY="--tiny"
fi

{
    date -u
    nvidia-smi 2>/dev/null || echo "no nvidia-smi (CPU dry run)"
    $PY -c "import torch, diffusers, transformers, websockets, controlbridge; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), '| diffusers', diffusers.__version__, '| transformers', transformers.__version__, '| websockets', websockets.__version__, '| controlbridge from', controlbridge.__file__)"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# step NAME SHARE_OF_WHAT_IS_LEFT ARGS...: one speed.py run, killed when its share of the time left is used
step() {
    local name=$1 share=$2; shift 2
    local left=$((BUDGET - (SECONDS - START)))
    local limit=$((left * share / 100))
    if (( limit < 20 )); then echo "SKIPPED $name: ${left}s left" | tee -a "$OUT/RESULTS.md"; return; fi
    echo "=== $name (limit ${limit}s) ===" | tee -a "$LOG"
    timeout -k 10 "$limit" $PY benchmarks/speed.py --out "$OUT/RESULTS.md" --json "$OUT/results.jsonl" \
        --group-budget-s $((limit / 3)) "$@" >>"$LOG" 2>&1
    local rc=$?
    (( rc != 0 )) && echo "FAILED $name: exit $rc (124 = its time limit; see log.txt)" | tee -a "$OUT/RESULTS.md"
    tail -n 25 "$LOG"
}

DEVICE_NOTE="device_run.sh $MODE"
step "live rows a, b, t, s + server" 55 $TINY --rows a,b,t,s,server-a,server-b,server-t,server-s --iters $ITERS --warmup $WARM --note "$DEVICE_NOTE"
step "quality row c + server" 75 $TINY --rows c,server-c --iters $ITERS_C --warmup $((WARM > 1 ? 2 : 1)) --note "$DEVICE_NOTE"
step "cpu-side + server overhead (tiny model, CPU)" 100 --device cpu --rows cpu-side,overhead --iters 20 --warmup 2 --note "$DEVICE_NOTE"

echo "done in $((SECONDS - START)) s" | tee -a "$LOG"
ls -la "$OUT"
