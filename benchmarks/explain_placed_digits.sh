#!/usr/bin/env bash
# Grad-CAM measured where the object is known (issue #13): baseline (linear, CE) vs
# De-confound-TDE on placed digits, for each seed. Focus area and energy on object per shot group.
# Usage: bash benchmarks/explain_placed_digits.sh [SEED ...]   (default: 0 1 2; ~3 min a run)
set -euo pipefail
WORK=runs/explain_placed_digits
OUT=benchmarks/results/explain/placed_digits
CONFIG=benchmarks/configs/placed_digits.yaml
CAUSAL="{num_heads: 2, tau: 16.0, gamma: 0.03125, momentum: 0.9, alpha: 1.0}"
[ -f "$WORK/data/boxes.json" ] || longtail synthetic placed_digits --out "$WORK/data"
SEEDS=("$@"); [ ${#SEEDS[@]} -gt 0 ] || SEEDS=(0 1 2)
for seed1 in "${SEEDS[@]}"; do
    ce="$WORK/ce/seed$seed1"; tde="$WORK/tde/seed$seed1"
    [ -f "$ce/eval/test_metrics.json" ] || longtail train "$CONFIG" --set train.seed="$seed1" \
        --out "$ce" 2>/dev/null
    [ -f "$tde/eval/test_metrics.json" ] || longtail train "$CONFIG" --set train.seed="$seed1" \
        --set name=placed_digits_tde --set model.head=causal_norm \
        --set "model.head_args=$CAUSAL" --out "$tde" 2>/dev/null
    [ -f "$tde/sweeps/alpha.json" ] || longtail sweep "$tde" --alpha 0:2:0.1
    # The TDE run is explained at the α its sweep chose on validation.
    alpha=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['selected'])" \
        "$tde/sweeps/alpha.json")
    longtail explain "$ce" "$tde" --out "$OUT/seed$seed1" --boxes "$WORK/data/boxes.json" \
        --per-group 3 --measure-per-group 30 --alpha "$alpha" \
        --names "Baseline (CE),De-confound-TDE (α=$alpha on val)"
done
