// Backward pass, FlashAttention-2 style: probabilities are recomputed from
// q, k and the forward's lse, and D_i = rowsum(dout_i * out_i).
//
// Two kinds of work item keep it race-free and deterministic without
// per-thread copies of dq: a dk/dv item owns one key tile and sums over every
// query head of its group and every query tile; a dq item owns one query tile
// and sums over the key tiles. dq items recompute the probabilities the dk/dv
// items already had (2 of the 7 tile products), the price of never sharing an
// accumulator between threads. Neither kind depends on the other, so both run
// in one parallel loop: one fork/join per backward, which matters when other
// processes preempt a thread and every join waits for it.
#include <algorithm>
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

struct BwdScratch {
  explicit BwdScratch(int dp)
      : q(kTileRows * dp),
        dout(kTileRows * dp),
        out(kTileRows * dp),
        k(kTileCols * dp),
        v(kTileCols * dp),
        kt(dp * kTileCols),
        vt(dp * kTileCols),
        p(kTileRows * kTileCols),
        ds(kTileRows * kTileCols),
        acc_a(std::max(kTileRows, kTileCols) * dp),
        acc_b(kTileCols * dp),
        lse(kTileRows),
        delta(kTileRows) {}
  std::vector<float> q, dout, out;  // query side, q scaled like the forward's
  std::vector<float> k, v, kt, vt;  // key side; kt/vt are k/v transposed
  std::vector<float> p, ds;         // probabilities and score gradients
  std::vector<float> acc_a, acc_b;  // gradient accumulators
  std::vector<float> lse, delta;    // per query row; lse in log2 units
};

template <typename T>
class Backward {
 public:
  explicit Backward(const BwdParams& p)
      : p_(p),
        shape_(p.shape),
        dp_(padded_head_dim(p.shape.head_dim)),
        num_q_tiles_(num_tiles(p.shape.seqlen_q, kTileRows)),
        num_k_tiles_(num_tiles(p.shape.seqlen_k, kTileCols)),
        group_(p.shape.num_heads / p.shape.num_heads_k),
        q_scale_(p.softmax_scale * kLog2e),
        q_(static_cast<const T*>(p.q)),
        k_(static_cast<const T*>(p.k)),
        v_(static_cast<const T*>(p.v)),
        out_(static_cast<const T*>(p.out)),
        dout_(static_cast<const T*>(p.dout)),
        dq_(static_cast<T*>(p.dq)),
        dk_(static_cast<T*>(p.dk)),
        dv_(static_cast<T*>(p.dv)),
        tile_mask_(p.mask, p.shape) {}

  void run() {
    const int64_t num_dkdv_items =
        static_cast<int64_t>(shape_.batch) * shape_.num_heads_k * num_k_tiles_;
    const int64_t num_dq_items =
        static_cast<int64_t>(shape_.batch) * shape_.num_heads * num_q_tiles_;
    parallel_for(
        num_dkdv_items + num_dq_items, [&] { return BwdScratch(dp_); },
        [&](BwdScratch& w, int64_t item) {
          if (item < num_dkdv_items) {
            dkdv_item(w, item);
          } else {
            dq_item(w, item - num_dkdv_items);
          }
        });
  }

 private:
  // q, dout, lse and D = rowsum(dout * out) of one query tile.
  void load_query_side(BwdScratch& w, int b, int h, int qt) const {
    const int row0 = qt * kTileRows;
    const int rows = std::min(kTileRows, shape_.seqlen_q - row0);
    load_tile(element(q_, p_.q_strides, b, row0, h), p_.q_strides.row, rows, shape_.head_dim,
              q_scale_, kTileRows, dp_, w.q.data());
    load_tile(element(dout_, p_.dout_strides, b, row0, h), p_.dout_strides.row, rows,
              shape_.head_dim, 1.f, kTileRows, dp_, w.dout.data());
    load_tile(element(out_, p_.out_strides, b, row0, h), p_.out_strides.row, rows, shape_.head_dim,
              1.f, kTileRows, dp_, w.out.data());
    const float* lse = p_.lse + (static_cast<int64_t>(b) * shape_.num_heads + h) * shape_.seqlen_q;
    const float inf = __builtin_inff();
    for (int r = 0; r < kTileRows; ++r) {
      // +inf (padding rows, rows whose every key is masked) makes every
      // recomputed probability of the row exactly 0.
      const float row_lse = r < rows ? lse[row0 + r] : -inf;
      w.lse[r] = row_lse == -inf ? inf : row_lse * kLog2e;
      // D from the stored output, as in FlashAttention-2: no pass over the keys.
      const float* o = w.out.data() + r * dp_;
      const float* d = w.dout.data() + r * dp_;
      float delta = 0.f;
#pragma omp simd reduction(+ : delta)
      for (int c = 0; c < dp_; ++c) delta += o[c] * d[c];
      w.delta[r] = delta;
    }
  }

  void load_key_side(BwdScratch& w, int b, int kh, int kt) const {
    const int col0 = kt * kTileCols;
    const int cols = std::min(kTileCols, shape_.seqlen_k - col0);
    load_tile(element(k_, p_.k_strides, b, col0, kh), p_.k_strides.row, cols, shape_.head_dim, 1.f,
              kTileCols, dp_, w.k.data());
    transpose(w.k.data(), kTileCols, dp_, dp_, w.kt.data(), kTileCols);
    load_tile(element(v_, p_.v_strides, b, col0, kh), p_.v_strides.row, cols, shape_.head_dim, 1.f,
              kTileCols, dp_, w.v.data());
    transpose(w.v.data(), kTileCols, dp_, dp_, w.vt.data(), kTileCols);
  }

  // p = softmax probabilities of the tile, ds = p * (dout v^T - D).
  void probabilities(BwdScratch& w, int b, int mh, int qt, int kt, TileKind kind) const {
    gemm(kTileRows, kTileCols, dp_, w.q.data(), dp_, w.kt.data(), kTileCols, w.p.data(), kTileCols,
         /*accumulate=*/false);
    if (kind == TileKind::kPartial) tile_mask_.mask_scores(b, mh, qt, kt, w.p.data());
    for (int r = 0; r < kTileRows; ++r) {
      float* p = w.p.data() + r * kTileCols;
      const float lse = w.lse[r];
      for (int c = 0; c < kTileCols; ++c) p[c] = fast_exp2(p[c] - lse);
    }
    gemm(kTileRows, kTileCols, dp_, w.dout.data(), dp_, w.vt.data(), kTileCols, w.ds.data(),
         kTileCols,
         /*accumulate=*/false);
    for (int r = 0; r < kTileRows; ++r) {
      const float* p = w.p.data() + r * kTileCols;
      float* ds = w.ds.data() + r * kTileCols;
      const float delta = w.delta[r];
      for (int c = 0; c < kTileCols; ++c) ds[c] = p[c] * (ds[c] - delta);
    }
  }

  // dk and dv of one key tile, summed over the query heads sharing it.
  void dkdv_item(BwdScratch& w, int64_t item) const {
    const int kt = static_cast<int>(item % num_k_tiles_);
    const int kh = static_cast<int>(item / num_k_tiles_ % shape_.num_heads_k);
    const int b = static_cast<int>(item / num_k_tiles_ / shape_.num_heads_k);
    float* dk = w.acc_a.data();
    float* dv = w.acc_b.data();
    std::fill(w.acc_a.begin(), w.acc_a.end(), 0.f);
    std::fill(w.acc_b.begin(), w.acc_b.end(), 0.f);
    load_key_side(w, b, kh, kt);
    for (int h = kh * group_; h < (kh + 1) * group_; ++h) {
      const int mh = mask_head_for(p_.mask, shape_, h);
      for (int qt = 0; qt < num_q_tiles_; ++qt) {
        const TileKind kind = tile_mask_.kind(b, mh, qt, kt);
        if (kind == TileKind::kSkip) continue;
        load_query_side(w, b, h, qt);
        probabilities(w, b, mh, qt, kt, kind);
        gemm</*kTransposeX=*/true>(kTileCols, dp_, kTileRows, w.p.data(), kTileCols, w.dout.data(),
                                   dp_, dv, dp_, /*accumulate=*/true);
        gemm</*kTransposeX=*/true>(kTileCols, dp_, kTileRows, w.ds.data(), kTileCols, w.q.data(),
                                   dp_, dk, dp_, /*accumulate=*/true);
      }
    }
    const int col0 = kt * kTileCols;
    const int cols = std::min(kTileCols, shape_.seqlen_k - col0);
    // q was scaled by softmax_scale * log2(e); dk wants softmax_scale alone.
    store_tile(dk, dp_, cols, shape_.head_dim, kLn2, element(dk_, p_.dk_strides, b, col0, kh),
               p_.dk_strides.row);
    store_tile(dv, dp_, cols, shape_.head_dim, 1.f, element(dv_, p_.dv_strides, b, col0, kh),
               p_.dv_strides.row);
  }

  // dq of one query tile, summed over the key tiles.
  void dq_item(BwdScratch& w, int64_t item) const {
    const int qt = num_q_tiles_ - 1 - static_cast<int>(item % num_q_tiles_);  // as in forward.cc
    const int h = static_cast<int>(item / num_q_tiles_ % shape_.num_heads);
    const int b = static_cast<int>(item / num_q_tiles_ / shape_.num_heads);
    const int kh = h / group_;
    const int mh = mask_head_for(p_.mask, shape_, h);
    float* dq = w.acc_a.data();
    std::fill(w.acc_a.begin(), w.acc_a.end(), 0.f);
    load_query_side(w, b, h, qt);
    for (int kt = 0; kt < num_k_tiles_; ++kt) {
      const TileKind kind = tile_mask_.kind(b, mh, qt, kt);
      if (kind == TileKind::kSkip) continue;
      load_key_side(w, b, kh, kt);
      probabilities(w, b, mh, qt, kt, kind);
      gemm(kTileRows, dp_, kTileCols, w.ds.data(), kTileCols, w.k.data(), dp_, dq, dp_,
           /*accumulate=*/true);
    }
    const int row0 = qt * kTileRows;
    const int rows = std::min(kTileRows, shape_.seqlen_q - row0);
    store_tile(dq, dp_, rows, shape_.head_dim, p_.softmax_scale,
               element(dq_, p_.dq_strides, b, row0, h), p_.dq_strides.row);
  }

  const BwdParams& p_;
  const AttentionShape& shape_;
  const int dp_, num_q_tiles_, num_k_tiles_, group_;
  const float q_scale_;
  const T *q_, *k_, *v_, *out_, *dout_;
  T *dq_, *dk_, *dv_;
  const TileMask tile_mask_;
};

}  // namespace
}  // namespace cpu

void flashmask_bwd_cpu(const BwdParams& params) {
  cpu::dispatch_dtype(params.dtype, [&](auto tag) { cpu::Backward<decltype(tag)>(params).run(); });
}

}  // namespace flashmask
