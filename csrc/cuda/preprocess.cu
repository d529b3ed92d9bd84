// The preprocessing kernels (preprocess.h).
#include "preprocess.h"

#include "flashmask_launch.cuh"  // prepare_smem, ceil_div
#include "kernel_common.cuh"
#include "runtime.h"

namespace flashmask {
namespace cuda {

namespace {

constexpr int kWarpSize = 32;
constexpr unsigned kFullWarp = 0xffffffffu;
constexpr int kTileBoundsThreads = 256;  // 8 key tiles per block
constexpr int kWorkOrderThreads = 512;   // 16 query blocks counted at once
// The work order's visit counts are read 4 ints (16 bytes) at a time (LDS.128).
constexpr int kVisitsPerLoad = 4;

// One warp per key tile: min/max of the normalised bounds over its valid columns.
__global__ void tile_bounds_kernel(const MaskParams mask, int seqlen_q, int seqlen_k, int block_n,
                                   int n_tiles, int64_t total_tiles, TileBounds* out) {
  const int64_t tile = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (tile >= total_tiles) return;
  const int64_t bhm = tile / n_tiles;
  const int n = static_cast<int>(tile % n_tiles);
  const int nb = mask.num_bounds;
  const int c_end = min(n * block_n + block_n, seqlen_k);
  TileBounds t = empty_tile_bounds();
  for (int c = n * block_n + lane; c < c_end; c += kWarpSize)
    extend_tile_bounds(t, load_column_bounds(
                              mask.startend_row_indices + (bhm * seqlen_k + c) * nb, nb,
                              mask.causal, seqlen_q));
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off >>= 1) {
    t.lts_min = min(t.lts_min, __shfl_xor_sync(kFullWarp, t.lts_min, off));
    t.lts_max = max(t.lts_max, __shfl_xor_sync(kFullWarp, t.lts_max, off));
    t.lte_min = min(t.lte_min, __shfl_xor_sync(kFullWarp, t.lte_min, off));
    t.lte_max = max(t.lte_max, __shfl_xor_sync(kFullWarp, t.lte_max, off));
    t.uts_min = min(t.uts_min, __shfl_xor_sync(kFullWarp, t.uts_min, off));
    t.uts_max = max(t.uts_max, __shfl_xor_sync(kFullWarp, t.uts_max, off));
    t.ute_min = min(t.ute_min, __shfl_xor_sync(kFullWarp, t.ute_min, off));
    t.ute_max = max(t.ute_max, __shfl_xor_sync(kFullWarp, t.ute_max, off));
  }
  if (lane == 0) out[tile] = t;
}

// One CTA per (batch, mask head): the key tiles each query block visits (a warp per
// block, lanes over key tiles), then the blocks ranked by that count, most first
// (ties: the later block first, as causal rows grow towards the end).
__global__ void fwd_work_order_kernel(const MaskParams mask, int seqlen_q, int seqlen_k, int block_m,
                                      int block_n, int m_blocks, int n_tiles, const TileBounds* tb,
                                      int* order, int* next_item) {
  extern __shared__ int visits[];
  const int64_t bhm = blockIdx.x;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  if (bhm == 0 && threadIdx.x == 0) *next_item = 0;
  for (int m = warp; m < m_blocks; m += warps) {
    const int m0 = m * block_m;
    const KeyTileClassifier key_tiles(mask, seqlen_q, seqlen_k, bhm, m0, min(block_m, seqlen_q - m0),
                                      block_n, tb + bhm * n_tiles);
    int count = 0;
    for (int n = lane; n < key_tiles.n_end; n += kWarpSize)
      count += key_tiles.kind(n) != static_cast<int>(TileKind::kSkip);
    count = __reduce_add_sync(kFullWarp, count);
    if (lane == 0) visits[m] = count;
  }
  __syncthreads();
  for (int m = threadIdx.x; m < m_blocks; m += blockDim.x) {
    const int c = visits[m];
    int rank = 0;
    for (int j = 0; j < m_blocks; ++j) {
      const int cj = visits[j];
      rank += cj > c || (cj == c && j > m);
    }
    order[bhm * m_blocks + rank] = m;
  }
}

}  // namespace

void launch_tile_bounds(const MaskParams& mask, const AttentionShape& shape, int block_n,
                        TileBounds* out, cudaStream_t stream) {
  const int n_tiles = ceil_div(shape.seqlen_k, block_n);
  const int64_t total = static_cast<int64_t>(shape.batch) * mask.num_mask_heads * n_tiles;
  if (total == 0) return;
  const int64_t blocks = (total * kWarpSize + kTileBoundsThreads - 1) / kTileBoundsThreads;
  tile_bounds_kernel<<<static_cast<unsigned>(blocks), kTileBoundsThreads, 0, stream>>>(
      mask, shape.seqlen_q, shape.seqlen_k, block_n, n_tiles, total, out);
}

int launch_fwd_work_order(const MaskParams& mask, const AttentionShape& shape, int block_m, int block_n,
                          const TileBounds* tb, int* order, int* next_item, cudaStream_t stream) {
  const int m_blocks = ceil_div(shape.seqlen_q, block_m);
  const int64_t rows = static_cast<int64_t>(shape.batch) * mask.num_mask_heads;
  // Rounded up to whole loads: the compiler reads the counts kVisitsPerLoad at a time,
  // also the last, partial group.
  const size_t smem =
      static_cast<size_t>(ceil_div(m_blocks, kVisitsPerLoad)) * kVisitsPerLoad * sizeof(int);
  if (int rc = prepare_smem(fwd_work_order_kernel, smem, "fwd_work_order_kernel")) return rc;
  fwd_work_order_kernel<<<static_cast<unsigned>(rows), kWorkOrderThreads, smem, stream>>>(
      mask, shape.seqlen_q, shape.seqlen_k, block_m, block_n, m_blocks, ceil_div(shape.seqlen_k, block_n),
      tb, order, next_item);
  return check_cuda(cudaGetLastError(), "fwd_work_order_kernel launch");
}

}  // namespace cuda
}  // namespace flashmask
