#!/usr/bin/env bash
# The command that trained the shipped default faces model (src/ddmkit/models/weights/faces).
# Resumable: run it again after an interruption. On a 2-core CPU, one thread, it takes about 2 hours.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/default-faces}
.venv/bin/ddmkit train --data faces --channels 32,64,128 --attention 0,0,1 --layers-per-block 1 \
  --batch-size 32 --lr 3e-4 --ema-decay 0.999 --steps "${STEPS:-7000}" --seed 0 --checkpoint-every 250 --threads "${THREADS:-1}" --out "$OUT"
