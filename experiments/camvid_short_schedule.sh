#!/usr/bin/env bash
# The DeepLab story on CamVid: v1 LargeFOV (± CRF, ± MSc), v2 (± multi-scale inputs), v3 and v3+ trained from scratch
# on one short schedule (4 epochs × 45 iterations, batch 8, 160-px crops, AdamW 3e-3,
# poly, median-frequency weights), each evaluated on the 101 val frames at its training
# output stride and at the other one; v3+ also with hard-pixel bootstrapping instead of
# class weights. Short runs: they rank the designs early in training, they are not
# converged numbers. Writes runs/short/<run>/ and runs/short/results.jsonl.
#   usage: experiments/camvid_short_schedule.sh [DATA=../shared/data/camvid]
set -euo pipefail
DATA=${1:-../shared/data/camvid}
ATROUS=${ATROUS:-.venv/bin/atrous}
OUT=runs/short
mkdir -p "$OUT"
SCHEDULE=(--dataset camvid --data "$DATA" --epochs 4 --batch-size 8 --crop-size 160
          --optimizer adamw --lr 0.003 --weight-decay 0.01 --warmup-iters 20
          --class-weights median-freq --workers 1 --val-every 4 --no-progress --overwrite)

evaluate() {  # run, extra eval options...
  local run=$1; shift
  local extra="$*"
  "$ATROUS" eval --checkpoint "$OUT/$run/last.pt" --data "$DATA" --workers 1 --no-progress --json "$@" \
    | python3 -c "import json,sys; r=json.load(sys.stdin); r['run']='$run'; r['options']='$extra'; print(json.dumps(r))" \
    >> "$OUT/results.jsonl"
}

train() {  # run, model, extra train options...
  local run=$1 model=$2; shift 2
  local start=$SECONDS
  "$ATROUS" train "${SCHEDULE[@]}" --model "$model" --out "$OUT/$run" "$@" > "$OUT/$run.log" 2>&1
  echo "{\"run\": \"$run\", \"train_seconds\": $((SECONDS - start))}" >> "$OUT/results.jsonl"
}

train v3plus_mnv2 deeplabv3plus_mobilenet_v2
evaluate v3plus_mnv2
evaluate v3plus_mnv2 --output-stride 8
train v3plus_mnv2_bootstrap deeplabv3plus_mobilenet_v2 --class-weights none --loss bootstrap --bootstrap-ratio 0.25
evaluate v3plus_mnv2_bootstrap
train v3_mnv2 deeplabv3_mobilenet_v2
evaluate v3_mnv2
evaluate v3_mnv2 --output-stride 8
train v2_mnv2 deeplabv2_mobilenet_v2
evaluate v2_mnv2
# v2's multi-scale inputs (scales 1, 0.75, 0.5, max fusion, loss on every scale): paper +1-2 points.
train v2_mnv2_msc deeplabv2_mobilenet_v2 --set 'model_options.input_scales=[1.0,0.75,0.5]'
evaluate v2_mnv2_msc
train v1_vgg16_largefov deeplabv1_vgg16_largefov
evaluate v1_vgg16_largefov
# DeepLab's cross-validation of the CRF on the first 20 val frames, then all 101 with it.
"$ATROUS" crf-tune --checkpoint "$OUT/v1_vgg16_largefov/last.pt" --data "$DATA" --images 20 --samples 16 \
  --out "$OUT/v1_crf.json" > "$OUT/v1_crf_tune.log" 2>&1
evaluate v1_vgg16_largefov --crf-params "$OUT/v1_crf.json"
evaluate v1_vgg16_largefov --output-stride 16
# v1's multi-scale features (DeepLab-MSc-LargeFOV): paper about +1.5 points.
train v1_vgg16_largefov_msc deeplabv1_vgg16_largefov --set model_options.msc=true
evaluate v1_vgg16_largefov_msc
