#!/usr/bin/env bash
# One entry point that sets everything up on a fresh machine, then runs a job:
#   ./run.sh main [key=value]   the main job: Point-MAE pre-training on the embedded procedural shapes
#   ./run.sh test [pytest args] the test suite
#   ./run.sh bench [args]       the op benchmarks (tools/bench_ops.py)
#   ./run.sh asan [pytest args] the op tests against an AddressSanitizer + UBSan build (CPU)
#   ./run.sh setup              only the set-up
# Environment: POINTMAE_VENV (default .venv) is the virtual environment to create or reuse;
# FORCE_CUDA=1 compiles the CUDA kernels even without a GPU (CI does).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=${POINTMAE_VENV:-$ROOT/.venv}
PY=$VENV/bin/python

setup_venv() {
  if [ ! -x "$PY" ]; then
    echo "run.sh: creating virtual environment $VENV"
    python3 -m venv "$VENV"
  fi
  # Reinstall the requirements only when requirements-dev.txt / -nodeps.txt changed since the last install.
  local want have
  want=$(cat requirements-dev.txt requirements-nodeps.txt | sha256sum | cut -d' ' -f1)
  have=$(cat "$VENV/.pointmae-requirements" 2>/dev/null || true)
  if [ "$want" != "$have" ]; then
    echo "run.sh: installing requirements-dev.txt into $VENV"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -r requirements-dev.txt
    # Packages whose declared pins would break the environment (see the file's comment).
    "$PY" -m pip install -q --no-deps -r requirements-nodeps.txt
    echo "$want" > "$VENV/.pointmae-requirements"
  fi
  # Make this checkout importable from anywhere (tools/, other folders) without reinstalling.
  local site
  site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$ROOT" > "$site/pointmae-checkout.pth"
}

build() {
  # Incremental (ninja keeps build/); only changed sources are recompiled.
  echo "run.sh: building pointmae._C (FORCE_CUDA=${FORCE_CUDA:-0})"
  mkdir -p build
  if ! MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" setup.py build_ext --inplace > build/build.log 2>&1; then
    tail -n 60 build/build.log; echo "run.sh: build failed (full log: build/build.log)"; exit 1
  fi
  "$PY" -c "import pointmae" || { echo "run.sh: pointmae does not import after the build"; exit 1; }
}

cmd=${1:-main}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup_venv; build ;;
  main)  setup_venv; build; exec "$PY" tools/pretrain.py configs/point_mae/synthetic.yaml "$@" ;;
  test)  setup_venv; build; exec "$PY" -m pytest -q "$@" ;;
  bench) setup_venv; build; exec "$PY" tools/bench_ops.py "$@" ;;
  asan)  setup_venv; exec bash tools/asan_tests.sh "$PY" "$@" ;;
  *) echo "usage: ./run.sh main|test|bench|asan|setup [args]" >&2; exit 2 ;;
esac
