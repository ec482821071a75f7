#!/usr/bin/env bash
# Every check that needs a CUDA GPU, as one prepared run, for a GPU machine without network access
# whose python already has torch, pytest, hypothesis, scipy and ninja (e.g. a lent device machine):
#   1. build pointmae._C with the CUDA kernels against that python's torch (sm_90 unless
#      TORCH_CUDA_ARCH_LIST says otherwise),
#   2. the op and extension tests, CPU and CUDA (the `cuda`-marked ones: CPU/CUDA parity, edge cases,
#      determinism, real sweeps; test_extension: a CUDA kernel for every op),
#   3. the CUDA op benchmark against the pure-PyTorch CUDA baselines (tools/bench_ops.py --device cuda).
#
#   bash tools/gpu_check.sh [OUT_DIR]      logs, machine.txt and ops_cuda.md go to OUT_DIR
#                                          (default: $OUT when set, else gpu_check/)
# Environment: PYTHON (default python3); POINTMAE_SHARED_DATA, else .gpu_data/ when it exists. The
# real-sweep tests and the KITTI benchmark rows need the samples: where ../shared is not beside the
# checkout, copy them first (`mkdir -p .gpu_data && cp -r ../shared/data/kitti ../shared/data/nuscenes
# .gpu_data/`, about 10 MB; .gpu_data is git-ignored, so send it along explicitly).
# TEST_TIMEOUT / BENCH_TIMEOUT (seconds, default 300 / 240) bound the two stages.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
out=${1:-${OUT:-gpu_check}}
mkdir -p "$out"
if [ -z "${POINTMAE_SHARED_DATA:-}" ] && [ -d .gpu_data ]; then
  export POINTMAE_SHARED_DATA=$PWD/.gpu_data
fi
{ nvidia-smi 2>&1 | head -n 15; "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU visible")'; } > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

echo "== gpu_check: build (FORCE_CUDA=1)"
start=$(date +%s)
if ! FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "$PY" setup.py build_ext --inplace > "$out/build.log" 2>&1; then
  tail -n 40 "$out/build.log"
  echo "gpu_check: build failed (full log: $out/build.log)"
  exit 1
fi
echo "built in $(( $(date +%s) - start )) s"

echo "== gpu_check: pytest tests/ops tests/test_extension.py (CPU and CUDA)"
FORCE_CUDA=1 timeout "${TEST_TIMEOUT:-300}" "$PY" -m pytest -q -rs -p no:cacheprovider tests/ops tests/test_extension.py \
  > "$out/pytest_cuda.log" 2>&1
test_rc=$?
grep -E "passed|failed|error" "$out/pytest_cuda.log" | tail -n 5
grep -E "^SKIPPED" "$out/pytest_cuda.log" | head -n 20     # on a GPU machine no CUDA test may be among them

echo "== gpu_check: tools/bench_ops.py --device cuda"
timeout "${BENCH_TIMEOUT:-240}" "$PY" tools/bench_ops.py --device cuda --out "$out" > "$out/bench.log" 2>&1
bench_rc=$?
tail -n 80 "$out/bench.log"

echo "gpu_check: tests exit $test_rc, benchmark exit $bench_rc (124 = stopped by its timeout)"
[ "$test_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
