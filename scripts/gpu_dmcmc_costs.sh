#!/usr/bin/env bash
# The prepared GPU job for the one open DMCMC target (classifier cost per DLG step <= 5% of one UNet NFE at
# 32x32, issue 4): about 6 minutes on one H100/H200 with the GPU to this job alone.
#
#   OUT=/some/dir bash scripts/gpu_dmcmc_costs.sh          # on the lent GPU, with run's carry: [".whl"]
#   DEVICE=cpu NUM=40 CHAINS=20 OUT=/tmp/dry bash scripts/gpu_dmcmc_costs.sh   # a dry run here, in a scratch clone
#
# The environment (diffusers from the carried wheels, PYTHONPATH) comes from scripts/gpu_env.sh.
#
# 1. benchmarks/dmcmc_faces.py --costs --device cuda: the classifier against one UNet call at batch 100 /
#    250 / 1,000 for fp32 and bf16 autocast, eager and torch.compile'd (CUDA graphs), with each variant's
#    predicted levels on noisy faces against fp32's; rows added to benchmarks/results/dmcmc_faces_costs.json.
# 2. The wall-clock of DLG + kar1 vs plain kar1 at 10 and 20 NFE with the fp32 classifier and with bf16 +
#    compile (dmcmc_faces_walltime.{fp32,bf16c}.json).
set -u
OUT=${OUT:-/tmp/ddmkit-gpu-out}
DEVICE=${DEVICE:-cuda}
NUM=${NUM:-1000}
CHAINS=${CHAINS:-250}
mkdir -p "$OUT" runs/logs
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
. scripts/gpu_env.sh || exit 2
R=benchmarks/results
timeout 300 $PY benchmarks/dmcmc_faces.py --device "$DEVICE" --costs > runs/logs/dlg_costs.log 2>&1
echo "costs rc $?"
timeout 90 $PY benchmarks/dmcmc_faces.py --device "$DEVICE" --walltime --num "$NUM" --chains "$CHAINS" --part fp32 \
  > runs/logs/dlg_walltime_fp32.log 2>&1
echo "walltime fp32 rc $?"
timeout 150 $PY benchmarks/dmcmc_faces.py --device "$DEVICE" --walltime --num "$NUM" --chains "$CHAINS" --part bf16c \
  --classifier-dtype bf16 --classifier-compile > runs/logs/dlg_walltime_bf16c.log 2>&1
echo "walltime bf16c rc $?"
cp $R/dmcmc_faces_costs.json $R/dmcmc_faces_walltime.*.json runs/logs/dlg_*.log "$OUT"/ 2>/dev/null
ls -la "$OUT"
