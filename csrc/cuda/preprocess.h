// The O(N) preprocessing kernels that run before the attention kernels, on the same stream.
#pragma once

#include <cuda_runtime_api.h>
#include <vector_types.h>

#include "flashmask/mask.h"
#include "flashmask/params.h"

namespace flashmask {
namespace cuda {

// Per (batch, mask head, key tile of block_n columns): the min/max of each bound over
// the tile's columns (mask.h), which the kernels test to skip or fully keep a tile.
void launch_tile_bounds(const MaskParams& mask, const AttentionShape& shape, int block_n,
                        TileBounds* out, cudaStream_t stream);
// The Hopper forward's schedule (tile_scheduler.cuh), in the workspace: per (batch, mask
// head) and query block its rank key (rank_keys, rows of fwd_rank_stride keys; fwd_rank_key)
// and the span of the key tiles it visits (spans); the query blocks in rank-key order,
// largest first (order); the work counter, zeroed; the row shift chosen for the call
// (FwdRowShifts) and the candidates' costs it was chosen by.
struct FwdWorkOrder {
  long long* rank_keys;
  int2* spans;
  int* order;
  int* next_item;
  int* row_shift;
  unsigned long long* shift_costs;  // kFwdMaxShifts
};
// A query block's rank key: its lowest visited key tile, then its visit count. Ranked largest
// first, ties by the later block, so the blocks of one packed document run one after another
// (their CTAs share its K/V in L2) and, inside it, the longest first; with one span start
// (causal, full) the order is by visit count alone. A block that visits nothing ranks last.
__host__ __device__ inline long long fwd_rank_key(int span_begin, int visits) {
  return visits > 0 ? (static_cast<long long>(span_begin) << 32) | visits : 0;
}
__host__ __device__ inline int fwd_rank_visits(long long rank_key) { return static_cast<int>(rank_key & 0xffffffff); }
// The rank keys are read 2 (16 bytes) at a time: rows padded to a multiple of 2 with -1,
// which ranks after every block.
constexpr int kRankKeysPerLoad = 2;
__host__ __device__ inline int fwd_rank_stride(int m_blocks) {
  return (m_blocks + kRankKeysPerLoad - 1) / kRankKeysPerLoad * kRankKeysPerLoad;
}
// The Hopper forward's query blocks of block_m rows are shifted back by row_shift rows (block
// m covers [m * block_m - row_shift, (m + 1) * block_m - row_shift)), chosen per call on the
// device among FwdRowShifts' candidates (perf-notes v80). The first candidate is the padding
// the sequence leaves, so that the ragged block is the first and not the last: under a causal
// mask the last block sees every key tile and the first one or two (at D=64's 192-row blocks,
// 8K: the last block's padding was 1.5% of a head's tiles, the first block's is 0.02%; v76).
// The others move the blocks' edges by one and two consumers' rows (kFwdShiftStep) more, so
// that a mask with an edge across every row (global_sliding_window's global rows) can have no
// block straddle it (v79: +2-4% on that mask's forward, while causal and document preferred
// the first). Only D=64's three-consumer kernel shifts (FwdSm90Config::kRaggedBlockFirst); the
// others have the one candidate 0.
constexpr int kFwdShiftStep = 64, kFwdMaxShifts = 3;
struct FwdRowShifts {
  int block_m, first, count;
  __host__ __device__ int candidate(int c) const { return (first + c * kFwdShiftStep) % block_m; }
  // The query blocks per (batch, mask head) that every candidate's rows fit in: the chosen
  // shift may leave the last block past seqlen_q (it visits nothing and writes no row).
  __host__ __device__ int query_blocks(int seqlen_q) const {
    int blocks = 0;
    for (int c = 0; c < count; ++c) {
      const int b = (seqlen_q + candidate(c) + block_m - 1) / block_m;
      blocks = b > blocks ? b : blocks;
    }
    return blocks;
  }
};
__host__ __device__ inline FwdRowShifts fwd_row_shifts(int seqlen_q, int block_m, bool ragged_first) {
  if (!ragged_first) return {block_m, 0, 1};
  return {block_m, (block_m - seqlen_q % block_m) % block_m, block_m / kFwdShiftStep};
}
// A candidate's cost, in hundredths of a whole key tile: the fit of the D=64 forward's time to
// its tiles and items on the 8K results of record (benchmarks/results/tile_cost_fit_8k.txt:
// a partial tile 1.38 whole ones, an item 0.73), summed over up to kFwdShiftSampleRows (batch,
// mask head) rows spread over the call. The cheapest is taken where it saves at least
// kShiftMinSavingPct percent of the first candidate's cost, else the first: a smaller margin is
// inside the fit's error (v80: document at 32K chose shift 0 by 0.16% of the cost, measured level
// to -1%; global_sliding_window saves 1.1% at 8K and 2.0% at 32K, measured +2-4%).
constexpr unsigned kWholeTileCost = 100, kPartialTileCost = 138, kItemCost = 73;
constexpr unsigned kShiftMinSavingPct = 1;
constexpr int kFwdShiftSampleRows = 16;
__host__ __device__ inline int chosen_row_shift(const FwdRowShifts& shifts, const unsigned long long* costs) {
  int best = 0;
  for (int c = 1; c < shifts.count; ++c)
    if (costs[c] < costs[best]) best = c;
  if (costs[best] * 100 > costs[0] * (100 - kShiftMinSavingPct)) best = 0;
  return shifts.candidate(best);
}
// The rows of a query block that starts at row0 (negative for a shifted first block) inside
// [0, seqlen_q): the first and how many.
struct BlockRows {
  int begin, count;
};
__host__ __device__ inline BlockRows block_rows(int row0, int block_m, int seqlen_q) {
  const int begin = row0 > 0 ? row0 : 0, end = row0 + block_m < seqlen_q ? row0 + block_m : seqlen_q;
  return {begin, end - begin};
}
// Chooses the row shift (FwdRowShifts; the costs' kernel runs only where there is a choice),
// then ranks the query blocks under it.
int launch_fwd_work_order(const MaskParams& mask, const AttentionShape& shape, int block_n, const FwdRowShifts& shifts,
                          const TileBounds* tb, const FwdWorkOrder& wo, cudaStream_t stream);

}  // namespace cuda
}  // namespace flashmask
