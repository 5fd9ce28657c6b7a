#!/usr/bin/env bash
# The commands that trained the shipped digits model (src/ddmkit/models/weights/digits): a DDPM on
# scikit-learn's 1,797 handwritten digits upsampled to 32x32 (1 channel). Resumable: run it again.
#
# Stage 1 (CPU, one thread): 2,000 steps x 32 from scratch, seed 0 (training_config.json, train_log.csv).
# Stage 2 (GPU, STAGE=2; an H200 took 200 s): 4,919 steps x 128, seed 1, warm start from stage 1
#   (training_config_gpu_stage.json, train_log_gpu_stage.csv).
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=(--data digits --channels 32,64,64 --attention 0,0,1 --layers-per-block 1 --lr 3e-4 --ema-decay 0.999)
if [ "${STAGE:-1}" = 1 ]; then
  .venv/bin/ddmkit train "${ARCH[@]}" --batch-size 32 --steps "${STEPS:-2000}" --seed 0 --checkpoint-every 250 \
    --threads "${THREADS:-1}" --device cpu --out "${OUT:-runs/default-digits}"
else
  .venv/bin/ddmkit train "${ARCH[@]}" --batch-size 128 --steps "${STEPS:-4919}" --seed 1 --checkpoint-every 2000 \
    --device "${DEVICE:-auto}" --init-from "${INIT:-runs/default-digits/model}" --out "${OUT:-runs/default-digits-gpu}"
fi
