#!/usr/bin/env bash
# Runs the op tests against an AddressSanitizer + UndefinedBehaviorSanitizer build of the CPU kernels.
#   bash tools/asan_tests.sh PYTHON [pytest args]     (or: ./run.sh asan [pytest args])
# The sanitized library is built with CMake into build/asan and loaded instead of pointmae._C through
# POINTMAE_LIBRARY. libasan must come first in the process, so it is preloaded into Python. Leak
# detection is off: CPython itself does not free everything at exit. Any out-of-bounds access or
# undefined behaviour aborts the run with a report. TORCH_CUDA_ARCH_LIST is set only so that the CMake
# config of a CUDA build of torch does not probe for a GPU; no CUDA code is compiled here.
set -euo pipefail
PY=${1:?usage: tools/asan_tests.sh PYTHON [pytest args]}
shift
cd "$(dirname "$0")/.."
# The CUDA toolkit behind nvcc (nvcc may be a wrapper script): its `--dryrun` prints `#$ TOP=<dir>`.
cuda_home=${CUDA_HOME:-}
if [ -z "$cuda_home" ] && command -v nvcc > /dev/null; then
  cuda_home=$(nvcc --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)
fi
prefix=$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')
TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} cmake -S . -B build/asan -DPOINTMAE_SANITIZE=ON -DCUDA_TOOLKIT_ROOT_DIR="$cuda_home" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_PREFIX_PATH="$prefix" > build/asan-configure.log 2>&1 \
  || { tail -n 40 build/asan-configure.log; exit 1; }
cmake --build build/asan -j "$(nproc)" > build/asan-build.log 2>&1 || { tail -n 60 build/asan-build.log; exit 1; }
export POINTMAE_LIBRARY=$PWD/build/asan/libpointmae_ops.so
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
[ $# -gt 0 ] || set -- tests/ops
exec "$PY" -m pytest -q -p no:cacheprovider "$@"
