#!/usr/bin/env bash
# Builds the framework-free CUDA library build/libflashmask_cuda.so (no Paddle needed).
#
#   tools/build_cuda.sh                 # sm_80 + sm_90a, 2 parallel nvcc jobs
#   JOBS=16 ARCHS="90a" tools/build_cuda.sh
#   LIB=/path/lib.so tools/build_cuda.sh
#
# paddle_flashmask.torch finds the library at build/libflashmask_cuda.so, next to
# the package (paddle_flashmask/torch/libflashmask_cuda.so), or at $FLASHMASK_CUDA_LIB.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
JOBS="${JOBS:-2}"
ARCHS="${ARCHS:-80 90a}"
BUILD="${BUILD:-$ROOT/build}"
LIB="${LIB:-$BUILD/libflashmask_cuda.so}"
EXTRA="${NVCC_EXTRA:-}"
mkdir -p "$BUILD/cuda_obj"
python3 "$ROOT/tools/generate_kernels.py"

GENCODE="$(python3 "$ROOT/tools/cuda_flags.py" gencode --archs "$ARCHS")"
FLAGS="$(python3 "$ROOT/tools/cuda_flags.py" compile --archs "$ARCHS") -I$ROOT/csrc/include -I$ROOT/csrc/cuda $EXTRA"
export NVCC FLAGS BUILD

SRCS=("$ROOT"/csrc/cuda/*.cu "$ROOT"/csrc/cuda/instantiations/*.cu)
# Objects compiled with other flags (ARCHS, NVCC_EXTRA, another nvcc) are not reused.
FLAGS_STAMP="$BUILD/cuda_obj/FLAGS"
if [[ ! -f "$FLAGS_STAMP" || "$(cat "$FLAGS_STAMP")" != "$NVCC $FLAGS" ]]; then
  rm -f "$BUILD"/cuda_obj/*.o
  printf '%s\n' "$NVCC $FLAGS" > "$FLAGS_STAMP"
fi
# Otherwise rebuild an object only when its source or a header changed.
HDR_STAMP=$(stat -c %Y "$ROOT"/csrc/cuda/*.cuh "$ROOT"/csrc/cuda/*.h "$ROOT"/csrc/include/flashmask/*.h | sort -n | tail -1)
compile_one() {
  src="$1"; obj="$BUILD/cuda_obj/$(basename "${src%.cu}").o"
  if [[ -f "$obj" && "$obj" -nt "$src" && $(stat -c %Y "$obj") -ge "$HDR_STAMP" && "${FORCE:-0}" != 1 ]]; then
    return 0
  fi
  echo "nvcc $(basename "$src")"
  $NVCC $FLAGS -c "$src" -o "$obj"
}
export -f compile_one
export HDR_STAMP
printf '%s\n' "${SRCS[@]}" | xargs -P "$JOBS" -I{} bash -c 'compile_one "$@"' _ {}
OBJS=()
for s in "${SRCS[@]}"; do OBJS+=("$BUILD/cuda_obj/$(basename "${s%.cu}").o"); done
$NVCC -shared $GENCODE -cudart static -o "$LIB" "${OBJS[@]}"
echo "built $LIB"
