// The register-blocked fp32 micro-kernel, written once over a vector type
// (Zmm for AVX-512, Ymm for AVX2; see kernels_avx*.cc, which include this
// after their `#pragma GCC target`). It computes what ReferenceOps
// (tile_math.h) computes, with the layout of the product chosen for the FMA
// units: a kRows x (kVecs vectors) block of C stays in registers for the
// whole k loop; each k step loads kVecs vectors of a row of B and broadcasts
// kRows elements of A, then issues kRows * kVecs independent FMAs, enough to
// cover the FMA latency on both pipes. Measured on the development machine
// (one core, 64 x 64 x 64 products in L1): 8 x 2 zmm 246 GFLOP/s, 4 x 4 zmm
// 246, 16 x 1 zmm 182, 8 x 4 zmm 229 (spills).
#pragma once

#include <cstddef>

namespace flashmask {
namespace cpu {

// Vec: Reg, kLanes, zero(), load(p), store(p, r), broadcast(x), fma(a, b, c).
// M must be a multiple of kRows, N of kVecs * Vec::kLanes. A and B are plain
// row-major (F32Operands). The k loop walks kRows row pointers of A with
// one index: each broadcast is one load with base + index addressing, no
// address arithmetic between the FMAs (with int offsets r * K + k, GCC
// spent two integer instructions per broadcast).
template <class Vec, int kRows, int kVecs>
struct BlockedOps : F32Operands {
  static constexpr int kCols = kVecs * Vec::kLanes;

  static void gemm(int M, int N, int K, const float* a, int lda, const float* b, int ldb, float* c,
                   int ldc, bool accumulate) {
    for (int i0 = 0; i0 < M; i0 += kRows) {
      for (int n0 = 0; n0 < N; n0 += kCols) {
        block(K, a + static_cast<ptrdiff_t>(i0) * lda, lda, b + n0, ldb, c + i0 * ldc + n0, ldc,
              accumulate);
      }
    }
  }

 private:
  static inline void block(int K, const float* a, ptrdiff_t lda, const float* b, ptrdiff_t ldb,
                           float* c, ptrdiff_t ldc, bool accumulate) {
    typename Vec::Reg acc[kRows][kVecs];
    const float* rows[kRows];
    for (int r = 0; r < kRows; ++r) {
      rows[r] = a + r * lda;
      for (int v = 0; v < kVecs; ++v)
        acc[r][v] = accumulate ? Vec::load(c + r * ldc + v * Vec::kLanes) : Vec::zero();
    }
    for (ptrdiff_t k = 0; k < K; ++k, b += ldb) {
      typename Vec::Reg y[kVecs];
      for (int v = 0; v < kVecs; ++v) y[v] = Vec::load(b + v * Vec::kLanes);
      for (int r = 0; r < kRows; ++r) {
        const typename Vec::Reg x = Vec::broadcast(rows[r][k]);
        for (int v = 0; v < kVecs; ++v) acc[r][v] = Vec::fma(x, y[v], acc[r][v]);
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (int v = 0; v < kVecs; ++v) Vec::store(c + r * ldc + v * Vec::kLanes, acc[r][v]);
  }
};

}  // namespace cpu
}  // namespace flashmask
