#include "tile_mask.h"

#include <algorithm>
#include <cstdint>

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
      const int col_end = tile_end(kt * kTileCols, kTileCols, shape.seqlen_k);
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
  const int row_end = tile_end(row_begin, kTileRows, shape_.seqlen_q);
  const int col_end = tile_end(col_begin, kTileCols, shape_.seqlen_k);
  const TileKind kind = classify_tile(tile_bounds_[head * num_k_tiles_ + k_tile], row_begin,
                                      row_end, col_begin, col_end, mask_.causal, causal_offset_);
  const bool ragged = col_end - col_begin < kTileCols;
  return kind == TileKind::kUnmasked && ragged ? TileKind::kPartial : kind;
}

void TileMask::masked_rows(int batch, int mask_head, int col, RowInterval (&rows)[3]) const {
  const int64_t head = static_cast<int64_t>(batch) * mask_.num_mask_heads + mask_head;
  const int32_t* bounds = mask_.startend_row_indices +
                          (head * shape_.seqlen_k + col) * static_cast<int64_t>(mask_.num_bounds);
  const ColumnBounds cb =
      load_column_bounds(bounds, mask_.num_bounds, mask_.causal, shape_.seqlen_q);
  // Causal: rows r with col > r + offset, i.e. r < col - offset.
  rows[0] = {0, mask_.causal ? col - causal_offset_ : 0};
  rows[1] = {cb.lts, cb.lte};
  rows[2] = {cb.uts, cb.ute};
}

void TileMask::mask_scores(int batch, int mask_head, int q_tile, int k_tile, float* scores,
                           int row_stride, int col_stride, const TileExtent& within) const {
  const int row_begin = q_tile * kTileRows;
  const int col_begin = k_tile * kTileCols;
  const int valid_cols = std::min(kTileCols, shape_.seqlen_k - col_begin);
  // Interval by interval: work in proportion to the masked scores, no
  // per-element test. In 64 bits: a bound near INT32_MIN minus row_begin overflows an int.
  const auto fill = [&](float* column, int64_t begin, int64_t end) {
    begin = std::max<int64_t>(begin - row_begin, within.row_begin);
    end = std::min<int64_t>(end - row_begin, within.row_end);
    for (int64_t r = begin; r < end; ++r) column[r * row_stride] = -__builtin_inff();
  };
  for (int c = within.col_begin; c < within.col_end; ++c) {
    float* column = scores + c * col_stride;
    if (c >= valid_cols) {
      fill(column, row_begin, static_cast<int64_t>(row_begin) + kTileRows);
      continue;
    }
    RowInterval masked[3];
    masked_rows(batch, mask_head, col_begin + c, masked);
    for (const RowInterval& m : masked) fill(column, m.begin, m.end);
  }
}

int TileMask::part_extents(int batch, int mask_head, int q_tile, int k_tile, Cut cut,
                           TileExtent (&parts)[kPartialParts]) const {
  int n = 0;
  for (int part = 0; part < kPartialParts; ++part) {
    constexpr int kRowsPerPart = kTileRows / kPartialParts, kKeysPerPart = kTileCols / kPartialParts;
    const TileExtent within =
        cut == Cut::kRows ? TileExtent{part * kRowsPerPart, (part + 1) * kRowsPerPart, 0, kTileCols}
                          : TileExtent{0, kTileRows, part * kKeysPerPart, (part + 1) * kKeysPerPart};
    const TileExtent e = extent(batch, mask_head, q_tile, k_tile, within);
    if (!e.empty()) parts[n++] = e;
  }
  return n;
}

TileExtent TileMask::extent(int batch, int mask_head, int q_tile, int k_tile, const TileExtent& within) const {
  // Rows in 64 bits: a tile's end and an interval's begin - 1 may pass the int range.
  const int64_t tile_row = static_cast<int64_t>(q_tile) * kTileRows;
  const int64_t row_begin = tile_row + within.row_begin;
  const int64_t row_end = std::min<int64_t>(shape_.seqlen_q, tile_row + within.row_end);
  const int col_begin = k_tile * kTileCols;
  const int valid_cols = std::min(within.col_end, shape_.seqlen_k - col_begin);
  TileExtent e{kTileRows, 0, kTileCols, 0};
  constexpr int kPasses = 3;  // one per interval: each can push a row past it once
  for (int c = within.col_begin; c < valid_cols; ++c) {
    RowInterval masked[3];
    masked_rows(batch, mask_head, col_begin + c, masked);
    int64_t first = row_begin, last = row_end - 1;
    for (int pass = 0; pass < kPasses; ++pass) {
      for (const RowInterval& m : masked) {
        if (m.begin <= first && first < m.end) first = m.end;
        if (m.begin <= last && last < m.end) last = m.begin - 1;
      }
    }
    if (first >= row_end) continue;  // every valid row of the column is masked
    e.row_begin = std::min(e.row_begin, static_cast<int>(first - tile_row));
    e.row_end = std::max(e.row_end, static_cast<int>(last + 1 - tile_row));
    e.col_begin = std::min(e.col_begin, c);
    e.col_end = c + 1;
  }
  return e.col_end > 0 ? e : TileExtent{0, 0, 0, 0};
}

}  // namespace cpu
}  // namespace flashmask
