// The order in which the Hopper backward adds dQ into the fp32 dq accumulator (perf-notes
// v43), shared by its epilogue (bwd_sm90_epilogue.cuh: the writes) and
// flashmask_bwd_dq_convert_fragments_kernel (the reads).
//
// Query tile m (kTileRows rows) of a (batch, head) keeps the span its rows have in the
// row-major [sq_pad][D] layout, kTileRows * D floats, so the buffer and its zeroing stay as
// they are; inside it the floats are 64 x 64 parts (part p: columns 64p.., or rows 64p.. at
// D = 64, whose consumers split the rows), each two runs of 2048 floats (8 KB), the wgmma
// accumulator fragment of the part's warpgroup: thread u holds, of each n8 column chunk j,
// rows 16(u / 32) + (u % 32) / 4 and +8, columns 8j + 2(u % 4) and +1 (its accumulators
// 4j .. 4j + 3). A run is four chunks x 128 threads, each thread's values of a chunk in one
// group:
//  - D = 64 (128-row tiles): a float4 of both rows, one 16-byte store per chunk (perf-notes
//    v71: the D=64 backward +2-2.6% at 32K over pairs; D=128 measured level to -1.4% with it);
//  - 64-row tiles: two float2 groups, one per row (v43), the row halves apart.
// A warp's store is then 256 or 512 contiguous bytes (the SW128 row-major staging took twice
// the shared-memory wavefronts: each half-warp's rows r and r ^ 1 hit the same banks) and a
// run goes out as one 1-D bulk reduce-add.
#pragma once

namespace flashmask {
namespace cuda {

template <int kTileRows>
struct DqFragmentOrder {
  static_assert(kTileRows == 64 || kTileRows == 128, "64 x 64 parts by columns, or by rows at 128");
  static constexpr bool kPartsByRows = kTileRows == 128;
  static constexpr int kPartSide = 64, kPartFloats = kPartSide * kPartSide;
  static constexpr int kRunFloats = 2048;
  static constexpr int kGroup = kTileRows == 128 ? 4 : 2;  // floats a thread stores together
  static constexpr int kHalves = 4 / kGroup;               // groups per thread and chunk
  static constexpr int kRunGroups = kRunFloats / kGroup;
  // Float index of thread u's group h of n8 chunk j inside its run (j < 4: the run's own chunks).
  __host__ __device__ static constexpr int group_offset(int j, int h, int u) {
    return ((j * kHalves + h) * 128 + u) * kGroup;
  }
  // Group `q` of a part -> (row, col) of its first value inside the part: the group holds
  // (row, col) and (row, col + 1), then with kGroup = 4 (row + 8, col) and (row + 8, col + 1).
  __host__ __device__ static void part_position(int q, int& row, int& col) {
    const int run = q / kRunGroups, w = q % kRunGroups;
    const int j = run * 4 + w / (kHalves * 128), h = (w / 128) % kHalves, u = w % 128;
    row = 16 * (u / 32) + (u % 32) / 4 + 8 * h;
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
