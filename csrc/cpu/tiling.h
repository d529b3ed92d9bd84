// Tile geometry shared by the CPU forward and backward passes.
#pragma once

#include <algorithm>
#include <cstdint>

#include "flashmask/params.h"

namespace flashmask {
namespace cpu {

// Query rows and key columns per tile. Both divide kBlockMaskSize, so a tile
// never straddles two block_mask blocks and one lookup decides the whole tile.
// 64 x 64 fp32 tiles (16 KiB each) keep a tile's working set in L2 up to
// head_dim 256 while giving the micro-kernel long enough rows.
constexpr int kTileRows = 64;
constexpr int kTileCols = 64;
static_assert(kBlockMaskSize % kTileRows == 0 && kBlockMaskSize % kTileCols == 0,
              "a tile must lie inside one block_mask block");

// Every tile row is padded with zeros to a multiple of the micro-kernels'
// column block (microkernel.h, tile_math.h), which leaves dot products unchanged.
constexpr int kHeadDimAlign = 32;

// In 64 bits: length + tile - 1 would overflow an int for a length near INT32_MAX.
inline int num_tiles(int length, int tile) {
  return static_cast<int>((static_cast<int64_t>(length) + tile - 1) / tile);
}
// The end of the tile at `begin` of `tile` positions, cut to `length` (begin + tile may
// pass INT32_MAX).
inline int tile_end(int begin, int tile, int length) {
  return static_cast<int>(std::min<int64_t>(static_cast<int64_t>(begin) + tile, length));
}
// The positions of tile `index` (of `tile` positions) inside `length`: tile, or fewer for
// the last tile.
inline int tile_length(int index, int tile, int length) {
  const int64_t begin = static_cast<int64_t>(index) * tile;
  return static_cast<int>(std::min<int64_t>(tile, length - begin));
}

// A partial tile's products run on its unmasked box (TileExtent) widened to
// steps of its operand policy (Ops::kBoxRowStep, Ops::kBoxColStep), by default
// these: the micro-kernels' M must be a multiple of their row block (8 for
// AVX-512 fp32 and bf16, 4 for the reference and for AVX2, whose 6-row blocks
// take 5- and 4-row tails) and N of 16 (their column blocks are 32, 16 and 32 wide; a
// last 16 columns run as a half block); bf16 K must be even. 16, not 32: at
// N=4K the pairs computed per unmasked pair drop by 2% for share_question
// (forward 1.115 -> 1.092, backward 1.098 -> 1.075) and by 1-1.7% for the other
// document masks. AMX (kernels_avx512.cc) takes 32 x 32 blocks with K by 32:
// kAmxBoxStep.
constexpr int kExtentRowStep = 8;
constexpr int kExtentColStep = 16;
constexpr int kAmxBoxStep = 32;
static_assert(kAmxBoxStep % kExtentRowStep == 0 && kAmxBoxStep % kExtentColStep == 0,
              "the AMX steps are multiples of the others (the asserts below check them only)");
static_assert(kTileRows % kAmxBoxStep == 0 && kTileCols % kAmxBoxStep == 0,
              "widened extents stay inside the tile");

// A partial tile runs as kPartialParts boxes, one per equal part of the tile
// (query rows in the forward, keys in the backward), each the unmasked box of
// its part: document boundaries cut a tile's unmasked scores into shapes
// that one box covers loosely (pairs computed per unmasked pair at N=4K,
// share_question 1.161 -> 1.115, causal_document 1.100 -> 1.065).
constexpr int kPartialParts = 2;
static_assert(kTileRows % (kPartialParts * kAmxBoxStep) == 0 && kTileCols % (kPartialParts * kAmxBoxStep) == 0,
              "the parts of a tile align with the box steps (kAmxBoxStep a multiple of the others)");

inline int round_down(int x, int step) { return x / step * step; }
inline int round_up(int x, int step) { return (x + step - 1) / step * step; }

// head_dim padded to kHeadDimAlign (see there).
inline int padded_head_dim(int head_dim) { return round_up(head_dim, kHeadDimAlign); }

// [begin, end) widened outward to multiples of step.
struct Span {
  int begin, end;
};
inline Span widened(int begin, int end, int step) { return {round_down(begin, step), round_up(end, step)}; }

}  // namespace cpu
}  // namespace flashmask
