// The AVX2 + FMA variant: fp32 micro-kernel on ymm registers (16 of them: a
// 6 x 2-vector accumulator block leaves room for the B row and a broadcast; the
// last rows of an M that 6 does not divide run in 5 x 2 blocks, an M of 4 or 8 in
// 4 x 2 blocks).
#include "kernel_deps.h"

#if FLASHMASK_HAVE_X86_KERNELS
#include <immintrin.h>

#pragma GCC target("avx2,fma")
#include "backward_impl.h"
#include "forward_impl.h"
#include "microkernel.h"

namespace flashmask {
namespace cpu {
namespace {

struct Ymm {
  using Reg = __m256;
  static constexpr int kLanes = 8;
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, Reg x) { _mm256_storeu_ps(p, x); }
  static Reg broadcast(float x) { return _mm256_set1_ps(x); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static Reg fms(Reg a, Reg b, Reg c) { return _mm256_fmsub_ps(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm256_sub_ps(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
  static Reg max(Reg a, Reg b) { return _mm256_max_ps(a, b); }
  static Reg min(Reg a, Reg b) { return _mm256_min_ps(a, b); }
  static Reg round(Reg x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static Reg pow2(Reg n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  static float reduce_add(Reg x) {
    return reduce(x, [](__m128 a, __m128 b) { return _mm_add_ps(a, b); });
  }
  static float reduce_max(Reg x) {
    return reduce(x, [](__m128 a, __m128 b) { return _mm_max_ps(a, b); });
  }
  static Reg unpack_lo(Reg a, Reg b) { return _mm256_unpacklo_ps(a, b); }
  static Reg unpack_hi(Reg a, Reg b) { return _mm256_unpackhi_ps(a, b); }
  static Reg pairs_lo(Reg a, Reg b) { return _mm256_shuffle_ps(a, b, 0x44); }
  static Reg pairs_hi(Reg a, Reg b) { return _mm256_shuffle_ps(a, b, 0xee); }
  // The halves, then the 64-bit halves, then the two elements combined by op.
  template <class Op>
  static float reduce(Reg x, Op op) {
    __m128 r = op(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    r = op(r, _mm_movehl_ps(r, r));
    return _mm_cvtss_f32(op(r, _mm_movehdup_ps(r)));
  }
  // Two lanes: row j takes lane 0 of registers j and 4 + j, row 4 + j their lane 1.
  static void exchange_lanes(Reg (&r)[8]) {
    Reg t[8];
    for (int j = 0; j < 4; ++j) {
      t[j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x20);
      t[4 + j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x31);
    }
    for (int i = 0; i < 8; ++i) r[i] = t[i];
  }
};

using Avx2Ops = BlockedOps<Ymm, /*kRows=*/6, /*kVecs=*/2, /*kTailRows=*/5, /*kSmallRows=*/4>;

}  // namespace

void run_avx2(const FwdParams& params) {
  dispatch_dtype(params.dtype, [&](auto tag) { forward<decltype(tag), Avx2Ops>(params); });
}

void run_avx2(const BwdParams& params) {
  dispatch_dtype(params.dtype, [&](auto tag) { Backward<decltype(tag), Avx2Ops>(params).run(); });
}

}  // namespace cpu
}  // namespace flashmask
#endif
