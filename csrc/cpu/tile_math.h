// fp32 tile arithmetic: the reference matrix product, exp2, small helpers.
//
// Plain loops written so that GCC/Clang at -O3 vectorise them for whatever
// ISA the function they are inlined into targets (see kernels_*.cc);
// reductions carry `omp simd` because without -ffast-math the compiler may
// not reorder a floating-point sum or max on its own.
#pragma once

#include <cstdint>
#include <cstring>

#include "convert.h"
#include "flashmask/softmax.h"  // kLog2e, kLn2
#include "tiling.h"

namespace flashmask {
namespace cpu {

// How a pass turns raw scores into log2 units (times softmax_scale * log2(e)):
// inside the softmax's exponentials, saving a pass over the scores; for a
// scale of 0 (uniform attention, which the kernel tests cover) in a pass of its
// own before the masking instead, since a masked score's -inf times 0 is NaN.
struct ScoreScale {
  explicit ScoreScale(float log2_scale)
      : separate_pass(!(log2_scale > 0.f)), in_pass(log2_scale), in_exp(separate_pass ? 1.f : log2_scale) {}
  bool separate_pass;
  float in_pass;  // the factor of the separate pass, if any
  float in_exp;   // the factor inside the exponentials (1 after a separate pass)
};

// dst[rows x cols] (dense) = src[rows x cols] (row stride lds); nothing to
// do when src already is dst (a tile built in place, see Ops::staging).
inline void copy_tile(const float* src, int rows, int cols, int lds, float* dst) {
  if (src == dst && lds == cols) return;
  for (int r = 0; r < rows; ++r) std::memcpy(dst + r * cols, src + r * lds, cols * sizeof(float));
}

// Operand policies ("Ops") give the tile products of forward_impl.h and
// backward_impl.h:
//   Operand          the element type the product reads;
//   pack_a / pack_b  fp32 tile -> the layout gemm reads as A [M x K] / B [K x N], into dst;
//   staging          where to build the fp32 tile that will be packed into dst: dst
//                    itself for fp32 operands (packing then copies nothing), else scratch;
//   a_view / b_view  the packed form of a (sub-)tile used at once: fp32 policies hand
//                    the tile itself over, bf16 packs it into scratch;
//   b_at             element (k, n) of a packed B with row stride ldb;
//   gemm             C[M x N] = (accumulate ? C : 0) + A B, all with row strides;
//   transpose        dst[c][r] = src[r][c] of an fp32 rows x cols block, both multiples of
//                    32 (tiles and padded head dims are), with row strides lds / ldd;
//   Rows             the softmax's row operations (ScalarRows below, or VectorRows);
//   ThreadState      constructed on each thread before its products (see NoThreadState).
// K must be even for bf16 operands (k runs in pairs).
template <typename T>
struct OperandView {
  const T* data;
  int ld;  // row stride, in elements of the logical matrix
};

// Per-thread set-up a policy needs while its products run (AMX: the tile
// configuration); built with a parallel region's scratch, on its thread.
struct NoThreadState {};

// The fp32 operands of ReferenceOps and BlockedOps: plain row-major.
struct F32Operands {
  using Operand = float;
  using ThreadState = NoThreadState;
  static constexpr int kBoxRowStep = kExtentRowStep, kBoxColStep = kExtentColStep;  // tiling.h
  static void pack_a(const float* src, int rows, int cols, int lds, float* dst) {
    copy_tile(src, rows, cols, lds, dst);
  }
  static void pack_b(const float* src, int rows, int cols, int lds, float* dst) {
    copy_tile(src, rows, cols, lds, dst);
  }
  static float* staging(float* dst, float*) { return dst; }
  static OperandView<float> a_view(const float* src, int, int, int lds, float*) {
    return {src, lds};
  }
  static OperandView<float> b_view(const float* src, int, int, int lds, float*) {
    return {src, lds};
  }
  static const float* b_at(const float* b, int ldb, int k, int n) { return b + k * ldb + n; }
};

// 2^x, relative error ~1e-7, exactly 0 for x < -126.5 (so for -inf too: a masked score
// contributes exactly nothing), over a number type N: float (ScalarF32, fast_exp2) or a
// vector register (VectorRows, microkernel.h), with N's broadcast, min and max (the second
// operand where either is a NaN, so a NaN stays one), round (to nearest, ties to even), sub,
// fma (a * b + c), mul and pow2 (2^n of an integral n in [-127, 127], +0 for -127: the
// exponent field). Branch-free so plain loops over it vectorise; libm's exp2f would keep
// them scalar. Forced inline, as the other helpers the softmax loops call (kernel_deps.h):
// left to GCC's size heuristics, GCC 13 with -march=native kept it out of line in
// kernels_avx512.cc, every exponential a scalar call, and the whole kernel ran at 0.43x
// (docs/cpu-kernel.md).
template <class N>
[[gnu::always_inline]] inline typename N::Reg exp2_of(typename N::Reg x) {
  // Taylor series of 2^f = e^(f ln 2) for f in [-0.5, 0.5], highest degree first; the
  // degree-7 term is below 2^-23 there.
  constexpr float kPoly[] = {1.5403530393381608e-4f, 1.3333558146428443e-3f, 9.6181291076284772e-3f,
                             5.5504108664821580e-2f, 2.4022650695910071e-1f, 6.9314718055994531e-1f, 1.f};
  x = N::min(N::broadcast(127.f), N::max(N::broadcast(-127.f), x));
  const typename N::Reg n = N::round(x);
  const typename N::Reg f = N::sub(x, n);  // in [-0.5, 0.5]
  typename N::Reg p = N::broadcast(kPoly[0]);
  for (int i = 1; i < static_cast<int>(sizeof(kPoly) / sizeof(kPoly[0])); ++i) p = N::fma(p, f, N::broadcast(kPoly[i]));
  return N::mul(p, N::pow2(n));
}

// exp2_of's operations on a float.
struct ScalarF32 {
  using Reg = float;
  static float broadcast(float x) { return x; }
  static float max(float a, float b) { return a > b ? a : b; }
  static float min(float a, float b) { return a < b ? a : b; }
  // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
  static float round(float x) { return (x + 12582912.f) - 12582912.f; }
  static float sub(float a, float b) { return a - b; }
  static float fma(float a, float b, float c) { return a * b + c; }
  static float mul(float a, float b) { return a * b; }
  static float pow2(float n) { return bits_float(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23); }
};

[[gnu::always_inline]] inline float fast_exp2(float x) { return exp2_of<ScalarF32>(x); }

[[gnu::always_inline]] inline void scale_row(float* x, int n, float s) {
  for (int i = 0; i < n; ++i) x[i] *= s;
}

// The softmax's row operations (Ops::Rows of every policy): plain loops for the reference
// policy, which the compiler vectorises for the ISA of the function they are inlined into;
// the vector policies run microkernel.h's VectorRows, the same arithmetic on explicit
// registers. n is the row's length (a box's width: a multiple of 16, tiling.h).
struct ScalarRows {
  // The largest of x[0..n) (-inf for none; a NaN is passed over).
  [[gnu::always_inline]] static float max(const float* x, int n) {
    float m = -__builtin_inff();
#pragma omp simd reduction(max : m)
    for (int i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
    return m;
  }
  // s = exp2(s * scale - ref) in place; returns the row's sum.
  [[gnu::always_inline]] static float exp2_sum(float* s, int n, float scale, float ref) {
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < n; ++i) {
      s[i] = fast_exp2(s[i] * scale - ref);
      sum += s[i];
    }
    return sum;
  }
  // The backward's P and dS of one row of keys: p = exp2(p * scale - lse), d = p * (d - delta).
  [[gnu::always_inline]] static void probabilities(float* __restrict p, float* __restrict d, int n, float scale,
                                                   const float* __restrict lse, const float* __restrict delta) {
    for (int i = 0; i < n; ++i) {
      p[i] = fast_exp2(p[i] * scale - lse[i]);
      d[i] = p[i] * (d[i] - delta[i]);
    }
  }
};

// The simple version of the product, used as it is by the generic variant
// and what the register-blocked micro-kernels (microkernel.h, Bf16Ops in
// kernels_avx512.cc) compute faster: a kGemmRows x kGemmCols accumulator
// block the compiler keeps in vector registers across the k loop. M must be
// a multiple of kGemmRows, N of kGemmCols / 2 (a last half block).
constexpr int kGemmRows = 4;
constexpr int kGemmCols = 32;

struct ReferenceOps : F32Operands {
  using Rows = ScalarRows;

  static void gemm(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
                   int ldc, bool accumulate) {
    for (int i0 = 0; i0 < M; i0 += kGemmRows) {
      int n0 = 0;
      for (; n0 + kGemmCols <= N; n0 += kGemmCols)
        block<kGemmCols>(K, A + i0 * lda, lda, B + n0, ldb, C + i0 * ldc + n0, ldc, accumulate);
      if (n0 < N) block<kGemmCols / 2>(K, A + i0 * lda, lda, B + n0, ldb, C + i0 * ldc + n0, ldc, accumulate);
    }
  }

  // In 8 x 8 blocks, element by element (the vector policies shuffle whole registers:
  // BlockedOps::transpose).
  static void transpose(const float* __restrict src, int rows, int cols, int lds, float* __restrict dst, int ldd) {
    constexpr int kBlock = 8;
    for (int r0 = 0; r0 < rows; r0 += kBlock)
      for (int c0 = 0; c0 < cols; c0 += kBlock)
        for (int c = 0; c < kBlock; ++c)
          for (int r = 0; r < kBlock; ++r) dst[(c0 + c) * ldd + r0 + r] = src[(r0 + r) * lds + c0 + c];
  }

 private:
  template <int kCols>
  static void block(int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                    bool accumulate) {
    float acc[kGemmRows][kCols];
    for (int r = 0; r < kGemmRows; ++r)
      for (int c = 0; c < kCols; ++c) acc[r][c] = accumulate ? C[r * ldc + c] : 0.f;
    for (int k = 0; k < K; ++k) {
      const float* y = B + k * ldb;
      for (int r = 0; r < kGemmRows; ++r) {
        const float x = A[r * lda + k];
        for (int c = 0; c < kCols; ++c) acc[r][c] += x * y[c];
      }
    }
    for (int r = 0; r < kGemmRows; ++r)
      for (int c = 0; c < kCols; ++c) C[r * ldc + c] = acc[r][c];
  }
};

}  // namespace cpu
}  // namespace flashmask
