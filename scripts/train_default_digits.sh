#!/usr/bin/env bash
# The command that trained the shipped digits model (src/ddmkit/models/weights/digits): a DDPM on
# scikit-learn's 1,797 handwritten digits upsampled to 32x32 (1 channel). Resumable: run it again.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/default-digits}
.venv/bin/ddmkit train --data digits --channels 32,64,64 --attention 0,0,1 --layers-per-block 1 \
  --batch-size 32 --lr 3e-4 --ema-decay 0.999 --steps "${STEPS:-4000}" --seed 0 --checkpoint-every 250 --threads "${THREADS:-1}" --out "$OUT"
