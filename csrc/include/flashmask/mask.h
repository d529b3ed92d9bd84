// The column-wise mask: what one column's bounds mean, and how a tile of the
// score matrix is classified from per-tile min/max of those bounds.
//
// Each key column j carries up to four row bounds. They are normalised here to
// two half-open row intervals that are masked, plus the causal rule:
//
//   causal, 1 bound  (LTS)           : rows [LTS, Sq)                  masked
//   causal, 2 bounds (LTS, LTE)      : rows [LTS, LTE)                 masked
//   non-causal, 2 bounds (LTS, UTE)  : rows [LTS, Sq) and [0, UTE)     masked
//   non-causal, 4 (LTS, LTE, UTS, UTE): rows [LTS, LTE) and [UTS, UTE) masked
//   causal additionally masks row i, column j when j > i + (Sk - Sq)
//   (bottom-right alignment, the usual rule when Sq != Sk).
//
// Bounds outside [0, Sq] need no clamping: a negative start masks from row 0,
// an end past Sq masks to the last row, an empty interval (start >= end)
// masks nothing.
#pragma once

#include <cstdint>

#include "flashmask/macros.h"

namespace flashmask {

struct ColumnBounds {
  int32_t lts, lte;  // lower interval [lts, lte)
  int32_t uts, ute;  // upper interval [uts, ute)
};

// `bounds` points at the num_bounds int32 values of one column.
FM_HOST_DEVICE ColumnBounds load_column_bounds(const int32_t* bounds, int32_t num_bounds,
                                               bool causal, int32_t seqlen_q) {
  ColumnBounds c;
  c.lts = bounds[0];
  if (causal) {
    c.lte = num_bounds == 2 ? bounds[1] : seqlen_q;
    c.uts = 0;
    c.ute = 0;
  } else if (num_bounds == 2) {
    c.lte = seqlen_q;
    c.uts = 0;
    c.ute = bounds[1];
  } else {
    c.lte = bounds[1];
    c.uts = bounds[2];
    c.ute = bounds[3];
  }
  return c;
}

// Min and max of each normalised bound over the columns of one key tile.
struct TileBounds {
  int32_t lts_min, lts_max, lte_min, lte_max;
  int32_t uts_min, uts_max, ute_min, ute_max;
};

FM_HOST_DEVICE TileBounds empty_tile_bounds() {
  const int32_t lo = INT32_MIN, hi = INT32_MAX;
  return TileBounds{hi, lo, hi, lo, hi, lo, hi, lo};
}

FM_HOST_DEVICE void extend_tile_bounds(TileBounds& t, const ColumnBounds& c) {
  t.lts_min = c.lts < t.lts_min ? c.lts : t.lts_min;
  t.lts_max = c.lts > t.lts_max ? c.lts : t.lts_max;
  t.lte_min = c.lte < t.lte_min ? c.lte : t.lte_min;
  t.lte_max = c.lte > t.lte_max ? c.lte : t.lte_max;
  t.uts_min = c.uts < t.uts_min ? c.uts : t.uts_min;
  t.uts_max = c.uts > t.uts_max ? c.uts : t.uts_max;
  t.ute_min = c.ute < t.ute_min ? c.ute : t.ute_min;
  t.ute_max = c.ute > t.ute_max ? c.ute : t.ute_max;
}

enum class TileKind : int32_t {
  kSkip = 0,      // every (row, col) masked: no loads, no math
  kUnmasked = 1,  // no (row, col) masked: no per-element mask work
  kPartial = 2,   // needs the rule (top of this file) per element
};

// Classifies rows [row_begin, row_end) x columns [col_begin, col_end), where the
// columns' bounds are summarised by `t` (only valid columns folded in).
// Conservative: kSkip and kUnmasked are exact claims, anything else is kPartial.
FM_HOST_DEVICE TileKind classify_tile(const TileBounds& t, int32_t row_begin, int32_t row_end,
                                      int32_t col_begin, int32_t col_end, bool causal,
                                      int32_t causal_offset) {
  const int32_t last_row = row_end - 1, last_col = col_end - 1;
  // Entirely above the causal diagonal.
  if (causal && col_begin > last_row + causal_offset) return TileKind::kSkip;
  // One interval covers every row of every column.
  if (t.lts_max <= row_begin && t.lte_min >= row_end) return TileKind::kSkip;
  if (t.uts_max <= row_begin && t.ute_min >= row_end) return TileKind::kSkip;

  const bool causal_clear = !causal || last_col <= row_begin + causal_offset;
  const bool lower_clear = t.lts_min >= row_end || t.lte_max <= row_begin;
  const bool upper_clear = t.uts_min >= row_end || t.ute_max <= row_begin;
  if (causal_clear && lower_clear && upper_clear) return TileKind::kUnmasked;
  return TileKind::kPartial;
}

}  // namespace flashmask
