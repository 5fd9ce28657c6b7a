#!/usr/bin/env bash
# The commands that trained the shipped default faces model (src/ddmkit/models/weights/faces).
# Resumable: run again after an interruption.
#
# Stage 1 (CPU, one thread, about 2 hours on a 2-core machine): 4,000 steps x 32 from scratch, seed 0
#   -> runs/default-faces/model (training_config.json, train_log.csv in the shipped folder).
# Stage 2 (GPU, STAGE=2; an H200 took 115 s): 848 steps x 256, seed 1, warm start from stage 1
#   -> runs/default-faces-gpu/model (training_config_gpu_stage.json, train_log_gpu_stage.csv).
# Stage 2 also runs on a CPU (`--device cpu`), at about 1/8 of stage 1's speed per step.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=(--data faces --channels 32,64,128 --attention 0,0,1 --layers-per-block 1 --lr 3e-4 --ema-decay 0.999)
if [ "${STAGE:-1}" = 1 ]; then
  .venv/bin/ddmkit train "${ARCH[@]}" --batch-size 32 --steps "${STEPS:-4000}" --seed 0 --checkpoint-every 250 \
    --threads "${THREADS:-1}" --device cpu --out "${OUT:-runs/default-faces}"
else
  .venv/bin/ddmkit train "${ARCH[@]}" --batch-size 256 --steps "${STEPS:-848}" --seed 1 --checkpoint-every 2000 \
    --device "${DEVICE:-auto}" --workers "${WORKERS:-12}" --init-from "${INIT:-runs/default-faces/model}" \
    --out "${OUT:-runs/default-faces-gpu}"
fi
