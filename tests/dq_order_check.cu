// Host-only check (run by .ci/check_cuda_build.sh): the Hopper backward's dQ staging order
// (csrc/cuda/dq_accum_order.cuh) against the wgmma accumulator fragment it stores. Each
// consumer thread's group h of chunk j of its dQ part means row wrow + 8h (and with four values
// wrow + 8 too), columns 8j + 2t and +1 of the part; stored at run cw * runs + j / 4,
// group_offset(j % 4, h, u), it must be read back by part_origin() and part_position() as that
// row and column, and every float of a tile must be written exactly once.
#include <cstdio>
#include <vector>

#include "dq_accum_order.cuh"

using flashmask::cuda::DqFragmentOrder;

// kTileRows x D tile, two consumers, each a kDqCols-wide part (or 64 rows of it: kSplitRows).
template <int kTileRows, int D, int kDqCols, bool kSplitRows>
int check() {
  using Order = DqFragmentOrder<kTileRows>;
  constexpr int kRuns = kDqCols / 32;  // per consumer, as in BwdSm90Epilogue::kDqBlocks
  std::vector<int> writes(kTileRows * D, 0);
  int bad = 0;
  for (int cw = 0; cw < 2; ++cw)
    for (int u = 0; u < 128; ++u) {
      const int wrow = 16 * (u / 32) + (u % 32) / 4, t = u % 4;
      const int row0 = kSplitRows ? 64 * cw : 0, col0 = kSplitRows ? 0 : kDqCols * cw;
      for (int h = 0; h < Order::kHalves; ++h)
        for (int j = 0; j < kDqCols / 8; ++j) {
          const int f = (cw * kRuns + j / 4) * Order::kRunFloats + Order::group_offset(j % 4, h, u);
          int prow0, pcol0, row, col;
          Order::part_origin(f / Order::kPartFloats, prow0, pcol0);
          Order::part_position(f % Order::kPartFloats / Order::kGroup, row, col);
          bad += f % Order::kGroup != 0 || prow0 + row != row0 + wrow + 8 * h || pcol0 + col != col0 + 8 * j + 2 * t;
          for (int e = 0; e < Order::kGroup; ++e) ++writes[f + e];
        }
    }
  for (int n : writes) bad += n != 1;
  std::printf("dq_order_check: %d-row tile, D=%d: %s\n", kTileRows, D, bad ? "MISMATCH" : "ok");
  return bad;
}

int main() {
  const int bad = check<64, 128, 64, false>() + check<128, 64, 64, true>() + check<64, 256, 128, false>();
  return bad ? 1 : 0;
}
