// Host-only check (run by .ci/check_cuda_build.sh): a partial tile's own mask test
// (csrc/cuda/mask.cuh: partial_tile_test, dispatch_test; perf-notes v64) hides exactly the
// elements the call's form hides (form_hides on column_masked_rows' intervals) for every
// row of the tile and every column, those past seqlen_k included, on random bounds of all four
// forms whose values cluster around the tile's edges, over random tile shapes, short last key
// tiles and causal offsets. Every one of the eight tests must occur.
#include <cstdio>
#include <random>

#include "mask.cuh"

using namespace flashmask;
using namespace flashmask::cuda;

namespace {

// Form F's exact test: each interval closed where the form has both its bounds, else open.
template <int F>
bool form_hides(int row, const int4& iv) {
  return hides_row<(F == 1 || F == 3) ? kClosed : kOpen, F == 3 ? kClosed : kOpen>(row, iv);
}

// A bound near one of the tile's row edges, or anywhere in [-3, Sq + 3].
int random_bound(std::mt19937& rng, int r0, int r1, int Sq) {
  std::uniform_int_distribution<int> pick(0, 4), near(-2, 2), any(-3, Sq + 3);
  switch (pick(rng)) {
    case 0: return r0 + near(rng);
    case 1: return r1 + near(rng);
    case 2: return Sq + near(rng);
    default: return any(rng);
  }
}

// A start past the tile's rows or an end before them: the interval hides none of them.
int away_bound(std::mt19937& rng, bool start, int r0, int r1, int Sq) {
  return start ? std::uniform_int_distribution<int>(r1, Sq + 3)(rng) : std::uniform_int_distribution<int>(-3, r0)(rng);
}

struct Trial {
  int Sq, Sk, nb, r0, r1, c0, block_n;
  bool causal;
  // Per interval (lower, upper): -1 every bound near the tile; 0 its end before the tile's rows
  // or 1 its start past them (it hides none); 2 its far end beyond them (LTE past, UTS before).
  int away[2];
};

// The tile's own test of one element (dispatch_test's callee; host functors, not lambdas, for
// nvcc's __host__ __device__ dispatch).
struct Hides {
  int row;
  int4 iv;
  bool* out;
  template <typename Tag>
  __host__ __device__ void operator()(Tag) const { *out = Tag::hides(row, iv); }
};

// Checks one tile; returns its test (or -1 where it is not partial) and counts mismatches.
template <int F>
int check_tile(const Trial& tr, std::mt19937& rng, long& bad) {
  const int off = tr.Sk - tr.Sq, c1 = std::min(tr.c0 + tr.block_n, tr.Sk);
  static int raw[512][4];
  TileBounds t = empty_tile_bounds();
  for (int c = tr.c0; c < tr.c0 + tr.block_n; ++c) {
    int* b = raw[c - tr.c0];
    for (int i = 0; i < 4; ++i) b[i] = i < tr.nb ? random_bound(rng, tr.r0, tr.r1, tr.Sq) : 0;
    // Bound i of the raw layout for the lower interval's start / end and the upper one's.
    const int lts = 0, lte = tr.nb == 2 && tr.causal ? 1 : (tr.nb == 4 ? 1 : -1);
    const int uts = tr.nb == 4 ? 2 : -1, ute = tr.nb == 4 ? 3 : (tr.nb == 2 && !tr.causal ? 1 : -1);
    if (tr.away[0] == 1) b[lts] = away_bound(rng, true, tr.r0, tr.r1, tr.Sq);
    if (tr.away[0] == 0 && lte >= 0) b[lte] = away_bound(rng, false, tr.r0, tr.r1, tr.Sq);
    if (tr.away[1] == 1 && uts >= 0) b[uts] = away_bound(rng, true, tr.r0, tr.r1, tr.Sq);
    if (tr.away[1] == 0 && ute >= 0) b[ute] = away_bound(rng, false, tr.r0, tr.r1, tr.Sq);
    if (tr.away[0] == 2 && lte >= 0) b[lte] = away_bound(rng, true, tr.r0, tr.r1, tr.Sq);
    if (tr.away[1] == 2 && uts >= 0) b[uts] = away_bound(rng, false, tr.r0, tr.r1, tr.Sq);
    if (c < tr.Sk) extend_tile_bounds(t, load_column_bounds(raw[c - tr.c0], tr.nb, tr.causal, tr.Sq));
  }
  const bool short_tile = tr.c0 + tr.block_n > tr.Sk;
  TileKind kind = classify_tile(t, tr.r0, tr.r1, tr.c0, c1, tr.causal, off);
  if (kind == TileKind::kUnmasked && short_tile) kind = TileKind::kPartial;
  if (kind != TileKind::kPartial) return -1;
  const int test = partial_tile_test(t, tr.r0, tr.r1, c1 - 1, tr.causal, off, short_tile);
  for (int c = tr.c0; c < tr.c0 + tr.block_n; ++c) {
    const int4 iv = column_masked_rows<F>(c, raw[c - tr.c0], off, tr.Sk);
    for (int row = tr.r0; row < tr.r1; ++row) {
      bool reduced = false;
      dispatch_test(test, Hides{row, iv, &reduced});
      if (reduced != form_hides<F>(row, iv) && bad++ < 10)
        std::printf("mismatch: form %d test %d rows [%d, %d) row %d col %d Sq %d Sk %d\n", F, test, tr.r0, tr.r1,
                    row, c, tr.Sq, tr.Sk);
    }
  }
  return test;
}

}  // namespace

int main() {
  std::mt19937 rng(20261202);
  long bad = 0, partial = 0;
  long seen[16] = {};
  const int kBlockMs[] = {16, 64, 80, 128, 192}, kBlockNs[] = {16, 64, 128, 176};
  for (int trial = 0; trial < 100000; ++trial) {
    Trial tr;
    tr.Sq = std::uniform_int_distribution<int>(1, 400)(rng);
    tr.Sk = std::uniform_int_distribution<int>(1, 400)(rng);
    tr.causal = rng() & 1;
    tr.nb = tr.causal ? 1 + (rng() & 1) : 2 + 2 * (rng() & 1);
    const int bm = kBlockMs[rng() % 5];
    tr.block_n = kBlockNs[rng() % 4];
    tr.r0 = bm * std::uniform_int_distribution<int>(0, (tr.Sq - 1) / bm)(rng);
    tr.r1 = std::min(tr.r0 + bm, tr.Sq);
    tr.c0 = tr.block_n * std::uniform_int_distribution<int>(0, (tr.Sk - 1) / tr.block_n)(rng);
    for (int& a : tr.away) a = std::uniform_int_distribution<int>(-1, 2)(rng);
    int test = -1;
    switch (mask_form(tr.causal, tr.nb)) {  // the forms' templates, as dispatch_form picks them
      case 0: test = check_tile<0>(tr, rng, bad); break;
      case 1: test = check_tile<1>(tr, rng, bad); break;
      case 2: test = check_tile<2>(tr, rng, bad); break;
      default: test = check_tile<3>(tr, rng, bad); break;
    }
    if (test >= 0) {
      ++partial;
      ++seen[test & 15];
    }
  }
  int kinds = 0;
  for (int l = kNone; l <= kClosed; ++l)
    for (int u = kNone; u <= kClosed; ++u)
      if (l + u > 0) {
        kinds += seen[partial_test(l, u)] > 0;
        std::printf("  lower %d upper %d: %ld tiles\n", l, u, seen[partial_test(l, u)]);
      }
  std::printf("partial_test_check: %ld partial tiles, %d of 8 tests seen, %ld mismatches\n", partial, kinds, bad);
  return bad == 0 && kinds == 8 && seen[0] == 0 ? 0 : 1;
}
