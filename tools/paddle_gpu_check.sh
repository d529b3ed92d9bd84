#!/usr/bin/env bash
# The Paddle GPU op on the GPU machine, in one call: unpack paddlepaddle-gpu 2.6.2
# (staged by ../shared/device/paddle_gpu_stage.sh; its parts already copied to $STAGE by
# the upload calls), build and install this package with setup.py against it
# (`pip install --no-build-isolation .`, timed), build the torch binding's library on the
# same sources, run the Paddle GPU tests (tests/gpu_paddle) and time the Paddle op
# against the torch binding (benchmarks/bench_paddle_gpu.py).
#
#   STAGE=/root/pgpu tools/paddle_gpu_check.sh          # logs and results under $OUT
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-output}"; mkdir -p "$OUT"
STAGE="${STAGE:-/root/pgpu}"
SITE=/root/paddle_site; DEPS=/root/paddle_deps
export PYTHONUNBUFFERED=1 PADDLE_FLASHMASK_CUDA_ARCHS="${PADDLE_FLASHMASK_CUDA_ARCHS:-90a}"
step() { echo "== $* ($(date +%T))"; }

step "unpack Paddle"
if [[ ! -d "$SITE/paddle" ]]; then
  python3 -m pip install -q --no-index --no-deps --target "$DEPS" "$STAGE"/*.whl || exit 1
  cat $(ls -v "$STAGE"/paddle_gpu.tar.zst.part*) > /root/paddle_gpu.tar.zst || exit 1
  PYTHONPATH="$DEPS" python3 -c "import sys, tarfile, zstandard; r = zstandard.ZstdDecompressor().stream_reader(open('/root/paddle_gpu.tar.zst', 'rb')); tarfile.open(fileobj=r, mode='r|').extractall(sys.argv[1])" "$SITE" || exit 1
fi
export PYTHONPATH="$SITE:$DEPS${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import paddle; print('paddle', paddle.__version__, 'cuda', paddle.version.cuda(), 'gpus', paddle.device.cuda.device_count())" 2>&1 | grep -v Warning | tee "$OUT/paddle_version.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$OUT/paddle_version.txt"

step "build: pip install --no-build-isolation . (archs $PADDLE_FLASHMASK_CUDA_ARCHS, $(nproc) jobs)"
t0=$(date +%s)
python3 -m pip install -v --no-build-isolation --no-deps . > "$OUT/build.log" 2>&1; rc=$?
echo "build rc=$rc in $(( $(date +%s) - t0 )) s" | tee "$OUT/build_time.txt"
grep -E "^ *paddle_flashmask:" "$OUT/build.log" | tail -4
(( rc == 0 )) || { tail -40 "$OUT/build.log"; exit 1; }

step "torch binding library (tools/build_cuda.sh, same sources)"
JOBS="$(nproc)" ARCHS="$PADDLE_FLASHMASK_CUDA_ARCHS" tools/build_cuda.sh > "$OUT/build_cuda.log" 2>&1 || { tail -20 "$OUT/build_cuda.log"; exit 1; }

step "Paddle GPU tests"
FLASHMASK_REQUIRE_PADDLE_GPU=1 timeout 400 python3 -m pytest -q -rfEs -p no:cacheprovider tests/gpu_paddle > "$OUT/paddle_tests.log" 2>&1; rc=$?
tail -25 "$OUT/paddle_tests.log"; echo "paddle tests rc=$rc"

step "timing: Paddle op vs torch binding"
timeout 300 python3 benchmarks/bench_paddle_gpu.py --out "$OUT" 2>&1 | grep -v Warning | tail -12
exit $rc
