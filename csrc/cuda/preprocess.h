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
// head) and query block the key tiles it visits (visits, rows of fwd_visits_stride ints)
// and their span (spans); the query blocks ordered by that count, most first (order); the
// work counter, zeroed.
struct FwdWorkOrder {
  int* visits;
  int2* spans;
  int* order;
  int* next_item;
};
// The visit counts are ranked 4 ints (16 bytes) at a time: rows padded to a multiple of 4.
constexpr int kVisitsPerLoad = 4;
__host__ __device__ inline int fwd_visits_stride(int m_blocks) {
  return (m_blocks + kVisitsPerLoad - 1) / kVisitsPerLoad * kVisitsPerLoad;
}
int launch_fwd_work_order(const MaskParams& mask, const AttentionShape& shape, int block_m, int block_n,
                          const TileBounds* tb, const FwdWorkOrder& wo, cudaStream_t stream);

}  // namespace cuda
}  // namespace flashmask
