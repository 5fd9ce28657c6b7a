# Sourced by the prepared GPU jobs (scripts/gpu_session.sh, scripts/gpu_dmcmc_costs.sh): makes `ddmkit` and its
# dependencies importable on a bare GPU image, whose python3 has torch (CUDA) but not diffusers.
#
# The lent machine cannot reach the package index, so diffusers and importlib_metadata travel as wheels in
# .whl/ (git-ignored; `run`'s carry: [".whl"]). Make them once on this machine with
#   .venv/bin/pip download --no-deps -d .whl "diffusers==$(.venv/bin/python -c 'import diffusers; print(diffusers.__version__)')" importlib_metadata
# Sets PY and DDMKIT (the interpreter and the CLI to call); with the project's .venv present (a CPU dry
# run here), uses it unchanged.
if [ -x .venv/bin/python ] && .venv/bin/python -c "import ddmkit, diffusers" 2>/dev/null; then
  PY=.venv/bin/python
  DDMKIT=.venv/bin/ddmkit
else
  if ! python3 -c "import diffusers" 2>/dev/null; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
      echo "error: python3 has no diffusers and .whl/ holds no wheels; carry .whl (see scripts/gpu_env.sh)" >&2
      return 2 2>/dev/null || exit 2
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "error: could not install the wheels in .whl/" >&2; return 2 2>/dev/null || exit 2; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
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
fi
$PY -c "import torch, diffusers, ddmkit; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__)" \
  || { echo "error: torch, diffusers or ddmkit cannot be imported with $PY" >&2; return 2 2>/dev/null || exit 2; }
