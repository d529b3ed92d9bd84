// Online softmax of the forward kernels (sm80 and Hopper), in base 2 with the softmax
// scale folded into one FMA per score: the running row max and sum of a thread's rows,
// the rescale factor of the old output when the max grows, and the row's LSE. Also the
// probability and score gradient the backward kernels recompute from the forward's LSE.
#pragma once

#include <cmath>

#include "kernel_common.cuh"

namespace flashmask {
namespace cuda {

// Here, not in kernel_common.cuh: the backward recomputes this file's softmax by its formulas.
// A score's probability, P = exp2(S * scale_log2 - base): base is the row's max of
// S * scale_log2 (forward) or its lse * log2 e (backward).
__device__ __forceinline__ float score_prob(float s, float scale_log2, float base) {
  return exp2f(fmaf(s, scale_log2, -base));
}
// The score's gradient through the softmax, dS = P (dP - rowsum(dO * O)).
__device__ __forceinline__ float score_grad(float p, float dp, float rowsum) { return p * (dp - rowsum); }

// Max and sum over the four threads (t = lane & 3) that share a row of an mma fragment.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(kFullWarp, x, 1));
  return fmaxf(x, __shfl_xor_sync(kFullWarp, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(kFullWarp, x, 1);
  return x + __shfl_xor_sync(kFullWarp, x, 2);
}

// One row's step: the tile's scaled max `mx` joins the running max; returns the exp2 base
// of this tile's probabilities and sets alpha, the factor of the old sum and output. A row
// with no unmasked key so far keeps max -inf and uses base 0 (no inf - inf).
__device__ __forceinline__ float softmax_row_step(float& row_max, float mx, float& alpha) {
  const float m_new = fmaxf(row_max, mx);
  const float base = m_new == -INFINITY ? 0.f : m_new;
  alpha = exp2f(row_max - base);
  row_max = m_new;
  return base;
}

// The row's final sum over its quad, its 1 / sum (0 for a row with no unmasked key, whose
// output is 0) and its natural-log LSE (-inf for such a row).
struct RowNormaliser {
  float l, inv;
  __device__ __forceinline__ explicit RowNormaliser(float row_sum) : l(quad_sum(row_sum)) {
    inv = l > 0.f ? 1.f / l : 0.f;
  }
  __device__ __forceinline__ float lse(float row_max) const {
    return l > 0.f ? (row_max + log2f(l)) * kLn2 : -INFINITY;
  }
};

// The sm80 forward's rows: MI m16 tiles of two rows each, S of one key tile as NT n8
// chunks. One max and one sum chain per row; the old O is rescaled in the same pass.
template <int MI, int NT, int DT>
__device__ __forceinline__ void online_softmax_rows(float (&acc_s)[MI][NT][4], float (&acc_o)[MI][DT][4],
                                                    float (&row_max)[MI][2], float (&row_sum)[MI][2],
                                                    float scale_log2) {
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(acc_s[mi][nt][2 * r], acc_s[mi][nt][2 * r + 1]));
      float alpha;
      const float base = softmax_row_step(row_max[mi][r], quad_max(mx) * scale_log2, alpha);
      float sum = row_sum[mi][r] * alpha;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) {
        acc_o[mi][dt][2 * r] *= alpha;
        acc_o[mi][dt][2 * r + 1] *= alpha;
      }
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float pv = score_prob(acc_s[mi][nt][2 * r + c], scale_log2, base);
          acc_s[mi][nt][2 * r + c] = pv;
          sum += pv;
        }
      row_sum[mi][r] = sum;
    }
}

// The Hopper consumer's two rows (row0 and row0 + 8 of its m64 fragment): S of one key
// tile as NT n8 chunks, element 4j + 2r + c; P leaves as the wgmma A fragments of P V
// (16 keys per k step: chunk j is k step j / 2, registers 2 (j % 2) + r).
//
// Lazy rescaling by speculation (perf-notes v58): once every row of the warp has a
// reference max, a tile's probabilities are taken against it without the tile's own max,
// and kept where each thread's partial sum of each row stays below 2^kRescaleSlack (so
// every P does, as under v56's slack rule, and alpha is 1: O is not rescaled). Otherwise
// (a jump of the scores, an overflow to inf, NaN) the warp redoes the tile from the raw
// scores, which stay in acc_s, with the tile's max: the eager step, which every tile takes
// until the warp's rows all have a reference. The max's reduction (an FMNMX tree and two
// shuffles per row) is then off the path from the S wait to the exponentials.
template <typename T, int NT>
struct OnlineSoftmax {
  static_assert(NT >= 4 && NT % 2 == 0, "four partial accumulators, whole k steps of 16 keys");
  static constexpr float kPartialBound = 1 << int(kRescaleSlack);
  float row_max[2], row_sum[2];
  bool speculate;  // warp-uniform: every row of the warp has a finite reference max
  __device__ __forceinline__ void reset() {
#pragma unroll
    for (int r = 0; r < 2; ++r) row_max[r] = -INFINITY, row_sum[r] = 0.f;
    speculate = false;
  }
  // Row r's tile max, scaled. Over four partial maxima, each from its first chunk's two
  // scores: one chain of 16 dependent operations per row sat on the consumers' path (v54).
  static __device__ __forceinline__ float tile_max(const float (&s)[NT * 4], int r, float scale_log2) {
    const auto pair_max = [&](int j) { return fmaxf(s[4 * j + 2 * r], s[4 * j + 2 * r + 1]); };
    float part[4] = {pair_max(0), pair_max(1), pair_max(2), pair_max(3)};
#pragma unroll
    for (int j = 4; j < NT; ++j) part[j % 4] = fmaxf(part[j % 4], pair_max(j));
    return quad_max(fmaxf(fmaxf(part[0], part[1]), fmaxf(part[2], part[3]))) * scale_log2;
  }
  // Row r's P (score_prob against base) into pa, and the thread's sum of it (four
  // partial sums, each from its first chunk's two probabilities).
  static __device__ __forceinline__ float probs(const float (&s)[NT * 4], uint32_t (&pa)[NT / 2][4], int r,
                                                float scale_log2, float base) {
    float sum[4];
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const float p0 = score_prob(s[4 * j + 2 * r], scale_log2, base);
      const float p1 = score_prob(s[4 * j + 2 * r + 1], scale_log2, base);
      pa[j / 2][2 * (j % 2) + r] = Pack<T>::two(p0, p1);
      sum[j % 4] = j < 4 ? p0 + p1 : (sum[j % 4] + p0) + p1;
    }
    return (sum[0] + sum[1]) + (sum[2] + sum[3]);
  }
  // S (acc_s) becomes P (pa); returns whether O needs its rescale by alpha (warp-uniform).
  __device__ __forceinline__ bool update(const float (&acc_s)[NT * 4], uint32_t (&pa)[NT / 2][4],
                                         float scale_log2, float (&alpha)[2]) {
    if (speculate) {
      const float sum[2] = {probs(acc_s, pa, 0, scale_log2, row_max[0]), probs(acc_s, pa, 1, scale_log2, row_max[1])};
      if (__all_sync(kFullWarp, sum[0] < kPartialBound && sum[1] < kPartialBound)) {
        row_sum[0] += sum[0];
        row_sum[1] += sum[1];
        return false;
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float base = softmax_row_step(row_max[r], tile_max(acc_s, r, scale_log2), alpha[r]);
      row_sum[r] = fmaf(row_sum[r], alpha[r], probs(acc_s, pa, r, scale_log2, base));
    }
    speculate = __all_sync(kFullWarp, row_max[0] != -INFINITY && row_max[1] != -INFINITY);
    return __any_sync(kFullWarp, alpha[0] != 1.f || alpha[1] != 1.f);
  }
};

}  // namespace cuda
}  // namespace flashmask
