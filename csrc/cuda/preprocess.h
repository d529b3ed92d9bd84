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
// largest first (order); the work counter, zeroed.
struct FwdWorkOrder {
  long long* rank_keys;
  int2* spans;
  int* order;
  int* next_item;
};
// A query block's rank key: its lowest visited key tile, then its visit count. Ranked largest
// first, ties by the later block, so the blocks of one packed document run one after another
// (their CTAs share its K/V in L2) and, inside it, the longest first; with one span start
// (causal, full) the order is by visit count alone. A block that visits nothing ranks last.
__host__ __device__ inline long long fwd_rank_key(int span_begin, int visits) {
  return visits > 0 ? (static_cast<long long>(span_begin) << 32) | visits : 0;
}
// The rank keys are read 2 (16 bytes) at a time: rows padded to a multiple of 2 with -1,
// which ranks after every block.
constexpr int kRankKeysPerLoad = 2;
__host__ __device__ inline int fwd_rank_stride(int m_blocks) {
  return (m_blocks + kRankKeysPerLoad - 1) / kRankKeysPerLoad * kRankKeysPerLoad;
}
// The Hopper forward's query blocks of block_m rows are shifted back by the padding the
// sequence leaves, row_shift rows (block m covers [m * block_m - row_shift, (m + 1) * block_m -
// row_shift)), so that the ragged block is the first and not the last: under a causal mask the
// last block sees every key tile and the first one or two (at D=64's 192-row blocks, 8K: the
// last block's padding was 1.5% of a head's tiles, the first block's is 0.02%; perf-notes v76).
// Only D=64's three-consumer kernel shifts (FwdSm90Config::row_shift).
__host__ __device__ inline int fwd_row_shift(int seqlen_q, int block_m) {
  return (block_m - seqlen_q % block_m) % block_m;
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
int launch_fwd_work_order(const MaskParams& mask, const AttentionShape& shape, int block_m, int block_n,
                          int row_shift, const TileBounds* tb, const FwdWorkOrder& wo, cudaStream_t stream);

}  // namespace cuda
}  // namespace flashmask
