// Forward pass: FlashAttention-2 style online softmax over key tiles, one
// work item per (batch, query head, query tile).
#include <algorithm>
#include <cmath>
#include <vector>

#include "flashmask_cpu.h"
#include "parallel.h"
#include "tile_io.h"
#include "tile_mask.h"
#include "tile_math.h"
#include "tiling.h"

namespace flashmask {
namespace cpu {
namespace {

struct FwdScratch {
  explicit FwdScratch(int dp)
      : q(kTileRows * dp),
        k(kTileCols * dp),
        kt(dp * kTileCols),
        v(kTileCols * dp),
        s(kTileRows * kTileCols),
        o(kTileRows * dp),
        row_max(kTileRows),
        row_sum(kTileRows) {}
  std::vector<float> q, k, kt, v, s, o;  // tiles; kt is k transposed
  std::vector<float> row_max, row_sum;   // running softmax state, log2 units
};

// Turns the scores of one tile into unnormalised probabilities in place and
// rescales the output rows accumulated so far to the new running maximum.
void online_softmax(FwdScratch& w, int dp) {
  const float neg_inf = -__builtin_inff();
  for (int r = 0; r < kTileRows; ++r) {
    float* s = w.s.data() + r * kTileCols;
    const float new_max = std::max(w.row_max[r], row_max(s, kTileCols));
    // A row with no unmasked key so far keeps max -inf; subtracting 0 then
    // keeps its probabilities exactly 0 instead of NaN.
    const float ref = new_max == neg_inf ? 0.f : new_max;
    const float alpha = fast_exp2(w.row_max[r] - ref);
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < kTileCols; ++c) {
      s[c] = fast_exp2(s[c] - ref);
      sum += s[c];
    }
    w.row_sum[r] = w.row_sum[r] * alpha + sum;
    w.row_max[r] = new_max;
    if (alpha != 1.f) scale_row(w.o.data() + r * dp, dp, alpha);
  }
}

template <typename T>
void forward(const FwdParams& p) {
  const AttentionShape& shape = p.shape;
  const int dp = padded_head_dim(shape.head_dim);
  const int num_q_tiles = num_tiles(shape.seqlen_q, kTileRows);
  const int num_k_tiles = num_tiles(shape.seqlen_k, kTileCols);
  const int group = shape.num_heads / shape.num_heads_k;
  const TileMask tile_mask(p.mask, shape);
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  T* out = static_cast<T*>(p.out);
  // Scores are kept in log2 units (scale * log2(e) folded into q) so the
  // softmax needs exp2 only.
  const float q_scale = p.softmax_scale * kLog2e;

  const int64_t num_items = static_cast<int64_t>(shape.batch) * shape.num_heads * num_q_tiles;
  parallel_for(
      num_items, [&] { return FwdScratch(dp); },
      [&](FwdScratch& w, int64_t item) {
        // Last query tiles first: under causal masks they see the most keys,
        // and handing out the big items first balances the threads' loads.
        const int qt = num_q_tiles - 1 - static_cast<int>(item % num_q_tiles);
        const int h = static_cast<int>(item / num_q_tiles % shape.num_heads);
        const int b = static_cast<int>(item / num_q_tiles / shape.num_heads);
        const int kh = h / group;
        const int mh = mask_head_for(p.mask, shape, h);
        const int row0 = qt * kTileRows;
        const int rows = std::min(kTileRows, shape.seqlen_q - row0);

        load_tile(element(q, p.q_strides, b, row0, h), p.q_strides.row, rows, shape.head_dim,
                  q_scale, kTileRows, dp, w.q.data());
        std::fill(w.o.begin(), w.o.end(), 0.f);
        std::fill(w.row_max.begin(), w.row_max.end(), -__builtin_inff());
        std::fill(w.row_sum.begin(), w.row_sum.end(), 0.f);

        for (int kt = 0; kt < num_k_tiles; ++kt) {
          const TileKind kind = tile_mask.kind(b, mh, qt, kt);
          if (kind == TileKind::kSkip) continue;
          const int col0 = kt * kTileCols;
          const int cols = std::min(kTileCols, shape.seqlen_k - col0);
          load_tile(element(k, p.k_strides, b, col0, kh), p.k_strides.row, cols, shape.head_dim,
                    1.f, kTileCols, dp, w.k.data());
          transpose(w.k.data(), kTileCols, dp, dp, w.kt.data(), kTileCols);
          load_tile(element(v, p.v_strides, b, col0, kh), p.v_strides.row, cols, shape.head_dim,
                    1.f, kTileCols, dp, w.v.data());

          gemm(kTileRows, kTileCols, dp, w.q.data(), dp, w.kt.data(), kTileCols, w.s.data(),
               kTileCols,
               /*accumulate=*/false);
          if (kind == TileKind::kPartial) tile_mask.mask_scores(b, mh, qt, kt, w.s.data());
          online_softmax(w, dp);
          gemm(kTileRows, dp, kTileCols, w.s.data(), kTileCols, w.v.data(), dp, w.o.data(), dp,
               /*accumulate=*/true);
        }

        float* lse =
            p.lse + (static_cast<int64_t>(b) * shape.num_heads + h) * shape.seqlen_q + row0;
        for (int r = 0; r < rows; ++r) {
          const float sum = w.row_sum[r];
          // sum == 0: every key of the row is masked; output 0, lse -inf.
          scale_row(w.o.data() + r * dp, dp, sum > 0.f ? 1.f / sum : 0.f);
          lse[r] = sum > 0.f ? (w.row_max[r] + std::log2(sum)) * kLn2 : -__builtin_inff();
        }
        store_tile(w.o.data(), dp, rows, shape.head_dim, 1.f,
                   element(out, p.out_strides, b, row0, h), p.out_strides.row);
      });
}

}  // namespace
}  // namespace cpu

void flashmask_fwd_cpu(const FwdParams& params) {
  cpu::dispatch_dtype(params.dtype, [&](auto tag) { cpu::forward<decltype(tag)>(params); });
}

}  // namespace flashmask
