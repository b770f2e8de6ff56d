#!/usr/bin/env bash
# The prepared GPU check (CUDA kernels, CUDA tests, GPU benchmark tables), for a session that
# is lent a GPU machine (the device tool: its image has PyTorch, nvcc and ninja but not
# pywavelets or kymatio, and no network). Run from the repository root there:
#
#   bash scripts/gpu_check.sh            # logs under $OUT (or /tmp/dt_gpu_out)
#
# Missing Python packages travel as wheels in .whl/ (ignored by git): fetch them here first
# with `bash scripts/gpu_check.sh --fetch-wheels`, then carry .whl. Each step has its own
# time limit so that one slow step cannot eat the whole call; the benchmarks do not write
# BENCHMARKS.md there (copy their tables in from the logs).
set -u -o pipefail

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    for spec in PyWavelets kymatio==0.3.0 appdirs configparser; do
        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform any -d .whl "$spec" || exit 1
    done
    exit 0
fi

OUT=${OUT:-/tmp/dt_gpu_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]}"
}

step doctor 240 python3 -m difftransforms doctor
step pytest_cuda 240 python3 -m pytest -q -p no:cacheprovider tests/test_ops_modconv.py \
    tests/test_scattering.py tests/test_fourier.py tests/test_wavelets_grad.py \
    tests/test_synthesis.py -k cuda
step bench_scattering 300 python3 -m benchmarks.scattering --device cuda --no-write
step bench_kernels 120 python3 -m benchmarks.kernels --device cuda --no-write
step bench_synthesis 180 python3 -m benchmarks.synthesis --device cuda --models spectra \
    --no-write
