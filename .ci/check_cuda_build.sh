#!/usr/bin/env bash
# CI (CPU-only machine, needs nvcc): the CUDA kernels and the Paddle GPU adapter must compile.
#  1. the files generated from the kernel table are up to date;
#  2. the API, the runtime, the TMA descriptors, the preprocessing kernels and one
#     instantiation of each kernel shape compile for sm_80 and sm_90a: fwd at D=64 (three
#     consumers, and two for a block_mask), D=128 and D=256 (the Hopper forward's 64-key
#     tiles and N=256 wgmma), bwd at D=64, D=128 and
#     D=256 (the Hopper backward split by head dim, the split mma.sync dK/dV kernels);
#     dkdv + dq + helpers;
#  3. the Hopper backward's dQ staging order reads back what it stores (tests/dq_order_check.cu),
#     a partial tile's own mask test hides what the call's form hides (tests/partial_test_check.cu),
#     and the persistent kernels' tail order is a permutation that moves what it should
#     (tests/tail_order_check.cu, its host part);
#  4. csrc/paddle/flashmask_op_gpu.cu compiles against the installed Paddle's headers with
#     -DPADDLE_WITH_CUDA (skipped with a notice when Paddle is not importable).
# Runs in ~1-2 minutes on 2 cores. NVCC=/path/to/nvcc to override.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
if [[ ! -x "$NVCC" ]]; then echo "check_cuda_build: nvcc not found" >&2; exit 1; fi
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
python3 tools/generate_kernels.py --check

# The flags of every build (tools/cuda_flags.py), but -O2: it compiles faster and still
# checks that every kernel builds.
FLAGS="$(python3 tools/cuda_flags.py compile --opt=-O2) -Icsrc/include -Icsrc/cuda"
pids=()
for src in csrc/cuda/flashmask_api.cu csrc/cuda/padded_head_dim.cu csrc/cuda/runtime.cu \
           csrc/cuda/tensor_maps.cu csrc/cuda/preprocess.cu \
           csrc/cuda/instantiations/flashmask_fwd_fp16_hdim64.cu \
           csrc/cuda/instantiations/flashmask_fwd_bf16_hdim128.cu \
           csrc/cuda/instantiations/flashmask_fwd_fp16_hdim256.cu \
           csrc/cuda/instantiations/flashmask_bwd_fp16_hdim64.cu \
           csrc/cuda/instantiations/flashmask_bwd_bf16_hdim128.cu \
           csrc/cuda/instantiations/flashmask_bwd_bf16_hdim256.cu; do
  "$NVCC" $FLAGS -c "$src" -o "$TMP/$(basename "$src").o" &
  pids+=($!)
  if (( ${#pids[@]} >= 2 )); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
echo "check_cuda_build: kernels compile for sm_80 and sm_90a"
"$NVCC" -std=c++17 -Icsrc/cuda tests/dq_order_check.cu -o "$TMP/dq_order_check" && "$TMP/dq_order_check"
"$NVCC" -std=c++17 -O2 -Icsrc/include -Icsrc/cuda tests/partial_test_check.cu -o "$TMP/partial_test_check" && "$TMP/partial_test_check"
"$NVCC" -std=c++17 -O2 -Icsrc/cuda tests/tail_order_check.cu -o "$TMP/tail_order_check" && "$TMP/tail_order_check"

PD_INC="$(python3 -c 'import os, paddle; print(os.path.join(os.path.dirname(paddle.__file__), "include"))' 2>/dev/null || true)"
if [[ -n "$PD_INC" && -d "$PD_INC" ]]; then
  "$NVCC" -std=c++17 -Xcompiler -fPIC -DPADDLE_WITH_CUDA -DPADDLE_WITH_CUSTOM_KERNEL -DPADDLE_NO_PYTHON \
    -Icsrc/include -Icsrc -I"$PD_INC" -I"$PD_INC/third_party" \
    -w -gencode=arch=compute_80,code=sm_80 -c csrc/paddle/flashmask_op_gpu.cu -o "$TMP/op_gpu.o"
  echo "check_cuda_build: flashmask_op_gpu.cu compiles against Paddle headers ($PD_INC)"
else
  echo "check_cuda_build: Paddle not importable; skipped the Paddle GPU adapter check"
fi
