#!/usr/bin/env bash
# What each training change is worth on CamVid, one at a time, on the same footing: a short
# phase (8 epochs × 45 iterations, batch 8, 288-px crops, scale 0.5–1.5, AdamW 6e-4, poly)
# fine-tuning the phase-2 weights of the from-scratch DeepLab v3+ MobileNet v2 recipe.
#   base    median-frequency class weights, cross-entropy (the recipe's loss)
#   enet    ENet's class weights 1/ln(1.02 + p)
#   ohem    no class weights, bootstrapped cross-entropy on the hardest 25 % of pixels
#   ema     base + a moving average of the weights (decay 0.99 per step), validated and saved
#   scale   base with a wider random scale range, 0.25–2.0
# Each run's last (or EMA) weights are validated once, at the end, on the 101 val frames.
# Writes runs/ablations/<run>/ and runs/ablations/results.jsonl.
#   usage: experiments/camvid_ablations.sh PHASE2_WEIGHTS [DATA=../shared/data/camvid]
set -euo pipefail
START=${1:?phase-2 weights, e.g. weights/camvid_deeplabv3plus_mobilenet_v2.pt as shipped at stop 4}
DATA=${2:-../shared/data/camvid}
ATROUS=${ATROUS:-.venv/bin/atrous}
OUT=runs/ablations
mkdir -p "$OUT"
SCHEDULE=(--dataset camvid --data "$DATA" --model deeplabv3plus_mobilenet_v2 --pretrained "$START"
          --epochs 8 --batch-size 8 --crop-size 288 --set "scale_range=[0.5, 1.5]"
          --optimizer adamw --lr 0.0006 --weight-decay 0.01 --warmup-iters 20
          --class-weights median-freq --workers 1 --val-every 8 --no-progress --overwrite)

train() {  # run, extra train options...
  local run=$1; shift
  local start=$SECONDS
  "$ATROUS" train "${SCHEDULE[@]}" --out "$OUT/$run" "$@" > "$OUT/$run.log" 2>&1
  python3 - "$OUT/$run/log.csv" "$run" $((SECONDS - start)) >> "$OUT/results.jsonl" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(json.dumps({"run": sys.argv[2], "val_miou": float(rows[-1]["val_miou"]), "train_seconds": int(sys.argv[3])}))
PY
}

train base
train enet --class-weights enet
train ohem --class-weights none --loss bootstrap --bootstrap-ratio 0.25
train ema --ema 0.99
train scale --set "scale_range=[0.25, 2.0]"
