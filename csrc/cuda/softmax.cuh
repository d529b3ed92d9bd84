// Online softmax of the forward kernels (sm80 and Hopper), in base 2 with the softmax
// scale folded into one FMA per score: the running row max and sum of a thread's rows,
// the rescale factor of the old output when the max grows, and the row's LSE.
#pragma once

#include <cmath>

#include "kernel_common.cuh"

namespace flashmask {
namespace cuda {

// Max and sum over the four threads (t = lane & 3) that share a row of an mma fragment.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
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

// The Hopper rows' step, lazily: the row's reference max moves only when the tile's scaled
// max `mx` passes it by more than kRescaleSlack (log2 units; also at the row's first unmasked
// tile, from -inf), so the probabilities stay below 2^kRescaleSlack and alpha is exactly 1 on
// most tiles, where the consumer skips the O rescale (perf-notes v56). Returns the exp2 base
// as softmax_row_step does.
__device__ __forceinline__ float lazy_row_step(float& row_max, float mx, float& alpha) {
  alpha = 1.f;
  if (mx > row_max + kRescaleSlack) {
    alpha = exp2f(row_max - mx);
    row_max = mx;
  }
  return row_max == -INFINITY ? 0.f : row_max;
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
          const float pv = exp2f(fmaf(acc_s[mi][nt][2 * r + c], scale_log2, -base));
          acc_s[mi][nt][2 * r + c] = pv;
          sum += pv;
        }
      row_sum[mi][r] = sum;
    }
}

// The Hopper consumer's two rows (row0 and row0 + 8 of its m64 fragment): S of one key
// tile as NT n8 chunks, element 4j + 2r + c.
struct OnlineSoftmax {
  float row_max[2], row_sum[2];
  __device__ __forceinline__ void reset() {
#pragma unroll
    for (int r = 0; r < 2; ++r) row_max[r] = -INFINITY, row_sum[r] = 0.f;
  }
  // S becomes P = exp2(S * scale_log2 - base); alpha (lazy_row_step: mostly 1) rescales the
  // old O and sum. Max and sum
  // over four partial accumulators each: a single chain of 16 (max) or 32 (sum) dependent
  // operations per row sat on the path between the Hopper consumers' turns. Each partial
  // starts from its first chunk's two scores, not from -inf or 0 (8 FMNMX and 8 FADD fewer
  // per tile; perf-notes v54).
  template <int NT>
  __device__ __forceinline__ void update(float (&acc_s)[NT * 4], float scale_log2, float (&alpha)[2]) {
    static_assert(NT >= 4, "four partial accumulators (176-key tiles: 6, 6, 5 and 5 chunks)");
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const auto pair_max = [&](int j) { return fmaxf(acc_s[4 * j + 2 * r], acc_s[4 * j + 2 * r + 1]); };
      float part[4] = {pair_max(0), pair_max(1), pair_max(2), pair_max(3)};
#pragma unroll
      for (int j = 4; j < NT; ++j) part[j % 4] = fmaxf(part[j % 4], pair_max(j));
      const float mx = quad_max(fmaxf(fmaxf(part[0], part[1]), fmaxf(part[2], part[3]))) * scale_log2;
      const float base = lazy_row_step(row_max[r], mx, alpha[r]);
      const auto prob = [&](int j, int c) -> float& {
        float& s = acc_s[4 * j + 2 * r + c];
        s = exp2f(fmaf(s, scale_log2, -base));
        return s;
      };
      // The same sums as from 0, in the same order: (0 + a) + b == a + b.
      float sum[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) sum[j] = prob(j, 0) + prob(j, 1);
#pragma unroll
      for (int j = 4; j < NT; ++j) {
        sum[j % 4] += prob(j, 0);
        sum[j % 4] += prob(j, 1);
      }
      row_sum[r] = fmaf(row_sum[r], alpha[r], (sum[0] + sum[1]) + (sum[2] + sum[3]));
    }
  }
};

}  // namespace cuda
}  // namespace flashmask
