#!/usr/bin/env bash
# The commands that trained the shipped VE digits model `--model digits-ve` (src/ddmkit/models/weights/digits_ve)
# and its noise-level classifier (src/ddmkit/models/weights/digits_ve_noise_classifier.*), on a CPU.
# One command, resumable: run it again after an interruption (each stage resumes or is skipped when done).
#
# Model: scikit-learn's 1,797 digits at 32x32 grey in [0, 1] (the DMCMC paper's VE setting), a diffusers
# UNet2DModel trained with the EDM objective (Karras et al. 2022: preconditioning, ln sigma ~ N(-1.2, 1.2^2),
# sigma_data 0.5) over the paper's CIFAR-10 range sigma in [0.01, 50]; exported with an EDMEulerScheduler
# config (diffusers samples it with its own scheduler) and ddmkit_model.json (data range [0, 1]).
# Stage 1 trains into runs/digits-ve (one thread), then installs the EMA model and its log into the package;
# stage 2 trains the noise-level classifier for the installed model (`--model digits-ve`).
set -euo pipefail
cd "$(dirname "$0")/.."
DDMKIT=${DDMKIT:-.venv/bin/ddmkit}
RUN=${OUT:-runs/digits-ve}
DEST=src/ddmkit/models/weights/digits_ve
CLF=src/ddmkit/models/weights/digits_ve_noise_classifier
THREADS=${THREADS:-1}

$DDMKIT train --data digits --objective edm --sigma-min 0.01 --sigma-max 50 --sigma-data 0.5 \
  --channels 16,32,64 --attention 0,0,1 --layers-per-block 1 --lr 5e-4 --ema-decay 0.999 \
  --batch-size 64 --steps "${STEPS:-6000}" --seed 0 --checkpoint-every 250 \
  --threads "$THREADS" --device cpu --quiet --out "$RUN"

if [ ! -f "$DEST/unet/diffusion_pytorch_model.safetensors" ] || [ "$RUN/model/unet/diffusion_pytorch_model.safetensors" -nt "$DEST/unet/diffusion_pytorch_model.safetensors" ]; then
  rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp"
  cp -r "$RUN/model/." "$DEST.tmp/"
  cp "$RUN/train_log.csv" "$DEST.tmp/train_log.csv"
  rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
  rm -f "$CLF.json" "$CLF.safetensors"  # a new model needs a new classifier
fi

if [ ! -f "$CLF.json" ]; then
  $DDMKIT noise-classifier train --model digits-ve --out "$CLF" --steps 2000 --checkpoint-every 100 \
    --threads "$THREADS" --quiet
fi
