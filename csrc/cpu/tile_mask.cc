#include "tile_mask.h"

#include <algorithm>

#include "tiling.h"

namespace flashmask {
namespace cpu {

TileMask::TileMask(const MaskParams& mask, const AttentionShape& shape)
    : mask_(mask),
      shape_(shape),
      causal_offset_(shape.seqlen_k - shape.seqlen_q),
      num_k_tiles_(num_tiles(shape.seqlen_k, kTileCols)),
      num_q_blocks_(num_tiles(shape.seqlen_q, kBlockMaskSize)),
      num_k_blocks_(num_tiles(shape.seqlen_k, kBlockMaskSize)) {
  const int64_t num_heads = static_cast<int64_t>(shape.batch) * mask.num_mask_heads;
  tile_bounds_.resize(num_heads * num_k_tiles_);
  for (int64_t head = 0; head < num_heads; ++head) {
    const int32_t* bounds = mask.startend_row_indices + head * shape.seqlen_k * mask.num_bounds;
    for (int kt = 0; kt < num_k_tiles_; ++kt) {
      TileBounds t = empty_tile_bounds();
      const int col_end = std::min(shape.seqlen_k, (kt + 1) * kTileCols);
      for (int col = kt * kTileCols; col < col_end; ++col) {
        extend_tile_bounds(t,
                           load_column_bounds(bounds + static_cast<int64_t>(col) * mask.num_bounds,
                                              mask.num_bounds, mask.causal, shape.seqlen_q));
      }
      tile_bounds_[head * num_k_tiles_ + kt] = t;
    }
  }
}

TileKind TileMask::kind(int batch, int mask_head, int q_tile, int k_tile) const {
  const int64_t head = static_cast<int64_t>(batch) * mask_.num_mask_heads + mask_head;
  if (mask_.block_mask != nullptr) {
    // Tiles divide the 128 x 128 blocks, so one entry covers the whole tile.
    const int64_t block =
        (head * num_q_blocks_ + q_tile * kTileRows / kBlockMaskSize) * num_k_blocks_ +
        k_tile * kTileCols / kBlockMaskSize;
    if (mask_.block_mask[block] == 0) return TileKind::kSkip;
  }
  const int row_begin = q_tile * kTileRows;
  const int col_begin = k_tile * kTileCols;
  const int row_end = std::min(shape_.seqlen_q, row_begin + kTileRows);
  const int col_end = std::min(shape_.seqlen_k, col_begin + kTileCols);
  const TileKind kind = classify_tile(tile_bounds_[head * num_k_tiles_ + k_tile], row_begin,
                                      row_end, col_begin, col_end, mask_.causal, causal_offset_);
  const bool ragged = col_end - col_begin < kTileCols;
  return kind == TileKind::kUnmasked && ragged ? TileKind::kPartial : kind;
}

void TileMask::mask_scores(int batch, int mask_head, int q_tile, int k_tile, float* scores,
                           int row_stride, int col_stride) const {
  const int64_t head = static_cast<int64_t>(batch) * mask_.num_mask_heads + mask_head;
  const int32_t* bounds = mask_.startend_row_indices + head * shape_.seqlen_k * mask_.num_bounds;
  const int row_begin = q_tile * kTileRows;
  const int col_begin = k_tile * kTileCols;
  const int valid_cols = std::min(kTileCols, shape_.seqlen_k - col_begin);
  // A column's masked rows are at most three intervals (the causal triangle
  // and the two bound intervals; see is_masked in mask.h), so the tile is
  // masked interval by interval: work in proportion to the masked scores,
  // no per-element test.
  const auto fill = [&](float* column, int begin, int end) {
    begin = std::max(begin - row_begin, 0);
    end = std::min(end - row_begin, kTileRows);
    for (int r = begin; r < end; ++r) column[r * row_stride] = -__builtin_inff();
  };
  for (int c = 0; c < kTileCols; ++c) {
    float* column = scores + c * col_stride;
    if (c >= valid_cols) {
      fill(column, row_begin, row_begin + kTileRows);
      continue;
    }
    const int col = col_begin + c;
    const ColumnBounds cb =
        load_column_bounds(bounds + static_cast<int64_t>(col) * mask_.num_bounds, mask_.num_bounds,
                           mask_.causal, shape_.seqlen_q);
    if (mask_.causal) fill(column, row_begin, col - causal_offset_);  // rows < col - offset
    fill(column, cb.lts, cb.lte);
    fill(column, cb.uts, cb.ute);
  }
}

}  // namespace cpu
}  // namespace flashmask
