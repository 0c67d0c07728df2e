#!/usr/bin/env bash
# The one command for a rented GPU machine (one H100/H200, Python 3.12 with a CUDA torch, timm; no internet), run
# from the repository root:  bash benchmarks/device_check.sh
#
# Why a script: the machine is lent for minutes, so everything worth knowing comes from one call. It expects two
# git-ignored folders carried with the repository: .whl/ (the xformers wheel) and .device_shared/ (copies of
# ../shared/golden and ../shared/data/cdetector_portion; ../shared itself is not there). Stages, each under its own
# time limit and all under one deadline, so a hang costs its stage only and the whole run ends within ~5.5 minutes:
#   1. install the carried xformers wheel into $SITE (the run goes on with SDPA only if that fails)
#   2. machine and versions (nvidia-smi, torch/CUDA/cuDNN, xformers, timm)
#   3. the GPU tests (tests/core/models/test_gpu.py)
#   4. the CPU/GPU-agnostic backbone and pretraining tests that need no package missing there (openslide, shapely,
#      faiss, PySide6, imagecodecs): tests/core/models and tests/training/pretrain, less the slide-tile test
#      (imagecodecs) and the torchrun test (two processes would need two GPUs once CUDA is present)
#   5. benchmarks/gpu.py (throughput table, pretraining step)
# Logs go to $OUT (default /tmp/out): one file per stage and summary.txt. Exit status 0 when every stage passed.

set -u -o pipefail
OUT=${OUT:-/tmp/out}
SITE=${SITE:-/tmp/site}
DEADLINE=${DEADLINE:-330}  # seconds for the whole script
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CI=true QT_QPA_PLATFORM=offscreen
export CERVIXFM_SHARED="$PWD/.device_shared"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
START=$SECONDS
declare -a RESULTS=()

# run NAME LIMIT CMD...: CMD under `timeout` (LIMIT, or what is left of the deadline), output shown and in $OUT/NAME.log
run() {
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - (SECONDS - START)))
    if ((left < 15)); then
        echo "=== $name: skipped, ${left}s left of the ${DEADLINE}s deadline" | tee "$OUT/$name.log"
        RESULTS+=("$name: skipped (deadline)")
        return
    fi
    ((limit > left)) && limit=$left
    echo "=== $name (limit ${limit}s): $*"
    local t0=$SECONDS rc
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    rc=$?
    local verdict="rc $rc"
    ((rc == 124 || rc == 137)) && verdict="TIMED OUT after ${limit}s (rc $rc)"
    RESULTS+=("$name: $verdict, $((SECONDS - t0))s")
    echo "=== $name: $verdict in $((SECONDS - t0))s"
}

# 1. xformers from the carried wheel (no index, no dependencies: torch and numpy are there already)
run install 60 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl
if [[ ${RESULTS[-1]} == "install: rc 0,"* ]]; then
    export PYTHONPATH="$SITE:$PYTHONPATH"
else
    echo "xformers wheel not installed: the xformers cases will skip, SDPA runs"
fi

# 2. the machine
machine_info() {
    nvidia-smi
    echo
    python3 -VV
    echo "$(uname -m), $(nproc) CPUs"
    free -g | head -2
    python3 - <<'PY'
import importlib

import torch

print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version(),
      "GPU:", torch.cuda.is_available() and torch.cuda.get_device_name(0))
for name in ("xformers", "timm", "torchvision", "numpy", "PIL", "yaml", "scipy", "skimage", "h5py", "safetensors"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"), "from", module.__file__)
    except Exception as exc:
        print(f"{name}: not importable ({type(exc).__name__}: {str(exc)[:120]})")
from core.models.attention import xformers_available

print("core.models.attention sees xformers:", xformers_available())
PY
    echo
    du -sh .device_shared/golden .device_shared/data/* 2>&1
    echo
    timeout 30 python3 -m xformers.info 2>&1 | head -60
}
export -f machine_info
run info 50 bash -c machine_info

# 3. the GPU tests
run test_gpu 120 python3 -m pytest -q -p no:cacheprovider -rs --durations=12 --junitxml="$OUT/test_gpu.xml" \
    tests/core/models/test_gpu.py

# 4. the rest of the backbone tests and the pretraining tests (these use CUDA where the code picks "auto")
run test_models_pretrain 90 python3 -m pytest -q -p no:cacheprovider -rs --durations=8 \
    --junitxml="$OUT/test_models_pretrain.xml" \
    tests/core/models tests/training/pretrain \
    --ignore=tests/core/models/test_gpu.py \
    --ignore=tests/training/pretrain/test_distributed.py \
    --deselect tests/training/pretrain/test_data.py::test_slide_tiles_come_from_the_cell_bearing_area

# 5. the benchmark
run bench_gpu 210 python3 benchmarks/gpu.py

{
    echo "device check finished in $((SECONDS - START))s (deadline ${DEADLINE}s)"
    printf '  %s\n' "${RESULTS[@]}"
} | tee "$OUT/summary.txt"
for r in "${RESULTS[@]}"; do
    [[ $r == *": rc 0,"* ]] || exit 1
done
exit 0
