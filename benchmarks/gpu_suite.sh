#!/usr/bin/env bash
# The GPU suite of issue 31, for the day a GPU is lent: one JSON line per figure, each
# {"figure": NAME, ...the benchmark's last line} or {"figure": NAME, "error": ...}. Every figure has
# its own time limit, so the whole suite stays under 8 minutes on one H100.
#
#     bash benchmarks/gpu_suite.sh [DEVICE]      # DEVICE for the planner: h100 (default), h200, ...
set -u
cd "$(dirname "$0")"
PY=${PYTHON:-../.venv/bin/python}
DEVICE=${1:-h100}

figure() {   # figure NAME SECONDS COMMAND...: the command's last stdout line, tagged with NAME
  local name=$1 limit=$2; shift 2
  local last
  last=$(timeout "$limit" "$@" 2>/dev/null | tail -n 1)
  if [[ "$last" == \{* ]]; then
    echo "{\"figure\": \"$name\", ${last:1}"
  else
    echo "{\"figure\": \"$name\", \"error\": \"no result within ${limit}s (exit or timeout)\"}"
  fi
}

figure train_step_gemma3_270m_bf16 90 $PY plan_vs_measured.py --model gemma3-270m --device "$DEVICE" --dtype bfloat16 --batch-size 32
figure train_step_smollm2_135m_bf16 60 $PY plan_vs_measured.py --model smollm2-135m --device "$DEVICE" --dtype bfloat16 --batch-size 32
for k in 4 16 64; do
  figure "fused_ratio_k$k" 60 $PY campaign_throughput.py --k "$k" --dtype bfloat16 --rows-per-call all
done
figure serve_5_members_32_clients 120 $PY serve_load.py --clients 32 --rounds 1
figure plan_llama_3_1_8b 30 $PY -m softprompt.cli model plan --model ../examples/models/llama-3.1-8b --device "$DEVICE" --batch-size 8 --max-length 128
