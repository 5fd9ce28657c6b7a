#!/usr/bin/env bash
# One prepared GPU job (a single NVIDIA H100/H200, 16 CPU cores): continue training the two shipped
# models, then run the benchmarks that need a GPU, all in about 9 minutes of wall time.
#
#   OUT=/some/dir bash scripts/gpu_session.sh        # results land in $OUT as tarballs
#
# 1. Training (warm start from the shipped weights, batch 256 / 128, TF32, faces rendered by
#    12 worker processes): `ddmkit train ... --init-from src/ddmkit/models/weights/<m> --max-seconds S`.
# 2. The new weights replace the shipped ones in this checkout, then in parallel:
#    - benchmarks/default_model.py --num 2000 (faces and digits quality ceiling);
#    - scripts/fit_default_boundaries.sh (mixing-step search + six boundaries), then benchmarks/editing.py;
#    - benchmarks/dmcmc_faces.py: one process per integrator, the diffusers peers, the cost measurement.
# Every stage has its own time limit; what finished is packed into $OUT at the end.
# Knobs (seconds): TRAIN_FACES, TRAIN_DIGITS, END (the script's own end), DLG_DEADLINE.
set -u
START=$SECONDS
OUT=${OUT:-/tmp/ddmkit-gpu-out}
mkdir -p "$OUT" runs/logs
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 DDMKIT_CACHE_DIR=$PWD/runs/cache
TRAIN_FACES=${TRAIN_FACES:-240}
TRAIN_DIGITS=${TRAIN_DIGITS:-200}
END=${END:-505}
DLG_DEADLINE=${DLG_DEADLINE:-190}
DEVICE=${DEVICE:-cuda}
FACES_WORKERS=${FACES_WORKERS:-12}
NUM_DLG=${NUM_DLG:-1000}
TUNE_NUM=${TUNE_NUM:-300}
NUM_DEFAULT=${NUM_DEFAULT:-2000}
NUM_EDIT=${NUM_EDIT:-200}
log() { echo "[$((SECONDS - START))s] $*"; }
left() { echo $((END - (SECONDS - START))); }

# --- environment: the image's python3 + torch; diffusers (and importlib_metadata) carried as wheels
if [ -d .whl ] && ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ ! -x .venv/bin/ddmkit ]; then  # the scripts call .venv/bin/{python,ddmkit}
  mkdir -p .venv/bin
  printf '#!/bin/sh\nexec python3 "$@"\n' > .venv/bin/python
  chmod +x .venv/bin/python
  printf '#!/bin/sh\nexec python3 -m ddmkit "$@"\n' > .venv/bin/ddmkit
  chmod +x .venv/bin/ddmkit
fi
PY=.venv/bin/python
DDMKIT=.venv/bin/ddmkit
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
$PY -c "import torch, diffusers, sklearn, scipy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__)"

pack() {  # pack NAME PATHS... -> $OUT/NAME.tar.gz (missing paths skipped)
  local name=$1; shift
  local have=()
  for p in "$@"; do [ -e "$p" ] && have+=("$p"); done
  [ ${#have[@]} -gt 0 ] && tar czf "$OUT/$name.tar.gz" "${have[@]}"
}

# --- 1. training
W=src/ddmkit/models/weights
log "training: faces ${TRAIN_FACES}s, digits ${TRAIN_DIGITS}s"
$DDMKIT train --data faces --channels 32,64,128 --attention 0,0,1 --layers-per-block 1 --batch-size 256 --lr 3e-4 \
  --ema-decay 0.999 --steps 100000 --seed 1 --checkpoint-every 2000 --device "$DEVICE" --workers "$FACES_WORKERS" \
  --init-from $W/faces --max-seconds "$TRAIN_FACES" --quiet --out runs/gpu-faces > runs/logs/train_faces.log 2>&1 &
P_FACES=$!
$DDMKIT train --data digits --channels 32,64,64 --attention 0,0,1 --layers-per-block 1 --batch-size 128 --lr 3e-4 \
  --ema-decay 0.999 --steps 100000 --seed 1 --checkpoint-every 2000 --device "$DEVICE" \
  --init-from $W/digits --max-seconds "$TRAIN_DIGITS" --quiet --out runs/gpu-digits > runs/logs/train_digits.log 2>&1 &
P_DIGITS=$!
wait $P_FACES; RC_FACES=$?
wait $P_DIGITS; RC_DIGITS=$?
log "training done: faces rc $RC_FACES, digits rc $RC_DIGITS"
tail -n 3 runs/gpu-faces/train_log.csv runs/gpu-digits/train_log.csv 2>/dev/null
for m in faces digits; do
  if [ -f runs/gpu-$m/model/unet/diffusion_pytorch_model.safetensors ]; then
    cp runs/gpu-$m/model/unet/* $W/$m/unet/
    cp runs/gpu-$m/model/training_config.json $W/$m/training_config_gpu_stage.json
    pack "model_$m" runs/gpu-$m/model runs/gpu-$m/train_log.csv runs/gpu-$m/training_config.json
  fi
done

# --- 2. benchmarks on the new weights, in parallel
rm -rf benchmarks/results/mixing_step_default
log "benchmarks start; $(left)s left"
timeout "$(left)" $PY benchmarks/default_model.py --num "$NUM_DEFAULT" --batch-size 500 --device "$DEVICE" \
  > runs/logs/default_model.log 2>&1 &
( timeout "$(left)" bash scripts/fit_default_boundaries.sh && \
  timeout "$(left)" $PY benchmarks/editing.py --device "$DEVICE" --num "$NUM_EDIT" --batch-size 200 ) \
  > runs/logs/editing.log 2>&1 &
for i in kar1 kar2 rd em pf rk45 ddim; do
  timeout "$(left)" $PY benchmarks/dmcmc_faces.py --device "$DEVICE" --integrators $i --part $i --num "$NUM_DLG" \
    --tune-num "$TUNE_NUM" --tune-chains "$TUNE_NUM" --chains 250 --batch 500 --etas "${ETAS:-0.1,0.4,0.8}" --shares "${SHARES:-0.2,0.4}" \
    --budgets 5,10,20,35,50 --deadline "$DLG_DEADLINE" > runs/logs/dlg_$i.log 2>&1 &
done
timeout "$(left)" $PY benchmarks/dmcmc_faces.py --device "$DEVICE" --peers --part peers --num "$NUM_DLG" --batch 500 \
  > runs/logs/dlg_peers.log 2>&1 &
timeout "$(left)" $PY benchmarks/dmcmc_faces.py --device "$DEVICE" --costs > runs/logs/dlg_costs.log 2>&1 &
if [ -f benchmarks/dtype_quality.py ]; then
  timeout "$(left)" $PY benchmarks/dtype_quality.py --device "$DEVICE" --num "$NUM_DEFAULT" --batch-size 1000 \
    > runs/logs/dtype_quality.log 2>&1 &
fi
wait
log "benchmarks done"
# the GPU is idle now: time the CIFAR-10 NCSN++ for the 8-GPU FID-sweep plan (replaces the assumed rate)
[ "${FID_PLAN:-1}" = 1 ] && timeout 20 $PY benchmarks/fid_sweep_plan.py --measure --device "$DEVICE" > runs/logs/fid_sweep_plan.log 2>&1
$PY benchmarks/dmcmc_faces.py --merge > runs/logs/dlg_merge.log 2>&1
pack results benchmarks/results $W/boundaries $W/faces/training_config_gpu_stage.json $W/digits/training_config_gpu_stage.json
pack logs runs/logs
ls -la "$OUT"
log "end"
