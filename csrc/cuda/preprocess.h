// The O(N) preprocessing kernels that run before the attention kernels, on the same stream.
#pragma once

#include <cuda_runtime_api.h>

#include "flashmask/mask.h"
#include "flashmask/params.h"

namespace flashmask {
namespace cuda {

// Per (batch, mask head, key tile of block_n columns): the min/max of each bound over
// the tile's columns (mask.h), which the kernels test to skip or fully keep a tile.
void launch_tile_bounds(const MaskParams& mask, const AttentionShape& shape, int block_n,
                        TileBounds* out, cudaStream_t stream);
// The Hopper forward's schedule (tile_scheduler.cuh): per (batch, mask head), query blocks
// ordered by the key tiles they visit, most first, and the work counter zeroed.
int launch_fwd_work_order(const MaskParams& mask, const AttentionShape& shape, int block_m, int block_n,
                          const TileBounds* tb, int* order, int* next_item, cudaStream_t stream);

}  // namespace cuda
}  // namespace flashmask
