// The forwards' epilogue: a thread's two rows of the output tile normalised by their
// softmax sums, their LSE (natural log) written to p.lse, and the output either written
// to O with 4-byte stores (sm80, and the Hopper forward where its config does not stage
// the output: D = 256 and D = 64's three consumers) or handed to a staging function
// (fwd_sm90_epilogue.cuh). Rows at or past seqlen_q are not written.
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

// Rows row0 and row0 + 8: writes their LSE and passes put(j, r, pair) the normalised
// output of row r at columns 8j + 2t, 8j + 2t + 1 packed in T; acc(j, r, c) is the
// unnormalised output of row r at column 8j + 2t + c (DT n8 chunks of the head dim).
template <typename T, int DT, typename Acc, typename Put>
__device__ __forceinline__ void finish_rows(const FwdParams& p, float* lse, int row0, int t, const float (&row_max)[2],
                                            const float (&row_sum)[2], Acc&& acc, Put&& put) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const RowNormaliser norm(row_sum[r]);
    const int row = row0 + 8 * r;
    if (t == 0 && row < p.shape.seqlen_q) lse[row] = norm.lse(row_max[r]);
#pragma unroll
    for (int j = 0; j < DT; ++j) put(j, r, Pack<T>::two(acc(j, r, 0) * norm.inv, acc(j, r, 1) * norm.inv));
  }
}

// finish_rows with the output stored straight to O.
template <typename T, int DT, typename Acc>
__device__ __forceinline__ void store_o_lse(const FwdParams& p, const FwdOutput<T>& out, int row0, int t,
                                            const float (&row_max)[2], const float (&row_sum)[2], Acc&& acc) {
  finish_rows<T, DT>(p, out.lse, row0, t, row_max, row_sum, acc, [&](int j, int r, uint32_t pair) {
    const int row = row0 + 8 * r;
    if (row < p.shape.seqlen_q)
      *reinterpret_cast<uint32_t*>(out.o + static_cast<int64_t>(row) * p.out_strides.row + j * 8 + 2 * t) = pair;
  });
}

}  // namespace cuda
}  // namespace flashmask
