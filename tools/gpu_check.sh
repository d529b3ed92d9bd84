#!/usr/bin/env bash
# One device call: library check, GPU tests, compute-sanitizer, optional benchmark.
#   tools/gpu_check.sh [tests] [sanitize] [bench:<configs>:<tag>[:masks]] [cp] ...
# Logs go to $OUT (or ./output). Assumes build/libflashmask_cuda.so was built (tools/build_cuda.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-output}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FLASHMASK_REQUIRE_CUDA=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[[ -f build/libflashmask_cuda.so ]] || { echo "building"; JOBS=16 tools/build_cuda.sh || exit 1; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader
rc=0
for step in "$@"; do
  case "$step" in
    tests*)
      sel="${step#tests}"; sel="${sel#:}"
      t0=$(date +%s)
      timeout 240 python3 -m pytest -q -rfE -p no:cacheprovider --timeout 300 tests/gpu ${sel:+-k "$sel"} > "$OUT/tests.log" 2>&1; r=$?
      tail -60 "$OUT/tests.log"; echo "tests rc=$r in $(( $(date +%s) - t0 ))s"; rc=$((rc|r)) ;;
    sanitize)
      t0=$(date +%s)
      timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 python3 tests/gpu/sanitize_cases.py > "$OUT/memcheck.log" 2>&1; r=$?
      tail -5 "$OUT/memcheck.log"; echo "memcheck rc=$r"; rc=$((rc|r))
      timeout 200 compute-sanitizer --tool racecheck --racecheck-report all --kernel-name kns=flashmask --error-exitcode 9 python3 tests/gpu/sanitize_cases.py > "$OUT/racecheck.log" 2>&1; r=$?
      tail -5 "$OUT/racecheck.log"; echo "racecheck rc=$r in $(( $(date +%s) - t0 ))s"; rc=$((rc|r)) ;;
    cp)  # context parallelism on 2 GPUs (nvidia-h200-x2): bf16 test, then the benchmark
      t0=$(date +%s)
      timeout 150 python3 -m pytest -q -rfE -p no:cacheprovider tests/gpu/test_distributed_cuda.py > "$OUT/cp_tests.log" 2>&1; r=$?
      tail -30 "$OUT/cp_tests.log"; echo "cp tests rc=$r in $(( $(date +%s) - t0 ))s"; rc=$((rc|r))
      NCCL_NVLS_ENABLE=0 timeout 420 torchrun --standalone --nproc_per_node 2 benchmarks/bench_cp.py --out "$OUT/cp" > "$OUT/cp_bench.log" 2>&1; r=$?
      tail -20 "$OUT/cp_bench.log"; echo "cp bench rc=$r"; rc=$((rc|r)) ;;
    bench:*)
      IFS=: read -r _ cfgs tag masks <<< "$step"
      python3 benchmarks/bench_gpu.py --configs "$cfgs" --tag "$tag" --out "$OUT" ${masks:+--masks "$masks"} 2>&1 | grep -v Warning | tail -40 ;;
  esac
done
exit $rc
