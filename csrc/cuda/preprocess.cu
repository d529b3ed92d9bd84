// The preprocessing kernels (preprocess.h).
#include "preprocess.h"

#include "flashmask_launch.cuh"  // prepare_smem, ceil_div
#include "kernel_common.cuh"
#include "runtime.h"

namespace flashmask {
namespace cuda {

namespace {

constexpr int kTileBoundsThreads = 256;  // 8 key tiles per block
constexpr int kWorkOrderThreads = 256;   // 8 query blocks counted per CTA
constexpr int kShiftCostThreads = 256;   // 8 (candidate, row, query block) costs per CTA
constexpr int kRankThreads = 256;        // query blocks ranked per CTA

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

// One warp per (candidate, sampled row, query block): the block's cost under the candidate
// row shift (preprocess.h: kWholeTileCost and the others), from the tiles it would visit
// (KeyTileClassifier, the kernels' test), summed into costs[candidate]. The sampled rows are
// `sampled` (batch, mask head) rows spread evenly over the `rows` of the call.
__global__ void fwd_shift_cost_kernel(const MaskParams mask, int seqlen_q, int seqlen_k, int block_n,
                                      FwdRowShifts shifts, int m_blocks, int n_tiles, int64_t rows, int sampled,
                                      const TileBounds* tb, unsigned long long* costs) {
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (w >= static_cast<int64_t>(shifts.count) * sampled * m_blocks) return;
  const int c = static_cast<int>(w / (static_cast<int64_t>(sampled) * m_blocks));
  const int rest = static_cast<int>(w - static_cast<int64_t>(c) * sampled * m_blocks);
  const int64_t bhm = rest / m_blocks * rows / sampled;
  const BlockRows br = block_rows((rest % m_blocks) * shifts.block_m - shifts.candidate(c), shifts.block_m, seqlen_q);
  if (br.count <= 0) return;
  const KeyTileClassifier key_tiles(mask, seqlen_q, seqlen_k, bhm, br.begin, br.count, block_n, tb + bhm * n_tiles);
  unsigned whole = 0, partial = 0;
  for (int n = lane; n < key_tiles.n_end; n += kWarpSize) {
    const int kind = key_tiles.code(n) & ((1 << TileEntry::kKindBits) - 1);
    whole += kind == static_cast<int>(TileKind::kUnmasked);
    partial += kind == static_cast<int>(TileKind::kPartial);
  }
  whole = __reduce_add_sync(kFullWarp, whole);
  partial = __reduce_add_sync(kFullWarp, partial);
  if (lane == 0 && whole + partial > 0)
    atomicAdd(costs + c, static_cast<unsigned long long>(kWholeTileCost * whole + kPartialTileCost * partial + kItemCost));
}

// One warp per (batch, mask head, query block): the key tiles the block visits (lanes
// over key tiles; KeyTileClassifier, the kernels' test), their span [lowest, highest + 1),
// so that the Hopper forward's scheduler scans that span only (a block of a packed
// document: its document's tiles, not every tile up to the diagonal), and its rank key,
// under the row shift chosen from the candidates' costs (written out by the first warp).
__global__ void fwd_visits_kernel(const MaskParams mask, int seqlen_q, int seqlen_k, int block_n, FwdRowShifts shifts,
                                  const unsigned long long* shift_costs, int m_blocks, int n_tiles, int64_t total,
                                  const TileBounds* tb, long long* rank_keys, int2* spans, int* next_item,
                                  int* row_shift) {
  const int64_t block = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int shift = shifts.count > 1 ? chosen_row_shift(shifts, shift_costs) : shifts.candidate(0);
  if (block == 0 && lane == 0) *next_item = 0, *row_shift = shift;
  if (block >= total) return;
  const int64_t bhm = block / m_blocks;
  const BlockRows rows = block_rows(static_cast<int>(block % m_blocks) * shifts.block_m - shift, shifts.block_m, seqlen_q);
  int count = 0, lo = INT_MAX, hi = -1;
  if (rows.count > 0) {
    const KeyTileClassifier key_tiles(mask, seqlen_q, seqlen_k, bhm, rows.begin, rows.count, block_n,
                                      tb + bhm * n_tiles);
    for (int n = lane; n < key_tiles.n_end; n += kWarpSize)
      if (key_tiles.code(n) != static_cast<int>(TileKind::kSkip)) {
        ++count;
        lo = min(lo, n);
        hi = n;
      }
  }
  count = __reduce_add_sync(kFullWarp, count);
  lo = __reduce_min_sync(kFullWarp, lo);
  hi = __reduce_max_sync(kFullWarp, hi);
  if (lane == 0) {
    const int m = static_cast<int>(block % m_blocks), stride = fwd_rank_stride(m_blocks);
    rank_keys[bhm * stride + m] = fwd_rank_key(lo, count);
    spans[block] = count > 0 ? make_int2(lo, hi + 1) : make_int2(0, 0);
    if (m == m_blocks - 1)  // the row's padding ranks last
      for (int j = m_blocks; j < stride; ++j) rank_keys[bhm * stride + j] = -1;
  }
}

// Blocks of kRankThreads query blocks (grid y) of one (batch, mask head) (grid x): each block's
// rank by rank key, largest first, ties by index (the later block first), read 2 keys (16
// bytes) at a time from the row's keys (padded by fwd_visits_kernel with -1: they rank last).
__global__ void fwd_rank_kernel(int m_blocks, int stride, const long long* rank_keys, int* order) {
  const int64_t bhm = blockIdx.x;
  const int m = blockIdx.y * blockDim.x + threadIdx.x;
  if (m >= m_blocks) return;
  const long long* row = rank_keys + bhm * stride;
  const long long key = __ldg(row + m);
  int rank = 0;
  for (int j = 0; j < stride; j += kRankKeysPerLoad) {
    const longlong2 v = __ldg(reinterpret_cast<const longlong2*>(row + j));
    rank += (v.x > key || (v.x == key && j > m)) + (v.y > key || (v.y == key && j + 1 > m));
  }
  order[bhm * m_blocks + rank] = m;
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

int launch_fwd_work_order(const MaskParams& mask, const AttentionShape& shape, int block_n, const FwdRowShifts& shifts,
                          const TileBounds* tb, const FwdWorkOrder& wo, cudaStream_t stream) {
  const int m_blocks = shifts.query_blocks(shape.seqlen_q), n_tiles = ceil_div(shape.seqlen_k, block_n);
  const int64_t rows = static_cast<int64_t>(shape.batch) * mask.num_mask_heads;
  const int64_t total = rows * m_blocks;
  if (total == 0) return 0;
  if (shifts.count > 1) {
    if (int rc = check_cuda(cudaMemsetAsync(wo.shift_costs, 0, shifts.count * sizeof(unsigned long long), stream),
                            "the row shifts' costs memset"))
      return rc;
    const int sampled = static_cast<int>(rows < kFwdShiftSampleRows ? rows : kFwdShiftSampleRows);
    const int64_t warps = static_cast<int64_t>(shifts.count) * sampled * m_blocks;
    fwd_shift_cost_kernel<<<static_cast<unsigned>((warps * kWarpSize + kShiftCostThreads - 1) / kShiftCostThreads),
                            kShiftCostThreads, 0, stream>>>(mask, shape.seqlen_q, shape.seqlen_k, block_n, shifts,
                                                            m_blocks, n_tiles, rows, sampled, tb,
                                                            wo.shift_costs);
    if (int rc = check_cuda(cudaGetLastError(), "fwd_shift_cost_kernel launch")) return rc;
  }
  const int64_t blocks = (total * kWarpSize + kWorkOrderThreads - 1) / kWorkOrderThreads;
  fwd_visits_kernel<<<static_cast<unsigned>(blocks), kWorkOrderThreads, 0, stream>>>(
      mask, shape.seqlen_q, shape.seqlen_k, block_n, shifts, wo.shift_costs, m_blocks, n_tiles, total, tb,
      wo.rank_keys, wo.spans, wo.next_item, wo.row_shift);
  if (int rc = check_cuda(cudaGetLastError(), "fwd_visits_kernel launch")) return rc;
  const dim3 grid(static_cast<unsigned>(rows), ceil_div(m_blocks, kRankThreads));
  fwd_rank_kernel<<<grid, kRankThreads, 0, stream>>>(m_blocks, fwd_rank_stride(m_blocks), wo.rank_keys, wo.order);
  return check_cuda(cudaGetLastError(), "fwd_rank_kernel launch");
}

}  // namespace cuda
}  // namespace flashmask
