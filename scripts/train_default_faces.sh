#!/usr/bin/env bash
# The commands that trained the shipped default faces model (src/ddmkit/models/weights/faces).
# Resumable: run again after an interruption.
#
# Stage 1 (CPU, one thread, about 2 hours on a 2-core machine): 4,000 steps x 32 from scratch, seed 0
#   -> runs/default-faces/model (training_config.json, train_log.csv in the shipped folder).
# Stage 2 (GPU, STAGE=2; an H200 took 115 s): 848 steps x 256, seed 1, warm start from stage 1
#   -> runs/default-faces-gpu/model (training_config_gpu_stage.json, train_log_gpu_stage.csv).
# Stage 3 (GPU, STAGE=3; an H200 took 210 s): 794 steps x 1024, lr 6e-4, seed 2, warm start from stage 2
#   -> runs/default-faces-gpu3/model (training_config_gpu_stage3.json, train_log_gpu_stage3.csv). The shipped
#   weights are stage 3's. (`scripts/gpu_session.sh` ran it with --max-seconds 210, which stopped at step 794.)
# Stages 2 and 3 also run on a CPU (`--device cpu`), far slower per step.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=(--data faces --channels 32,64,128 --attention 0,0,1 --layers-per-block 1 --lr 3e-4 --ema-decay 0.999)
if [ "${STAGE:-1}" = 1 ]; then
  .venv/bin/ddmkit train "${ARCH[@]}" --batch-size 32 --steps "${STEPS:-4000}" --seed 0 --checkpoint-every 250 \
    --threads "${THREADS:-1}" --device cpu --out "${OUT:-runs/default-faces}"
elif [ "${STAGE}" = 2 ]; then
  .venv/bin/ddmkit train "${ARCH[@]}" --batch-size 256 --steps "${STEPS:-848}" --seed 1 --checkpoint-every 2000 \
    --device "${DEVICE:-auto}" --workers "${WORKERS:-12}" --init-from "${INIT:-runs/default-faces/model}" \
    --out "${OUT:-runs/default-faces-gpu}"
else
  .venv/bin/ddmkit train "${ARCH[@]}" --batch-size 1024 --lr 6e-4 --steps "${STEPS:-794}" --seed 2 --checkpoint-every 100000 \
    --device "${DEVICE:-auto}" --workers "${WORKERS:-12}" --init-from "${INIT:-runs/default-faces-gpu/model}" \
    --out "${OUT:-runs/default-faces-gpu3}"
fi
