// The forwards' epilogue: a thread's two rows of the output tile normalised by their
// softmax sums, their LSE (natural log) written to p.lse, and the output either written
// to O with 16-byte stores (sm80, and the Hopper forward where its config does not stage
// the output: D = 256, D = 64's three consumers and D = 128's 176-key tiles) or handed to
// a staging function (fwd_sm90_epilogue.cuh). Rows outside [0, seqlen_q) are not written (the
// Hopper forward's shifted first block starts below row 0, its last may end past seqlen_q:
// preprocess.h, FwdRowShifts).
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

// Whether output row `row` exists: [0, seqlen_q).
__device__ __forceinline__ bool row_stored(const FwdParams& p, int row) {
  return static_cast<unsigned>(row) < static_cast<unsigned>(p.shape.seqlen_q);
}

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
    if (t == 0 && row_stored(p, row)) lse[row] = norm.lse(row_max[r]);
#pragma unroll
    for (int j = 0; j < DT; ++j) put(j, r, Pack<T>::two(acc(j, r, 0) * norm.inv, acc(j, r, 1) * norm.inv));
  }
}

// The 4 x 4 words of a quad (lanes 4i .. 4i + 3) transposed: thread t passes w[k] and gets
// back, as w[k], the word that thread k passed as its w[t]. Two exchange steps (partners
// t ^ 1, then t ^ 2), each swapping the two words of a pair whose bit differs from t's.
__device__ __forceinline__ void quad_transpose(uint32_t (&w)[4], int t) {
#pragma unroll
  for (int bit = 1; bit <= 2; bit <<= 1) {
    const bool upper = t & bit;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (k & bit) continue;
      const uint32_t got = __shfl_xor_sync(kFullWarp, upper ? w[k] : w[k | bit], bit);
      if (upper)
        w[k] = got;
      else
        w[k | bit] = got;
    }
  }
}

// finish_rows with the output stored straight to O, 16 bytes per store: a quad holds a
// row's n8 chunk as four 4-byte pairs, so each four chunks are transposed across the quad
// (thread t gets chunk 4g + t whole). A warp's store then writes 64 contiguous bytes of
// each of its 8 rows instead of 16: a quarter of the store instructions, each touching the
// same 8 rows (perf-notes v50).
template <typename T, int DT, typename Acc>
__device__ __forceinline__ void store_o_lse(const FwdParams& p, const FwdOutput<T>& out, int row0, int t,
                                            const float (&row_max)[2], const float (&row_sum)[2], Acc&& acc) {
  static_assert(DT % 4 == 0, "four n8 chunks per 16-byte store");
  uint32_t pairs[2][DT];
  finish_rows<T, DT>(p, out.lse, row0, t, row_max, row_sum, acc,
                     [&](int j, int r, uint32_t pair) { pairs[r][j] = pair; });
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
#pragma unroll
    for (int g = 0; g < DT / 4; ++g) {
      uint32_t w[4] = {pairs[r][4 * g], pairs[r][4 * g + 1], pairs[r][4 * g + 2], pairs[r][4 * g + 3]};
      quad_transpose(w, t);  // every lane takes part, rows out of range too
      if (row_stored(p, row))
        *reinterpret_cast<uint4*>(out.o + static_cast<int64_t>(row) * p.out_strides.row + (4 * g + t) * 8) =
            make_uint4(w[0], w[1], w[2], w[3]);
    }
  }
}

}  // namespace cuda
}  // namespace flashmask
