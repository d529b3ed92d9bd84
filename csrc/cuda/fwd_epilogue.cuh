// The forwards' epilogue (sm80 and Hopper): a thread's two rows of the output tile are
// normalised by their softmax sums and written to O with 4-byte stores, and their LSE
// (natural log) to p.lse. Rows at or past seqlen_q are not written.
#pragma once

#include "kernel_common.cuh"
#include "softmax.cuh"

namespace flashmask {
namespace cuda {

// The output and LSE of (batch b, head h): O's rows and the LSE row that store_o_lse writes.
template <typename T>
struct FwdOutput {
  T* o;
  float* lse;
  __device__ __forceinline__ FwdOutput(const FwdParams& p, int b, int h)
      : o(static_cast<T*>(p.out) + b * p.out_strides.batch + h * p.out_strides.head),
        lse(p.lse + (static_cast<int64_t>(b) * p.shape.num_heads + h) * p.shape.seqlen_q) {}
};

// Rows row0 and row0 + 8 of `out`; acc(j, r, c) is the unnormalised output of row r at
// column 8j + 2t + c (DT n8 chunks of the head dim).
template <typename T, int DT, typename Acc>
__device__ __forceinline__ void store_o_lse(const FwdParams& p, const FwdOutput<T>& out, int row0, int t,
                                            const float (&row_max)[2], const float (&row_sum)[2], Acc&& acc) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const RowNormaliser norm(row_sum[r]);
    const int row = row0 + 8 * r;
    if (row < p.shape.seqlen_q) {
      T* o = out.o + static_cast<int64_t>(row) * p.out_strides.row;
#pragma unroll
      for (int j = 0; j < DT; ++j)
        *reinterpret_cast<uint32_t*>(o + j * 8 + 2 * t) = Pack<T>::two(acc(j, r, 0) * norm.inv, acc(j, r, 1) * norm.inv);
      if (t == 0) out.lse[row] = norm.lse(row_max[r]);
    }
  }
}

}  // namespace cuda
}  // namespace flashmask
