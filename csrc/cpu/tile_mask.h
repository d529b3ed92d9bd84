// The mask at tile granularity: which (query tile, key tile) pairs are
// skipped, which need no masking, and the per-element mask of the rest.
#pragma once

#include <cstdint>
#include <vector>

#include "flashmask/mask.h"
#include "flashmask/params.h"

namespace flashmask {
namespace cpu {

class TileMask {
 public:
  // Summarises the bounds of every key tile (min/max over its columns):
  // O(seqlen_k) work and O(seqlen_k / kTileCols) memory per mask head.
  TileMask(const MaskParams& mask, const AttentionShape& shape);

  // Tiles of the given batch and mask head. kUnmasked is never returned for
  // the ragged last key tile, whose padding columns must be masked.
  TileKind kind(int batch, int mask_head, int q_tile, int k_tile) const;

  // Sets the masked scores of a kPartial tile to -inf, padding columns past
  // seqlen_k included. Score (row r, key c) is scores[r * row_stride + c *
  // col_stride]: (kTileCols, 1) for S, (1, kTileRows) for the transposed S^T.
  void mask_scores(int batch, int mask_head, int q_tile, int k_tile, float* scores, int row_stride,
                   int col_stride) const;

 private:
  MaskParams mask_;
  AttentionShape shape_;
  int causal_offset_;
  int num_k_tiles_;
  int num_q_blocks_, num_k_blocks_;
  std::vector<TileBounds> tile_bounds_;  // [batch, mask head, key tile]
};

}  // namespace cpu
}  // namespace flashmask
