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

void TileMask::columns(int batch, int mask_head, int q_tile, int k_tile, TileColumns& out) const {
  const int64_t row_begin = static_cast<int64_t>(q_tile) * kTileRows;
  const int col_begin = k_tile * kTileCols;
  const int valid_cols = tile_length(k_tile, kTileCols, shape_.seqlen_k);
  out.valid_rows = tile_length(q_tile, kTileRows, shape_.seqlen_q);
  const int64_t head = static_cast<int64_t>(batch) * mask_.num_mask_heads + mask_head;
  const int num_bounds = mask_.num_bounds;
  const int32_t* bounds = mask_.startend_row_indices + (head * shape_.seqlen_k + col_begin) * num_bounds;
  const bool causal = mask_.causal;
  const int seqlen_q = shape_.seqlen_q;
  const int64_t causal_end = int64_t{col_begin} - causal_offset_;  // of column 0, see below
  // In 64 bits: a bound near INT32_MIN minus row_begin overflows an int.
  const auto relative = [row_begin](int64_t row) {
    return static_cast<int32_t>(std::clamp<int64_t>(row - row_begin, 0, kTileRows));
  };
  // The three intervals of each column (the rule at the top of mask.h): the causal
  // triangle (rows r with col > r + offset, i.e. r < col - offset) and the
  // two bound intervals. Branch-free per column (the bounds' form is the same
  // for all), so the columns run as vector lanes.
#pragma omp simd
  for (int c = 0; c < valid_cols; ++c) {
    const ColumnBounds cb = load_column_bounds(bounds + c * num_bounds, num_bounds, causal, seqlen_q);
    out.begin[0][c] = 0;
    out.end[0][c] = causal ? relative(causal_end + c) : 0;
    out.begin[1][c] = relative(cb.lts);
    out.end[1][c] = relative(cb.lte);
    out.begin[2][c] = relative(cb.uts);
    out.end[2][c] = relative(cb.ute);
  }
  for (int c = valid_cols; c < kTileCols; ++c) {  // past seqlen_k: every row masked
    out.begin[0][c] = 0;
    out.end[0][c] = kTileRows;
    for (int i = 1; i < TileColumns::kIntervals; ++i) out.begin[i][c] = out.end[i][c] = 0;
  }
}

void TileMask::mask_scores(const TileColumns& cols, float* scores, int row_stride, int col_stride,
                           const TileExtent& within) {
  const float neg_inf = -__builtin_inff();
  if (col_stride == 1) {
    // S: a row's keys are contiguous; every score tested against its column's
    // intervals that reach into the box (most partial tiles have one), a
    // vector of keys at a time.
    int active[TileColumns::kIntervals];
    int num_active = 0;
    for (int i = 0; i < TileColumns::kIntervals; ++i) {
      int reach = 0;
#pragma omp simd reduction(max : reach)
      for (int c = within.col_begin; c < within.col_end; ++c) {
        reach = std::max(reach, std::min(cols.end[i][c], within.row_end) - std::max(cols.begin[i][c], within.row_begin));
      }
      if (reach > 0) active[num_active++] = i;
    }
    for (int r = within.row_begin; r < within.row_end; ++r) {
      float* row = scores + r * row_stride;
      for (int k = 0; k < num_active; ++k) {
        const int32_t* begin = cols.begin[active[k]];
        const int32_t* end = cols.end[active[k]];
#pragma omp simd
        for (int c = within.col_begin; c < within.col_end; ++c) row[c] = begin[c] <= r && r < end[c] ? neg_inf : row[c];
      }
    }
    return;
  }
  // S^T: a key's rows are contiguous; each interval is one run of them.
  for (int c = within.col_begin; c < within.col_end; ++c) {
    float* column = scores + c * col_stride;
    for (int i = 0; i < TileColumns::kIntervals; ++i) {
      const int end = std::min(cols.end[i][c], within.row_end);
      for (int r = std::max(cols.begin[i][c], within.row_begin); r < end; ++r) column[r * row_stride] = neg_inf;
    }
  }
}

int TileMask::part_extents(const TileColumns& cols, Cut cut, TileExtent (&parts)[kPartialParts]) {
  int n = 0;
  for (int part = 0; part < kPartialParts; ++part) {
    constexpr int kRowsPerPart = kTileRows / kPartialParts, kKeysPerPart = kTileCols / kPartialParts;
    const TileExtent within =
        cut == Cut::kRows ? TileExtent{part * kRowsPerPart, (part + 1) * kRowsPerPart, 0, kTileCols}
                          : TileExtent{0, kTileRows, part * kKeysPerPart, (part + 1) * kKeysPerPart};
    const TileExtent e = extent(cols, within);
    if (!e.empty()) parts[n++] = e;
  }
  return n;
}

TileExtent TileMask::extent(const TileColumns& cols, const TileExtent& within) {
  const int row_end = std::min(within.row_end, cols.valid_rows);
  int row_min = kTileRows, row_max = 0, col_min = kTileCols, col_max = 0;
  constexpr int kPasses = TileColumns::kIntervals;  // each interval can push a row past it once
  // Branch-free per column, so the columns run as vector lanes.
#pragma omp simd reduction(min : row_min, col_min) reduction(max : row_max, col_max)
  for (int c = within.col_begin; c < within.col_end; ++c) {
    int first = within.row_begin, last = row_end - 1;
    for (int pass = 0; pass < kPasses; ++pass) {
      for (int i = 0; i < TileColumns::kIntervals; ++i) {
        const int begin = cols.begin[i][c], end = cols.end[i][c];
        first = begin <= first && first < end ? end : first;
        last = begin <= last && last < end ? begin - 1 : last;
      }
    }
    const bool any = first < row_end;  // else every valid row of the column is masked
    row_min = std::min(row_min, any ? first : kTileRows);
    row_max = std::max(row_max, any ? last + 1 : 0);
    col_min = std::min(col_min, any ? c : kTileCols);
    col_max = std::max(col_max, any ? c + 1 : 0);
  }
  return col_max > 0 ? TileExtent{row_min, row_max, col_min, col_max} : TileExtent{0, 0, 0, 0};
}

}  // namespace cpu
}  // namespace flashmask
