#!/usr/bin/env bash
# One call on a lent GPU machine: the GPU checks of docs/BENCHMARKS.md in order of importance, inside a time
# budget, with every log and result file under $OUT (the device tool's output folder) or ./gpu-out.
#
#   bash bench/gpu_session.sh [BUDGET_SECONDS] [PARTS]   # default 540 s, all parts: "speed mem tests"
#
# 1. GPT-2 124M: tuneforge eager, tuneforge compiled (what torch_compile=auto gives runs of 1000+ steps), tutorial
#    Trainer, best Trainer flags (the MFU target)
# 2. BERT-base: the same four (the 4x rows/s target)
# 3. peak memory at the tutorial's tokens (GPT-2) or rows (BERT) per step, eager and compiled, against the tutorial
#    in the same call; GPT-2 with only its layers compiled (to compare the scopes); the eager defaults under the
#    profiler
# 4. the GPU test subset (engine, training, causal LM, LoRA, LR finder, optimizations; or the files in GPU_TESTS),
#    unless SKIP_TESTS is set
# PARTS picks some of them: "mem tests" runs only 3's memory rows (with their tutorial rows) and 4 (~5 minutes).
# Wheels in .whl/ (bash bench/fetch_wheels.sh: newer transformers and peft, rouge-score) are installed to /tmp/site first.
# A dry run on any machine: GPU_CHECK_ARGS=--smoke bash bench/gpu_session.sh 400
set -u
out=${OUT:-gpu-out}
mkdir -p "$out"
budget=${1:-540}
parts=${2:-speed mem tests}
has() { case " $parts " in *" $1 "*) return 0 ;; esac; return 1; }
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }

export PYTHONPATH=$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then
    for wheel in .whl/*.whl; do  # one by one: a wheel for another Python (a CPU dry run) is skipped, not fatal
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$wheel" 2>/dev/null || echo "skipped $wheel: not installable here"
    done
    export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"

run_case() {  # CASE RECIPE...: one gpu_check call, cut off when the budget is spent
    local case=$1 budget_left
    shift
    budget_left=$(left)
    if [ "$budget_left" -lt 60 ]; then
        echo "skipped $case $*: the budget is spent"
        return
    fi
    python3 bench/gpu_check.py ${GPU_CHECK_ARGS:-} --cases "$case" --recipes "$@" --budget-s "$budget_left" \
        --json "$out/$case-$1.json" --stderr-log "$out/$case.err" 2>&1 | grep -vE '^\s|it/s\]|[Ww]arn'
}

if has speed; then
    run_case gpt2 tuneforge tuneforge-compile tutorial trainer+
    run_case bert tuneforge tuneforge-compile tutorial trainer+
fi
if has mem; then
    if has speed; then  # the tutorial rows ran above
        run_case gpt2 tuneforge-mem tuneforge-mem-compile tuneforge-blocks tuneforge-profile
        run_case bert tuneforge-mem tuneforge-mem-compile
    else
        run_case gpt2 tutorial tuneforge-mem tuneforge-mem-compile
        run_case bert tutorial tuneforge-mem tuneforge-mem-compile
    fi
fi
if has tests && [ -z "${SKIP_TESTS:-}" ]; then
    budget_left=$(left)
    if [ "$budget_left" -gt 90 ]; then
        limit=$((budget_left > 240 ? 180 : budget_left - 60))
        # shellcheck disable=SC2086  # GPU_TESTS is a list of paths
        timeout "$limit" python3 -m pytest -q -p no:cacheprovider ${GPU_TESTS:-tests/test_engine.py \
            tests/test_training.py tests/test_causal_lm.py tests/test_lora.py tests/test_lr_finder.py \
            tests/test_optimizations.py} >"$out/tests.log" 2>&1
        echo "GPU tests: exit $? (124: cut off at ${limit} s)"
        grep -E "^(FAILED|ERROR)|passed|failed" "$out/tests.log" | tail -20
    fi
fi
echo "done in $(($(date +%s) - start)) s"
