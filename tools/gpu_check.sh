#!/usr/bin/env bash
# One device call: library check, GPU tests, compute-sanitizer, optional benchmark.
#   tools/gpu_check.sh [tests] [sanitize] [fa4:<staged dir>] [bench:<configs>:<tag>[:masks]] [cp] [ab:<old source tree>] [scale] [ncu:<masks>[:D[:dirs]]] [clock[:<configs>[:masks]]] ...
# clock[:CONFIGS[:MASKS]] runs tools/clock_under_load.py (ours, and FA4 where a fa4: step installed it):
# each call's rate beside the SM clock and power it holds under its own sustained load.
# scale: the long-sequence step (issue 16): builds the library, the quick GPU tests (-x -q), the
# opt-in scale tests (tests/gpu/test_scale.py: 1M packed documents, causal 512K, > 2^31
# elements) and benchmarks/bench_length.py (8K-1M causal_document: TFLOPs/s, peak memory).
# bench:CONFIGS:TAG[:MASKS] runs benchmarks/bench_gpu.py, with $BENCH_ARGS (e.g. "--impls fa4,fa4direct") added.
# fa4:DIR installs FlashAttention-4 from the files ../shared/device/fa4_stage.sh staged (.fa4a and .fa4b
# copied into DIR), so that a later bench step has its FA4 and FA4-Flex columns.
# ab:DIR builds the library from an older source tree DIR (e.g. `git archive` of a base commit,
# carried to the machine) and times old, a second copy of old loaded apart (the A/A spread) and
# this build in turns
# (tools/ab_compare.py: 8K, D=64/128/256, full/causal/causal_document/sliding_window, fwd and bwd,
# 5 rounds of AB_REPS timed calls each, default 5).
# ncu:MASKS[:D[:DIRS[:IMPLS]]] (e.g. ncu:causal,full or ncu:causal,full:256:fwd; D defaults to
# 128, DIRS to fwd,bwd) profiles our kernels, and FA4's called directly where fa4:DIR installed
# it, at 8K, B=4, H*D=4096, with source counters, and writes each kernel's details and SASS
# source page, packed as $OUT/ncu_dD.tgz (tools/ncu_compare.py reads the *_src.csv files).
# IMPLS (e.g. ours,cudnn) replaces that choice; cudnn is SDPA's cuDNN backend (full and causal),
# its sm90 fprop/bprop kernels.
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
      # (timeouts sum to under 10 minutes with the build; the ranks' JSON, every case and
      # plan's errors, stay under $OUT/cp_tests/)
      t0=$(date +%s)
      NCCL_NVLS_ENABLE=0 timeout 150 python3 -m pytest -q -rfE -p no:cacheprovider --basetemp "$OUT/cp_tests" \
        tests/gpu/test_distributed_cuda.py > "$OUT/cp_tests.log" 2>&1; r=$?
      tail -30 "$OUT/cp_tests.log"; echo "cp tests rc=$r in $(( $(date +%s) - t0 ))s"; rc=$((rc|r))
      t0=$(date +%s)
      NCCL_NVLS_ENABLE=0 timeout 370 torchrun --standalone --nproc_per_node 2 benchmarks/bench_cp.py --out "$OUT/cp" > "$OUT/cp_bench.log" 2>&1; r=$?
      tail -20 "$OUT/cp_bench.log"; echo "cp bench rc=$r in $(( $(date +%s) - t0 ))s"; rc=$((rc|r)) ;;
    ab:*)
      old_src="${step#ab:}"; t0=$(date +%s)
      (cd "$old_src" && JOBS="$(nproc)" ARCHS="${ARCHS:-90a}" BUILD=/tmp/ab_old tools/build_cuda.sh > /tmp/ab_old.log 2>&1) \
        || { tail -20 /tmp/ab_old.log; rc=1; continue; }
      mkdir -p /tmp/ab_old2 && cp /tmp/ab_old/libflashmask_cuda.so /tmp/ab_old2/
      libs="old=/tmp/ab_old/libflashmask_cuda.so,old2=/tmp/ab_old2/libflashmask_cuda.so,new=build/libflashmask_cuda.so"
      for cfg in 8k-64 8k-128 8k-256; do
        python3 tools/ab_compare.py --libs "$libs" --config "$cfg" --masks full,causal,causal_document,sliding_window \
          --modes fwd,bwd --rounds 5 --reps "${AB_REPS:-5}" --json "$OUT/ab_$cfg.json" 2>&1 | grep -v Warning | tail -12
      done
      echo "ab in $(( $(date +%s) - t0 ))s" ;;
    scale)
      t0=$(date +%s)
      JOBS=16 ARCHS=90a tools/build_cuda.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; rc=1; continue; }
      echo "build in $(( $(date +%s) - t0 ))s"
      timeout 120 python3 -m pytest -x -q -rfE -p no:cacheprovider tests/gpu --ignore=tests/gpu/test_scale.py > "$OUT/tests.log" 2>&1; r=$?
      tail -15 "$OUT/tests.log"; echo "tests rc=$r at $(( $(date +%s) - t0 ))s"; rc=$((rc|r))
      FLASHMASK_SCALE_TESTS=1 timeout 180 python3 -m pytest -q -rfE -s -p no:cacheprovider --durations=0 tests/gpu/test_scale.py > "$OUT/scale_tests.log" 2>&1; r=$?
      tail -25 "$OUT/scale_tests.log"; echo "scale tests rc=$r at $(( $(date +%s) - t0 ))s"; rc=$((rc|r))
      timeout 100 python3 benchmarks/bench_length.py --out "$OUT" > "$OUT/bench_length.log" 2>&1; r=$?
      tail -12 "$OUT/bench_length.log"; echo "bench_length rc=$r at $(( $(date +%s) - t0 ))s"; rc=$((rc|r)) ;;
    fa4:*)  # FlashAttention-4 from the files ../shared/device/fa4_stage.sh staged (both parts in one folder)
      dir="${step#fa4:}"; site=/root/fa4site
      (cd "$dir" && if ls cu13.part.* >/dev/null 2>&1; then
         cat cu13.part.* > nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl && rm cu13.part.*; fi)
      python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$dir"/*.whl > "$OUT/fa4_install.log" 2>&1 \
        || { tail -20 "$OUT/fa4_install.log"; rc=1; continue; }
      export PYTHONPATH="$site:$site/nvidia_cutlass_dsl/dsl_packages:$PYTHONPATH"
      python3 -c "from flash_attn.cute import flash_attn_func; print('fa4 installed')" ;;
    ncu:*)
      IFS=: read -r _ masks d dirs impls <<< "$step"; d="${d:-128}"; dirs="${dirs:-fwd,bwd}"
      if [[ -n "$impls" ]]; then impls="$(tr , ' ' <<< "$impls")"
      else impls=ours; python3 -c "import flash_attn.cute" 2>/dev/null && impls="fa4 ours"; fi
      mkdir -p "$OUT/ncu" /tmp/ncu_reports
      for mask in $(tr , ' ' <<< "$masks"); do for impl in $impls; do for dir in $(tr , ' ' <<< "$dirs"); do
        name="${impl}_${mask}_${dir}_d$d"
        kernels="flash_${dir}_sm90|flashmask_${dir}_sm90"
        [[ "$impl" == cudnn ]] && kernels="sdpa_sm90_flash_${dir:0:1}prop"
        timeout 150 ncu --clock-control none --section SpeedOfLight --section WarpStateStats --section SourceCounters \
          --section LaunchStats --section Occupancy --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --metrics sm__inst_executed.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__cycles_elapsed.avg,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum \
          -k regex:"$kernels" --launch-count 1 -f -o "/tmp/ncu_reports/$name" \
          python3 tools/profile_kernels.py 8192 4 $((4096 / d)) "$d" "$mask" "$impl" > "$OUT/ncu/$name.log" 2>&1; r=$?
        echo "ncu $name rc=$r"; rc=$((rc|r))
        ncu -i "/tmp/ncu_reports/$name.ncu-rep" --csv --page details > "$OUT/ncu/${name}_details.csv" 2>/dev/null
        ncu -i "/tmp/ncu_reports/$name.ncu-rep" --csv --page source --print-source sass > "$OUT/ncu/${name}_src.csv" 2>/dev/null
      done; done; done
      tar -czf "$OUT/ncu_d$d.tgz" -C "$OUT" ncu && rm -rf "$OUT/ncu" ;;
    bench:*)
      IFS=: read -r _ cfgs tag masks <<< "$step"
      python3 benchmarks/bench_gpu.py ${BENCH_ARGS:-} --configs "$cfgs" --tag "$tag" --out "$OUT" ${masks:+--masks "$masks"} 2>&1 | grep -v Warning | tail -40 ;;
    clock*)  # clock[:CONFIGS[:MASKS]]: each call's rate, SM clock and power under its own load
      IFS=: read -r _ cfgs masks <<< "$step"
      python3 tools/clock_under_load.py ${cfgs:+--configs "$cfgs"} ${masks:+--masks "$masks"} --out "$OUT" 2>&1 \
        | grep -v Warning | tail -40; rc=$((rc|PIPESTATUS[0])) ;;
  esac
done
exit $rc
