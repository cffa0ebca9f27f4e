#!/usr/bin/env bash
# The whole GPU check of issue 20 as one script, for a session that is lent a GPU machine.
#
# That machine's python3 has a CUDA torch (2.11 as last seen) and most scientific packages,
# and reaches no registry. Before calling the device tool, fetch the few missing wheels here
# (the versions this project's .venv holds; .whl/ is git-ignored through .git/info/exclude):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl pydantic==2.14.4 pydantic_core==2.50.5 \
#     annotated-types==0.8.0 typing-inspection==0.4.5 SALib==1.6.0 multiprocess==0.70.19 \
#     dill==0.4.1 plotly==7.1.0 tomli_w==1.2.0 typing_extensions==4.16.0  # pydantic needs >= 4.16
#
# then run it once (at most about 9 minutes: the steps' limits add to 550 s), carrying the wheels:
#
#   device run: command "bash benchmarks/gpu_check.sh", carry [".whl"], timeout_s 600
#
# and copy the figures, with the card's name printed at the top, into benchmarks/README.md.
# Every step has its own time limit, so one slow step leaves the others' results in $OUT.
# A smoke run of the script itself on a machine without a GPU (seconds to minutes):
#   PYTHON=.venv/bin/python DEVICE=cpu QUICK=--quick STEPS=4 INSTALL=no bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-/tmp/gpu-check}
PYTHON=$(command -v "${PYTHON:-python3}")
case $PYTHON in /*) ;; *) PYTHON=$PWD/$PYTHON ;; esac  # the steps below run in benchmarks/
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-}
mkdir -p "$OUT"
log() { echo "== $* ($(date +%H:%M:%S))" | tee -a "$OUT/steps.log"; }

if [ "${INSTALL:-yes}" = yes ]; then
  log "install"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
fi
"$PYTHON" - <<'EOF' | tee "$OUT/machine.txt"
import torch, attractor
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("card", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT/machine.txt" 2>&1

log "gpu-marked tests and the device tests"
# Only the files that hold gpu-marked tests: collecting all of tests/ would import optional
# packages (gymnasium, playwright, optuna) that machine lacks.
GPU_TESTS=$(grep -rl "pytest.mark.gpu" tests --include="test_*.py")
timeout 120 "$PYTHON" -m pytest -q -p no:cacheprovider -m "gpu" $GPU_TESTS \
  > "$OUT/pytest_gpu.txt" 2>&1
timeout 60 "$PYTHON" -m pytest -q -p no:cacheprovider tests/unit/test_device.py \
  tests/integration/test_device_options.py > "$OUT/pytest_device.txt" 2>&1
tail -n 3 "$OUT/pytest_gpu.txt" "$OUT/pytest_device.txt"

cd benchmarks || exit 1
log "CPU vs GPU tolerance and the member invariant on the card"
timeout 80 "$PYTHON" device_agreement.py --device "$DEVICE" --steps "${STEPS:-50}" \
  --json "$OUT/device_agreement.json" > "$OUT/device_agreement.txt" 2>&1
tail -30 "$OUT/device_agreement.txt"

log "ensemble_speed on the card (digits MLP, N = 64 .. 4096; loop, recipe, ours)"
timeout 150 "$PYTHON" ensemble_speed.py --device "$DEVICE" $QUICK --json "$OUT/ensemble_speed.json" \
  > "$OUT/ensemble_speed.txt" 2>&1
tail -30 "$OUT/ensemble_speed.txt"

log "lm_speed on the card (tiny-lm, N = 4, 8, 16)"
timeout 70 "$PYTHON" lm_speed.py --device "$DEVICE" $QUICK --no-example --json "$OUT/lm_speed.json" \
  > "$OUT/lm_speed.txt" 2>&1
tail -20 "$OUT/lm_speed.txt"

log "conv_speed on the card (digits-cnn, ResNet-20)"
timeout 70 "$PYTHON" conv_speed.py --device "$DEVICE" $QUICK --json "$OUT/conv_speed.json" \
  > "$OUT/conv_speed.txt" 2>&1
tail -20 "$OUT/conv_speed.txt"
log "done"
