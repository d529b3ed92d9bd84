// The mask at tile granularity: which (query tile, key tile) pairs are
// skipped, which need no masking, and the per-element mask of the rest.
#pragma once

#include <cstdint>
#include <vector>

#include "flashmask/mask.h"
#include "flashmask/params.h"
#include "tiling.h"

namespace flashmask {
namespace cpu {

// Tile-relative rows [row_begin, row_end) x columns [col_begin, col_end):
// the smallest box holding every unmasked score of a tile's valid rows and
// columns. Computing only that box (rounded to the micro-kernels' blocks)
// saves the work on the masked margins of partial tiles (document
// boundaries: 4-12% of the visited tiles' pairs at N=4K-8K).
struct TileExtent {
  int row_begin, row_end, col_begin, col_end;
  bool empty() const { return row_begin >= row_end; }
};

// The masked rows of every column of one tile, tile-relative and clamped to
// [0, kTileRows]: the (at most three) intervals of each column (the causal
// triangle and two bound intervals, the rule at the top of mask.h), read from the
// bounds once per visited partial tile and shared by the extents and the
// masking of its boxes. Columns past seqlen_k are masked whole.
struct TileColumns {
  static constexpr int kIntervals = 3;
  int32_t begin[kIntervals][kTileCols], end[kIntervals][kTileCols];
  int valid_rows;  // rows of the tile before seqlen_q
};

class TileMask {
 public:
  // Summarises the bounds of every key tile (min/max over its columns):
  // O(seqlen_k) work and O(seqlen_k / kTileCols) memory per mask head.
  TileMask(const MaskParams& mask, const AttentionShape& shape);

  // Tiles of the given batch and mask head. kUnmasked is never returned for
  // the ragged last key tile, whose padding columns must be masked.
  TileKind kind(int batch, int mask_head, int q_tile, int k_tile) const;

  // The masked rows of every column of a kPartial tile.
  void columns(int batch, int mask_head, int q_tile, int k_tile, TileColumns& out) const;

  // Sets the masked scores of a kPartial tile (its columns) inside the
  // tile-relative box `within` to -inf, padding columns past seqlen_k
  // included. Score (row r, key c) is scores[r * row_stride + c * col_stride]:
  // (kTileCols, 1) for S, (1, kTileRows) for the transposed S^T.
  static void mask_scores(const TileColumns& cols, float* scores, int row_stride, int col_stride,
                          const TileExtent& within);

  // The unmasked boxes of the kPartialParts equal parts of a kPartial tile
  // (its columns), cut along its query rows (forward) or its keys (backward):
  // the non-empty ones, in order, in `parts`; returns how many.
  enum class Cut { kRows, kKeys };
  static int part_extents(const TileColumns& cols, Cut cut, TileExtent (&parts)[kPartialParts]);

 private:
  // The unmasked box of the part `within` of a kPartial tile.
  static TileExtent extent(const TileColumns& cols, const TileExtent& within);
  MaskParams mask_;
  AttentionShape shape_;
  int causal_offset_;
  int num_k_tiles_;
  int num_q_blocks_, num_k_blocks_;
  std::vector<TileBounds> tile_bounds_;  // [batch, mask head, key tile]
};

}  // namespace cpu
}  // namespace flashmask
