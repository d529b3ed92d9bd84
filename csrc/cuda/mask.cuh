// The mask: which tiles a block visits and which elements of a partial tile it hides.
//  - per tile: skip / unmasked / partial from the block mask and the per-tile bound
//    min/max of the preprocessing (KeyTileClassifier, list_key_tiles, list_query_tiles
//    build the tile lists of tile_list.cuh);
//  - per column: the rows it hides as two masked-row intervals (Form, column_masked_rows);
//  - per element of a partial tile: mask_partial_rows (query rows x key columns) and
//    mask_partial_keys (the backward's key rows x query columns).
#pragma once

#include <climits>
#include <cstdint>
#include <type_traits>

#include "flashmask/mask.h"
#include "flashmask/params.h"
#include "tile_list.cuh"

namespace flashmask {
namespace cuda {

__device__ __forceinline__ TileBounds load_tile_bounds(const TileBounds* tb) {
  const int4* p = reinterpret_cast<const int4*>(tb);
  const int4 a = __ldg(p), b = __ldg(p + 1);
  return TileBounds{a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
}

// A partial tile's mask test (perf-notes v64). Every column hides the rows of two half-open
// intervals, [x, y) (lower) and [z, w) (upper), column_masked_rows below; of a given tile's
// rows an interval's part may hide none (kNone), only rows on one side of its near end, its far
// end lying beyond the tile (kOpen: one compare, row >= x or row < w), or need both ends
// (kClosed). The test is lower | upper << 2, chosen once per tile where the tile is listed
// (partial_tile_test) and carried by its list entry (TileEntry::test), so that a partial tile
// pays for the compares it needs, not for every bound of the call.
enum PartTest : int { kNone = 0, kOpen = 1, kClosed = 2 };
__host__ __device__ constexpr int partial_test(int lower, int upper) { return lower | upper << 2; }

template <int L, int U>
__host__ __device__ __forceinline__ bool hides_row(int row, const int4& iv) {
  // Bitwise, not short-circuit: && and || compile to a branch per element.
  const bool lower = L == kNone ? false : (L == kOpen ? row >= iv.x : (row >= iv.x) & (row < iv.y));
  const bool upper = U == kNone ? false : (U == kOpen ? row < iv.w : (row >= iv.z) & (row < iv.w));
  return lower | upper;
}

// The test of a partial tile of rows [r0, r1) whose columns end at last_col, from the
// summary `t` of its valid columns' bounds (mask.h): the lower interval's part is none where
// every column's lies beyond the rows, open where every column's end (LTE) is past them; the
// upper one's likewise (UTS at or before r0: open), or for a causal call the causal limit
// (none where the tile lies on or below the diagonal, else open: z is unbounded). A short
// last tile's columns past seqlen_k hide every row by their lower interval [INT_MIN, INT_MAX)
// (column_masked_rows), which an open or closed lower part tests.
__host__ __device__ __forceinline__ int partial_tile_test(const TileBounds& t, int r0, int r1, int last_col,
                                                          bool causal, int causal_offset, bool short_tile) {
  int lower = (t.lts_min >= r1 || t.lte_max <= r0) ? kNone : (t.lte_min >= r1 ? kOpen : kClosed);
  if (short_tile && lower == kNone) lower = kClosed;
  int upper;
  if (causal)
    upper = last_col <= r0 + causal_offset ? kNone : kOpen;
  else
    upper = (t.uts_min >= r1 || t.ute_max <= r0) ? kNone : (t.uts_max <= r0 ? kOpen : kClosed);
  return partial_test(lower, upper);
}
// A classifier's list code (TileEntry::code) of a tile of that kind: partial tiles carry their test.
__host__ __device__ __forceinline__ int tile_code(TileKind kind, const TileBounds& t, int r0, int r1, int last_col,
                                                  bool causal, int causal_offset, bool short_tile) {
  return kind == TileKind::kPartial
             ? TileEntry::code(kind, partial_tile_test(t, r0, r1, last_col, causal, causal_offset, short_tile))
             : static_cast<int>(kind);
}

// Which key tiles [n*block_n, (n+1)*block_n) query rows [m0, m0 + rows_valid) of one
// (batch, mask head) `bhm` must visit: tiles [0, n_end) are candidates (the causal
// limit cuts the rest), code(n) skips by the block mask or the tile bounds `tb` (this
// bhm's row of the preprocessing output); the last, short key tile is never
// "unmasked" (its missing columns are masked per element).
struct KeyTileClassifier {
  const int32_t* block_mask_row;
  const TileBounds* tb;
  int block_n, seqlen_k, m0, row_end, offset, n_end;
  bool causal;

  __device__ __forceinline__ KeyTileClassifier(const MaskParams& mask, int Sq, int Sk, int64_t bhm,
                                               int m0_, int rows_valid, int block_n_,
                                               const TileBounds* tb_)
      : block_mask_row(nullptr), tb(tb_), block_n(block_n_), seqlen_k(Sk), m0(m0_),
        row_end(m0_ + rows_valid), offset(Sk - Sq), causal(mask.causal) {
    if (mask.block_mask != nullptr) {
      const int bm_rows = (Sq + kBlockMaskSize - 1) / kBlockMaskSize;
      const int bm_cols = (Sk + kBlockMaskSize - 1) / kBlockMaskSize;
      block_mask_row = mask.block_mask + (bhm * bm_rows + m0 / kBlockMaskSize) * bm_cols;
    }
    n_end = (Sk + block_n - 1) / block_n;
    if (causal) {
      const int max_col = row_end - 1 + offset;
      n_end = max_col < 0 ? 0 : min(n_end, max_col / block_n + 1);
    }
  }
  // The tile's list code (TileEntry::code): its kind, and a partial tile's test.
  __device__ __forceinline__ int code(int n) const {
    const int c0 = n * block_n, c1 = min(c0 + block_n, seqlen_k);
    if (block_mask_row != nullptr && __ldg(block_mask_row + c0 / kBlockMaskSize) == 0)
      return static_cast<int>(TileKind::kSkip);
    const TileBounds t = load_tile_bounds(tb + n);
    const bool short_tile = c0 + block_n > seqlen_k;
    TileKind k = classify_tile(t, m0, row_end, c0, c1, causal, offset);
    if (k == TileKind::kUnmasked && short_tile) k = TileKind::kPartial;
    return tile_code(k, t, m0, row_end, c1 - 1, causal, offset, short_tile);
  }
};

// The key tiles of KeyTileClassifier as a build_tile_list list over a group of kThreads
// threads (local ids tid, barrier sync). Returns the count; call uniformly.
template <int kThreads, int kBlockN, typename Sync>
__device__ __forceinline__ int list_key_tiles(TileEntry* list, int* scratch, const MaskParams& mask,
                                              int Sq, int Sk, int64_t bhm, int m0, int rows_valid,
                                              const TileBounds* tb, int tid, Sync sync) {
  const KeyTileClassifier key_tiles(mask, Sq, Sk, bhm, m0, rows_valid, kBlockN, tb);
  return build_tile_list<kThreads>(list, scratch, 0, key_tiles.n_end,
                                   [&](int n) { return key_tiles.code(n); }, tid, sync);
}
// The same over a whole CTA of kThreads threads.
template <int kThreads, int kBlockN>
__device__ __forceinline__ int list_key_tiles(TileEntry* list, int* scratch, const MaskParams& mask,
                                              int Sq, int Sk, int64_t bhm, int m0,
                                              int rows_valid, const TileBounds* tb) {
  return list_key_tiles<kThreads, kBlockN>(list, scratch, mask, Sq, Sk, bhm, m0, rows_valid, tb,
                                           static_cast<int>(threadIdx.x), [] { __syncthreads(); });
}

// Which query tiles [m*kBlockM, (m+1)*kBlockM) the keys [n0, n0 + keys_valid) of key tile
// n0 / kBlockN (width kBlockN, bounds summary `tbn`) must visit for one (batch, mask head)
// `bhm`: tiles [m_begin, m_end) are candidates, code(m) skips by the block mask or `tbn`;
// the mirror of KeyTileClassifier for the backward's key blocks. The candidates are cut
// to what the bounds leave: rows before the causal diagonal, rows at or past every
// column's lower-triangle start (no LTE bound: a document's keys are not seen past its
// end) and rows below every column's upper-triangle end (UTS 0), so that a key block of a
// packed document scans its document only, not the whole sequence.
template <int kBlockM>
struct QueryTileClassifier {
  const int32_t* block_mask_col;
  TileBounds tbn;
  int seqlen_q, n0, keys_end, bm_cols, offset, m_begin, m_end;
  bool causal, short_tile;

  __device__ __forceinline__ QueryTileClassifier(const MaskParams& mask, int Sq, int Sk, int64_t bhm, int n0_,
                                                 int keys_valid, int kBlockN, const TileBounds& tbn_)
      : block_mask_col(nullptr), tbn(tbn_), seqlen_q(Sq), n0(n0_), keys_end(n0_ + keys_valid), bm_cols(0),
        offset(Sk - Sq), causal(mask.causal), short_tile(n0_ + kBlockN > Sk) {
    const int m_tiles = (Sq + kBlockM - 1) / kBlockM;
    if (mask.block_mask != nullptr) {
      const int bm_rows = (Sq + kBlockMaskSize - 1) / kBlockMaskSize;
      bm_cols = (Sk + kBlockMaskSize - 1) / kBlockMaskSize;
      block_mask_col = mask.block_mask + bhm * bm_rows * bm_cols + n0 / kBlockMaskSize;
    }
    m_begin = 0;
    m_end = m_tiles;
    if (causal) {
      const int first_row = max(0, n0 - offset);
      m_begin = first_row >= Sq ? m_tiles : first_row / kBlockM;
    }
    // classify_tile's "one interval covers every row": [lts_max, lte_min) and [uts_max, ute_min).
    // lts_max is clamped to [0, Sq] first: a bound past Sq (it masks nothing, mask.h) near
    // INT32_MAX would overflow the rounding up.
    if (tbn.lte_min >= Sq) m_end = min(m_end, (min(max(tbn.lts_max, 0), Sq) + kBlockM - 1) / kBlockM);
    if (tbn.uts_max <= 0) m_begin = max(m_begin, min(tbn.ute_min, Sq) / kBlockM);
  }
  // The tile's list code (TileEntry::code): its kind, and a partial tile's test.
  __device__ __forceinline__ int code(int m) const {
    const int r0 = m * kBlockM, r1 = min(r0 + kBlockM, seqlen_q);
    if (block_mask_col != nullptr &&
        __ldg(block_mask_col + static_cast<int64_t>(r0 / kBlockMaskSize) * bm_cols) == 0)
      return static_cast<int>(TileKind::kSkip);
    TileKind k = classify_tile(tbn, r0, r1, n0, keys_end, causal, offset);
    if (k == TileKind::kUnmasked && short_tile) k = TileKind::kPartial;
    return tile_code(k, tbn, r0, r1, keys_end - 1, causal, offset, short_tile);
  }
};

// The query tiles of QueryTileClassifier as a build_tile_list list over a group of kThreads
// threads (local ids tid, barrier sync). Returns the count; call uniformly.
template <int kThreads, int kBlockM, typename Sync>
__device__ __forceinline__ int list_query_tiles(TileEntry* list, int* scratch, const MaskParams& mask,
                                                int Sq, int Sk, int64_t bhm, int n0,
                                                int keys_valid, int kBlockN, const TileBounds& tbn,
                                                int tid, Sync sync) {
  const QueryTileClassifier<kBlockM> query_tiles(mask, Sq, Sk, bhm, n0, keys_valid, kBlockN, tbn);
  return build_tile_list<kThreads>(list, scratch, query_tiles.m_begin, query_tiles.m_end,
                                   [&](int m) { return query_tiles.code(m); }, tid, sync);
}
// The same over a whole CTA of kThreads threads.
template <int kThreads, int kBlockM>
__device__ __forceinline__ int list_query_tiles(TileEntry* list, int* scratch, const MaskParams& mask,
                                                int Sq, int Sk, int64_t bhm, int n0,
                                                int keys_valid, int kBlockN, const TileBounds& tbn) {
  return list_query_tiles<kThreads, kBlockM>(list, scratch, mask, Sq, Sk, bhm, n0, keys_valid, kBlockN, tbn,
                                             static_cast<int>(threadIdx.x), [] { __syncthreads(); });
}

// The four bound forms, specialised so that partial tiles pay only for the
// comparisons their form needs (same semantics as mask.h for rows < seqlen_q):
//   0: causal, LTS         1: causal, LTS LTE
//   2: non-causal, LTS UTE 3: non-causal, LTS LTE UTS UTE
__host__ __device__ __forceinline__ int mask_form(bool causal, int num_bounds) {
  return causal ? (num_bounds == 1 ? 0 : 1) : (num_bounds == 2 ? 2 : 3);
}
// The rows a column hides, in every form: two half-open intervals [x, y) and [z, w)
// (the causal limit col > row + offset is the interval of rows below col - offset).
// Kernels convert them once per tile or item (one int4 per column, no per-form loads) and
// test them by the tile's own test (partial_tile_test). Form F leaves y (forms 0, 2) and
// z (forms 0-2) open at INT_MAX / INT_MIN.
template <int F>
struct Form {
  static constexpr int kBounds = F == 0 ? 1 : (F == 3 ? 4 : 2);
  static constexpr bool kCausal = F <= 1;
  // b: the column's raw bounds; off = seqlen_k - seqlen_q. mask.h's intervals (ColumnBounds),
  // left open where the form has no bound: the lower one to INT_MAX instead of seqlen_q, the
  // upper one of forms 0-2 from INT_MIN instead of 0; the causal forms' upper interval is the
  // causal limit.
  static __host__ __device__ __forceinline__ int4 masked_rows(int col, const int (&b)[4], int off) {
    const ColumnBounds c = load_column_bounds(b, kBounds, kCausal, INT_MAX);
    return make_int4(c.lts, c.lte, F == 3 ? c.uts : INT_MIN, kCausal ? col - off : c.ute);
  }
};
// Calls f(std::integral_constant<int, F>) for the runtime form.
template <typename Fn>
__host__ __device__ __forceinline__ void dispatch_form(int form, Fn&& f) {
  switch (form) {
    case 0: f(std::integral_constant<int, 0>()); break;
    case 1: f(std::integral_constant<int, 1>()); break;
    case 2: f(std::integral_constant<int, 2>()); break;
    default: f(std::integral_constant<int, 3>()); break;
  }
}

// Form F's masked_rows of column col, or every row for a column at or past seqlen_k.
template <int F>
__host__ __device__ __forceinline__ int4 column_masked_rows(int col, const int (&b)[4], int off, int seqlen_k) {
  return col < seqlen_k ? Form<F>::masked_rows(col, b, off) : make_int4(INT_MIN, INT_MAX, 0, 0);
}
// The same for the runtime form.
__device__ __forceinline__ int4 column_masked_rows(int form, int col, const int (&b)[4], int off, int seqlen_k) {
  int4 iv;
  dispatch_form(form, [&](auto ftag) { iv = column_masked_rows<decltype(ftag)::value>(col, b, off, seqlen_k); });
  return iv;
}

// Calls f(PartialTest<L, U>()) for the runtime test (partial_test's code). Seven of the eight
// tests have their own code; the rare (kOpen, kClosed) of four-bound calls and any unknown code
// take the exact test, both parts closed (with an eighth copy of the element loop ptxas spilled
// in the D=64 forward's tile loop, perf-notes v64).
template <int L, int U>
struct PartialTest {
  static __host__ __device__ __forceinline__ bool hides(int row, const int4& iv) { return hides_row<L, U>(row, iv); }
};
template <typename Fn>
__host__ __device__ __forceinline__ void dispatch_test(int test, Fn&& f) {
  switch (test) {
    case partial_test(kOpen, kNone): f(PartialTest<kOpen, kNone>()); break;
    case partial_test(kNone, kOpen): f(PartialTest<kNone, kOpen>()); break;
    case partial_test(kClosed, kNone): f(PartialTest<kClosed, kNone>()); break;
    case partial_test(kNone, kClosed): f(PartialTest<kNone, kClosed>()); break;
    case partial_test(kClosed, kOpen): f(PartialTest<kClosed, kOpen>()); break;
    case partial_test(kOpen, kOpen): f(PartialTest<kOpen, kOpen>()); break;
    default: f(PartialTest<kClosed, kClosed>()); break;
  }
}

// The element loop of a partial tile, shared by the masks below: a thread's fragment has
// NT n8 chunks j of column pairs c = 0, 1 and NR rows i. dispatch(g) calls g(tag) once with
// the tile's compile-time test (dispatch_form's form or dispatch_test's PartialTest), outside
// the loops, so that the test is inlined without branches; column(tag, j, c) does the
// per-column work once (loads, conversions) and returns hides(i); masked_out(j, i, c) runs for
// each element it hides.
template <int NT, int NR, typename Dispatch, typename Column, typename Out>
__device__ __forceinline__ void mask_fragment(Dispatch&& dispatch, Column&& column, Out&& masked_out) {
  dispatch([&](auto tag) {
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const auto hides = column(tag, j, c);
#pragma unroll
        for (int i = 0; i < NR; ++i)
          if (hides(i)) masked_out(j, i, c);
      }
  });
}

// The mma.sync kernels' partial tile: its columns' raw bounds, as cp.async copied them into
// shared memory (the form's kBounds ints a column), converted into intervals (one int4 a column,
// column_masked_rows) by the group's first kBlockN threads; the caller's barrier publishes them.
template <int kBlockN, int kThreads>
__device__ __forceinline__ void convert_tile_columns(int4* dst, const int* raw, int form, int n, int tid,
                                                     int causal_offset, int seqlen_k) {
  dispatch_form(form, [&](auto ftag) {
    using Fm = Form<decltype(ftag)::value>;
    for (int lc = tid; lc < kBlockN; lc += kThreads) {
      int b[4] = {};
#pragma unroll
      for (int i = 0; i < Fm::kBounds; ++i) b[i] = raw[lc * Fm::kBounds + i];
      dst[lc] = column_masked_rows<decltype(ftag)::value>(n * kBlockN + lc, b, causal_offset, seqlen_k);
    }
  });
}

// Partial tile of scores laid out as query rows x key columns (n8 chunks, this thread's
// columns 8j + 2t + {0,1}) from its columns' intervals (one int4 a column in smem: one 16-byte
// load per column instead of one per bound, perf-notes v17): calls masked_out(j, i, c) for each element
// of row rows[i] and column 8j + 2t + c of the tile that the tile's own test (TileEntry::test)
// hides; columns at or past seqlen_k hide every row.
template <int NT, int NR, typename Out>
__device__ __forceinline__ void mask_partial_rows(const int4* intervals, int test, int t, const int (&rows)[NR],
                                                  Out&& masked_out) {
  mask_fragment<NT, NR>(
      [&](auto&& g) { dispatch_test(test, g); },
      [&](auto tag, int j, int c) {
        const int4 iv = intervals[j * 8 + 2 * t + c];
        return [=](int i) { return decltype(tag)::hides(rows[i], iv); };
      },
      masked_out);
}

// The backward's transposed tiles (key rows x query columns) mask from bounds in
// registers: a thread's two key rows key0 and key0 + 8 each keep their column's
// masked_rows intervals for the whole head (keys at or past seqlen_k: all masked).
struct KeyRowBounds {
  int4 rows[2];
};
__device__ __forceinline__ KeyRowBounds load_key_row_bounds(const int32_t* bounds, int num_bounds, int form,
                                                            int key0, int seqlen_k, int causal_offset) {
  KeyRowBounds kb;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = key0 + 8 * r;
    int raw[4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
      raw[i] = (key < seqlen_k && i < num_bounds) ? __ldg(bounds + static_cast<int64_t>(key) * num_bounds + i) : 0;
    kb.rows[r] = column_masked_rows(form, key, raw, causal_offset, seqlen_k);
  }
  return kb;
}
// Partial transposed tile (n8 chunks of queries, this thread's queries q0 + 8j + 2t +
// {0,1}): calls masked_out(j, r, c) for each element of key row key0 + 8r and query
// q0 + 8j + 2t + c that the mask hides, by the tile's own test (TileEntry::test).
template <int NT, typename Out>
__device__ __forceinline__ void mask_partial_keys(const KeyRowBounds& kb, int test, int q0, int t,
                                                  Out&& masked_out) {
  mask_fragment<NT, 2>(
      [&](auto&& g) { dispatch_test(test, g); },
      [&](auto tag, int j, int c) {
        const int q = q0 + j * 8 + 2 * t + c;
        return [=](int r) { return decltype(tag)::hides(q, kb.rows[r]); };
      },
      masked_out);
}

}  // namespace cuda
}  // namespace flashmask
