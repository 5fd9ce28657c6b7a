#!/usr/bin/env bash
# Fits the BoundaryDiffusion boundaries shipped for the default faces model, one per attribute, into
# src/ddmkit/models/weights/boundaries/<attribute>.safetensors (+ .json metadata), so that
# `ddmkit edit --boundary smiling` finds them by name.
#
# 1. The mixing step: `ddmkit mixing-step` on 200 balanced smiling faces over t = 100..900 (criterion
#    of spec 7.6); its curve goes to benchmarks/results/mixing_step_default/. Set T_M to skip it.
# 2. Each attribute: 200 balanced synthetic faces (seed base 50,000,000, far from the model's training
#    seeds), DDIM-inverted to t_m with N_inv = 40, SVMs on z and h with 100 train / 100 test images;
#    then the editing distance is calibrated on the 100 held-out faces (`--calibrate`: the smallest of
#    0.25..2 x the default distance whose edits flip >= 95% of them, by the faces classifier).
#
# One thread; about 20 min for the search and 4-5 min per attribute on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
DDMKIT=.venv/bin/ddmkit
OUT=src/ddmkit/models/weights/boundaries
SEARCH=benchmarks/results/mixing_step_default
if [ -z "${T_M:-}" ]; then
  if [ ! -f "$SEARCH/mixing_step.json" ]; then
    $DDMKIT mixing-step --model default --faces 200 --attribute smiling --n-inv 40 --quiet --out "$SEARCH"
  fi
  T_M=$(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))['t_m'])" "$SEARCH/mixing_step.json")
fi
echo "fitting the default model's boundaries at t_m = $T_M"
mkdir -p "$OUT"
for a in smiling eyeglasses dark_hair round_face open_eyes warm_background; do
  $DDMKIT boundary fit --model default --faces 200 --attribute "$a" --t-m "$T_M" --n-inv 40 --test 100 \
    --seed 0 --calibrate --overwrite --quiet --out "$OUT/$a.safetensors"
done
