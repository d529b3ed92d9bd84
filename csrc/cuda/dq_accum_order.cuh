// The order in which the Hopper backward adds dQ into the fp32 dq accumulator (perf-notes
// v43), shared by its epilogue (bwd_sm90_epilogue.cuh: the writes) and
// flashmask_bwd_dq_convert_fragments_kernel (the reads).
//
// Query tile m (kTileRows rows) of a (batch, head) keeps the span its rows have in the
// row-major [sq_pad][D] layout, kTileRows * D floats, so the buffer and its zeroing stay as
// they are; inside it the floats are 64 x 64 parts (part p: columns 64p.., or rows 64p.. at
// D = 64, whose consumers split the rows), each two runs of 2048 floats (8 KB): four n8
// column chunks x two row halves x 128 threads x float2, the wgmma accumulator fragment of the
// part's warpgroup: thread u's pair (r, j) sits at row 16(u / 32) + (u % 32) / 4 + 8r, columns
// 8j + 2(u % 4) and +1. A warp's 8-byte store is then 256 contiguous bytes (the SW128
// row-major staging took twice the shared-memory wavefronts: each half-warp's rows r and r ^ 1
// hit the same banks) and a run goes out as one 1-D bulk reduce-add.
#pragma once

namespace flashmask {
namespace cuda {

template <int kTileRows>
struct DqFragmentOrder {
  static_assert(kTileRows == 64 || kTileRows == 128, "64 x 64 parts by columns, or by rows at 128");
  static constexpr bool kPartsByRows = kTileRows == 128;
  static constexpr int kPartSide = 64, kPartFloats = kPartSide * kPartSide;
  static constexpr int kRunFloats = 2048, kRunPairs = kRunFloats / 2;
  // Float index of thread u's pair (r, j) inside its run (j < 4: the run's own chunks).
  __host__ __device__ static constexpr int pair_offset(int j, int r, int u) { return ((j * 2 + r) * 128 + u) * 2; }
  // Pair `q` of a part -> (row, col) of its first value inside the part (the second is col + 1).
  __host__ __device__ static void part_position(int q, int& row, int& col) {
    const int run = q / kRunPairs, w = q % kRunPairs;
    const int j = run * 4 + w / 256, r = (w / 128) % 2, u = w % 128;
    row = 16 * (u / 32) + (u % 32) / 4 + 8 * r;
    col = 8 * j + 2 * (u % 4);
  }
  // Part p's first row and column in its tile.
  __host__ __device__ static void part_origin(int p, int& row0, int& col0) {
    row0 = kPartsByRows ? kPartSide * p : 0;
    col0 = kPartsByRows ? 0 : kPartSide * p;
  }
};

}  // namespace cuda
}  // namespace flashmask
