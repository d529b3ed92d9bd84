// The register-blocked fp32 micro-kernel, written once over a vector type
// (Zmm for AVX-512, Ymm for AVX2; see kernels_avx*.cc, which include this
// after their `#pragma GCC target`). It computes what ReferenceOps
// (tile_math.h) computes, with the layout of the product chosen for the FMA
// units: a kRows x (kVecs vectors) block of C stays in registers for the
// whole k loop; each k step loads kVecs vectors of a row of B and broadcasts
// kRows elements of A, then issues kRows * kVecs independent FMAs, enough to
// cover the FMA latency on both pipes. Measured (one core, 64 x 64 x 64
// products in L1): Zen 5, 8 x 2 zmm 246 GFLOP/s, 4 x 4 zmm 246, 16 x 1 zmm 182,
// 8 x 4 zmm 229 (spills); Zen 3 (AVX2 only), 6 x 2 ymm 95, 5 x 2 ymm 94, 4 x 2 ymm
// 64.5, 2 x 4 ymm 78.6, 8 x 1 ymm 79.3 (docs/cpu-kernel.md, "AVX2 on Zen 3", "A 5-row tail
// block on AVX2").
#pragma once

#include <cstddef>
#include <type_traits>

namespace flashmask {
namespace cpu {

// The register blocks of a product C[M x N] (N a multiple of kLanes): per row block, blocks
// of kVecs vectors, then one-vector blocks for the rest of N; block(i0, n0,
// std::integral_constant<int, rows>, std::integral_constant<int, vectors>) runs one. Rows
// go in blocks of kRows; where kRows does not divide M, the last ones in the fewest blocks
// of kTailRows that leave a multiple of kRows, and where no such split exists (M too small)
// all of them in blocks of kSmallRows. With AVX2's 6, 5 and 4 (kernels_avx2.cc) every
// multiple of 4 splits: 64 = 9 x 6 + 2 x 5, 32 = 2 x 6 + 4 x 5, 16 = 6 + 2 x 5, and 4 and 8
// in 4-row blocks (docs/cpu-kernel.md, "A 5-row tail block on AVX2"). The fp32 (BlockedOps)
// and the bf16 (Bf16Ops, kernels_avx512.cc) micro-kernels share it.
template <int kRows, int kTailRows, int kSmallRows, int kVecs, int kLanes, class Block>
[[gnu::always_inline]] inline void for_each_block(int M, int N, Block&& block) {
  auto row_block = [&](int i0, auto rows) __attribute__((always_inline)) {
    int n0 = 0;
    for (; n0 + kVecs * kLanes <= N; n0 += kVecs * kLanes) block(i0, n0, rows, std::integral_constant<int, kVecs>{});
    for (; n0 < N; n0 += kLanes) block(i0, n0, rows, std::integral_constant<int, 1>{});
  };
  int tail_blocks = 0;
  if constexpr (kTailRows != kRows) {
    while (tail_blocks * kTailRows <= M && (M - tail_blocks * kTailRows) % kRows != 0) ++tail_blocks;
    if (tail_blocks * kTailRows > M) {
      for (int i0 = 0; i0 < M; i0 += kSmallRows) row_block(i0, std::integral_constant<int, kSmallRows>{});
      return;
    }
  }
  const int main_rows = M - tail_blocks * kTailRows;
  for (int i0 = 0; i0 < main_rows; i0 += kRows) row_block(i0, std::integral_constant<int, kRows>{});
  if constexpr (kTailRows != kRows) {
    for (int i0 = main_rows; i0 < M; i0 += kTailRows) row_block(i0, std::integral_constant<int, kTailRows>{});
  }
}

// The softmax's row operations (ScalarRows in tile_math.h) on explicit registers of Vec:
// exp2_of's operations (tile_math.h) and Reg, kLanes, zero, load, store, add, fms(a, b, c) =
// a * b - c, reduce_add and reduce_max (the lanes' sum, maximum). The plain loops left these
// to GCC, which under -march=native for Intel's AVX-512 server cores (its 256-bit
// preference) ran them on ymm, spent ~40 instructions per row on alias checks and
// constants, reduced every row's sum lane by lane in order, and threaded the exponential's
// clamp into four compares and a blend (docs/cpu-kernel.md, "The softmax on explicit
// vectors"). The same exponentials as fast_exp2's; a row's sum is added in another order.
// n is a multiple of Vec::kLanes.
template <class Vec>
struct VectorRows {
  using Reg = typename Vec::Reg;

  [[gnu::always_inline]] static float max(const float* x, int n) {
    Reg m = Vec::broadcast(-__builtin_inff());
    for (int i = 0; i < n; i += Vec::kLanes) m = Vec::max(Vec::load(x + i), m);
    return Vec::reduce_max(m);
  }

  [[gnu::always_inline]] static float exp2_sum(float* s, int n, float scale, float ref) {
    const Reg vscale = Vec::broadcast(scale), vref = Vec::broadcast(ref);
    Reg sum = Vec::zero();
    for (int i = 0; i < n; i += Vec::kLanes) {
      const Reg e = exp2_of<Vec>(Vec::fms(Vec::load(s + i), vscale, vref));
      Vec::store(s + i, e);
      sum = Vec::add(sum, e);
    }
    return Vec::reduce_add(sum);
  }

  [[gnu::always_inline]] static void probabilities(float* __restrict p, float* __restrict d, int n, float scale,
                                                   const float* __restrict lse, const float* __restrict delta) {
    const Reg vscale = Vec::broadcast(scale);
    for (int i = 0; i < n; i += Vec::kLanes) {
      const Reg e = exp2_of<Vec>(Vec::fms(Vec::load(p + i), vscale, Vec::load(lse + i)));
      Vec::store(p + i, e);
      Vec::store(d + i, Vec::mul(e, Vec::sub(Vec::load(d + i), Vec::load(delta + i))));
    }
  }
};

// Vec: Reg, kLanes, zero(), load(p), store(p, r), broadcast(x), fma(a, b, c); for the
// transpose, per 128-bit lane: unpack_lo / unpack_hi (elements 0-1 / 2-3 of a and b
// interleaved) and pairs_lo / pairs_hi (a's pair 0 / 1, then b's), and exchange_lanes(r)
// (kLanes registers whose 128-bit lanes hold transposed 4 x 4 blocks -> the rows of the
// transposed kLanes x kLanes block).
// M must split into kRows, kTailRows and kSmallRows blocks (for_each_block), N a multiple of
// Vec::kLanes (a last block narrower than kVecs vectors runs one vector wide). A and B are plain
// row-major (F32Operands). The k loop walks the block's row pointers of A with
// one index: each broadcast is one load with base + index addressing, no
// address arithmetic between the FMAs (with int offsets r * K + k, GCC
// spent two integer instructions per broadcast).
template <class Vec, int kRows, int kVecs, int kTailRows = kRows, int kSmallRows = kTailRows>
struct BlockedOps : F32Operands {
  using Rows = VectorRows<Vec>;

  static void gemm(int M, int N, int K, const float* a, int lda, const float* b, int ldb, float* c,
                   int ldc, bool accumulate) {
    auto run_block = [&](int i0, int n0, auto rows, auto vecs) __attribute__((always_inline)) {
      block<rows(), vecs()>(K, a + static_cast<ptrdiff_t>(i0) * lda, lda, b + n0, ldb, c + i0 * ldc + n0, ldc,
                            accumulate);
    };
    for_each_block<kRows, kTailRows, kSmallRows, kVecs, Vec::kLanes>(M, N, run_block);
  }

  // rows and cols are multiples of 32 (tile_math.h), so of kLanes. A 64 x 64 tile in L1:
  // 161 ns in 16 x 16 zmm blocks against 973 ns element by element (ReferenceOps).
  static void transpose(const float* src, int rows, int cols, int lds, float* dst, int ldd) {
    typename Vec::Reg r[Vec::kLanes];
    for (int r0 = 0; r0 < rows; r0 += Vec::kLanes)
      for (int c0 = 0; c0 < cols; c0 += Vec::kLanes) {
        for (int i = 0; i < Vec::kLanes; ++i) r[i] = Vec::load(src + static_cast<ptrdiff_t>(r0 + i) * lds + c0);
        transpose_4x4_blocks(r);
        Vec::exchange_lanes(r);
        for (int i = 0; i < Vec::kLanes; ++i) Vec::store(dst + static_cast<ptrdiff_t>(c0 + i) * ldd + r0, r[i]);
      }
  }

 private:
  // Rows 4q..4q+3 of the block: each 128-bit lane's 4 x 4 block transposed in place.
  static inline void transpose_4x4_blocks(typename Vec::Reg (&r)[Vec::kLanes]) {
    typename Vec::Reg t[Vec::kLanes];
    for (int i = 0; i < Vec::kLanes / 2; ++i) {
      t[2 * i] = Vec::unpack_lo(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = Vec::unpack_hi(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < Vec::kLanes / 4; ++i)
      for (int h = 0; h < 2; ++h) {
        r[4 * i + 2 * h] = Vec::pairs_lo(t[4 * i + h], t[4 * i + h + 2]);
        r[4 * i + 2 * h + 1] = Vec::pairs_hi(t[4 * i + h], t[4 * i + h + 2]);
      }
  }

  // Always inlined (into gemm, and with it into the passes where they inline
  // gemm): left to GCC's size heuristics, which depend on the whole
  // translation unit, the forward's block stopped being inlined when the
  // backward grew (causal forward 3.5% slower); forced, every caller gets its
  // constant strides and flags folded in (N=4K, 2 threads: causal fwd+bwd -6%,
  // share_question -4%, fp32 and bf16 alike).
  template <int kR, int kV>
  [[gnu::always_inline]] static inline void block(int K, const float* a, ptrdiff_t lda, const float* b, ptrdiff_t ldb,
                           float* c, ptrdiff_t ldc, bool accumulate) {
    typename Vec::Reg acc[kR][kV];
    const float* rows[kR];
    for (int r = 0; r < kR; ++r) {
      rows[r] = a + r * lda;
      for (int v = 0; v < kV; ++v)
        acc[r][v] = accumulate ? Vec::load(c + r * ldc + v * Vec::kLanes) : Vec::zero();
    }
    for (ptrdiff_t k = 0; k < K; ++k, b += ldb) {
      typename Vec::Reg y[kV];
      for (int v = 0; v < kV; ++v) y[v] = Vec::load(b + v * Vec::kLanes);
      for (int r = 0; r < kR; ++r) {
        const typename Vec::Reg x = Vec::broadcast(rows[r][k]);
        for (int v = 0; v < kV; ++v) acc[r][v] = Vec::fma(x, y[v], acc[r][v]);
      }
    }
    for (int r = 0; r < kR; ++r)
      for (int v = 0; v < kV; ++v) Vec::store(c + r * ldc + v * Vec::kLanes, acc[r][v]);
  }
};

}  // namespace cpu
}  // namespace flashmask
