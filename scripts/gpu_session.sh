#!/usr/bin/env bash
# One prepared GPU job (a single NVIDIA H100/H200, 16 CPU cores): clean timings, then continue training
# the shipped faces model (and, with TRAIN_DIGITS > 0, the digits model), then rerun every faces
# benchmark on the new weights, all in about 9 minutes of wall time.
#
#   OUT=/some/dir bash scripts/gpu_session.sh        # results land in $OUT as tarballs
#
# 0. Timings with the GPU to one process (TIMING=1): classifier vs UNet cost, DLG vs plain wall-clock.
# 1. Training (warm start from the shipped weights, faces at batch FACES_BATCH with FACES_LR, TF32,
#    rendered by 12 worker processes): `ddmkit train ... --init-from src/ddmkit/models/weights/<m> --max-seconds S`.
# 2. The new weights replace the shipped ones in this checkout, then in parallel:
#    - benchmarks/default_model.py --num 2000 (faces and digits quality ceiling);
#    - `ddmkit mixing-step` (the curve), the six boundaries at T_M (one process each, --calibrate), then
#      benchmarks/editing.py;
#    - benchmarks/dmcmc_faces.py: per integrator one process for the plain rows and one for DLG; the peers.
# Every stage has its own time limit; what finished is packed into $OUT at the end.
# Knobs: TRAIN_FACES, TRAIN_DIGITS, END (seconds; END is the script's own end), FACES_BATCH, FACES_LR,
# FACES_SEED, TIMING, T_M, ETAS, SHARES, NUM_* (sample counts), DTYPE=1 (rerun dtype_quality).
set -u
START=$SECONDS
OUT=${OUT:-/tmp/ddmkit-gpu-out}
mkdir -p "$OUT" runs/logs
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 DDMKIT_CACHE_DIR=$PWD/runs/cache
TRAIN_FACES=${TRAIN_FACES:-225}
TRAIN_DIGITS=${TRAIN_DIGITS:-0}
FACES_BATCH=${FACES_BATCH:-1024}
FACES_LR=${FACES_LR:-6e-4}
FACES_SEED=${FACES_SEED:-2}
TIMING=${TIMING:-1}
T_M=${T_M:-100}
END=${END:-555}
DEVICE=${DEVICE:-cuda}
FACES_WORKERS=${FACES_WORKERS:-12}
NUM_DLG=${NUM_DLG:-1000}
TUNE_NUM=${TUNE_NUM:-300}
NUM_DEFAULT=${NUM_DEFAULT:-2000}
NUM_EDIT=${NUM_EDIT:-200}
log() { echo "[$((SECONDS - START))s] $*"; }
left() { local l=$((END - (SECONDS - START))); [ "$l" -lt 1 ] && l=1; echo "$l"; }  # never 0: `timeout 0` means no limit

# --- environment: the image's python3 + torch; diffusers (and importlib_metadata) carried as wheels in .whl
. scripts/gpu_env.sh || exit 2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null

pack() {  # pack NAME PATHS... -> $OUT/NAME.tar.gz (missing paths skipped)
  local name=$1; shift
  local have=()
  for p in "$@"; do [ -e "$p" ] && have+=("$p"); done
  [ ${#have[@]} -gt 0 ] && tar czf "$OUT/$name.tar.gz" --exclude=cache "${have[@]}"
}

# --- 0. timings, the GPU to one process each
if [ "$TIMING" = 1 ]; then
  log "timings"
  timeout 30 $PY benchmarks/dmcmc_faces.py --device "$DEVICE" --costs --part gpu > runs/logs/dlg_costs.log 2>&1
  timeout 45 $PY benchmarks/dmcmc_faces.py --device "$DEVICE" --walltime --chains 250 --part gpu > runs/logs/dlg_walltime.log 2>&1
  pack timings benchmarks/results/dmcmc_faces_costs.gpu.json benchmarks/results/dmcmc_faces_walltime.gpu.json runs/logs
fi

# --- 1. training
W=src/ddmkit/models/weights
log "training: faces ${TRAIN_FACES}s (batch $FACES_BATCH, lr $FACES_LR), digits ${TRAIN_DIGITS}s"
$DDMKIT train --data faces --channels 32,64,128 --attention 0,0,1 --layers-per-block 1 --batch-size "$FACES_BATCH" \
  --lr "$FACES_LR" --ema-decay 0.999 --steps 100000 --seed "$FACES_SEED" --checkpoint-every 100000 --device "$DEVICE" \
  --workers "$FACES_WORKERS" --init-from $W/faces --max-seconds "$TRAIN_FACES" --quiet --out runs/gpu-faces \
  > runs/logs/train_faces.log 2>&1 &
P_FACES=$!
if [ "$TRAIN_DIGITS" -gt 0 ]; then
  $DDMKIT train --data digits --channels 32,64,64 --attention 0,0,1 --layers-per-block 1 --batch-size 128 --lr 3e-4 \
    --ema-decay 0.999 --steps 100000 --seed 1 --checkpoint-every 2000 --device "$DEVICE" \
    --init-from $W/digits --max-seconds "$TRAIN_DIGITS" --quiet --out runs/gpu-digits > runs/logs/train_digits.log 2>&1
fi
wait $P_FACES; RC_FACES=$?
log "training done: faces rc $RC_FACES"
tail -n 3 runs/gpu-faces/train_log.csv runs/gpu-digits/train_log.csv 2>/dev/null
for m in faces digits; do
  if [ -f runs/gpu-$m/model/unet/diffusion_pytorch_model.safetensors ]; then
    cp runs/gpu-$m/model/unet/* $W/$m/unet/
    pack "model_$m" runs/gpu-$m/model runs/gpu-$m/train_log.csv runs/gpu-$m/training_config.json
  fi
done

# --- 2. benchmarks on the new weights, in parallel (old-model tables removed so that nothing stale is merged)
R=benchmarks/results
rm -rf $R/mixing_step_default $R/dmcmc_faces.json $R/dmcmc_faces_tuning.json
log "benchmarks start; $(left)s left"
timeout "$(left)" $PY benchmarks/default_model.py --models default --num "$NUM_DEFAULT" --batch-size 500 --device "$DEVICE" \
  > runs/logs/default_model.log 2>&1 &
timeout "$(left)" $DDMKIT mixing-step --model default --faces 200 --attribute smiling --n-inv 40 --quiet \
  --out $R/mixing_step_default > runs/logs/mixing_step.log 2>&1 &
(
  for a in smiling eyeglasses dark_hair round_face open_eyes warm_background; do
    timeout "$(left)" $DDMKIT boundary fit --model default --faces 200 --attribute "$a" --t-m "$T_M" --n-inv 40 --test 100 \
      --seed 0 --calibrate --overwrite --quiet --out "$W/boundaries/$a.safetensors" > runs/logs/boundary_$a.log 2>&1 &
  done
  wait
  timeout "$(left)" $PY benchmarks/editing.py --device "$DEVICE" --num "$NUM_EDIT" --gen-steps 10 --t-sweep 300,600 \
    --distance-sweep 0.5,2 --batch-size 200
) > runs/logs/editing.log 2>&1 &
DLG_DEADLINE=$(( $(left) - 35 ))
for i in kar1 kar2 rd em pf rk45 ddim; do
  timeout "$(left)" $PY benchmarks/dmcmc_faces.py --device "$DEVICE" --integrators $i --part ${i}plain --num "$NUM_DLG" \
    --batch 500 --budgets "" --deadline "$DLG_DEADLINE" > runs/logs/plain_$i.log 2>&1 &
  timeout "$(left)" $PY benchmarks/dmcmc_faces.py --device "$DEVICE" --integrators $i --part $i --num "$NUM_DLG" --skip-plain \
    --tune-num "$TUNE_NUM" --tune-chains "$TUNE_NUM" --chains 250 --etas "${ETAS:-0.1,0.4}" --shares "${SHARES:-0.2,0.4}" \
    --budgets 5,10,20,35,50 --deadline "$DLG_DEADLINE" > runs/logs/dlg_$i.log 2>&1 &
done
timeout "$(left)" $PY benchmarks/dmcmc_faces.py --device "$DEVICE" --peers --part peers --num "$NUM_DLG" --batch 500 \
  --deadline "$DLG_DEADLINE" > runs/logs/dlg_peers.log 2>&1 &
if [ "${DTYPE:-0}" = 1 ]; then
  timeout "$(left)" $PY benchmarks/dtype_quality.py --device "$DEVICE" --num "$NUM_DEFAULT" --batch-size 1000 \
    > runs/logs/dtype_quality.log 2>&1 &
fi
wait
log "benchmarks done"
$PY benchmarks/dmcmc_faces.py --merge > runs/logs/dlg_merge.log 2>&1
pack results $R $W/boundaries
pack logs runs/logs
ls -la "$OUT"
log "end"
