// Forward pass: FlashAttention-2 style online softmax over key tiles, one
// work item per (batch, query head, query tile). A template over the input
// type T and the operand policy Ops (tile_math.h's ReferenceOps, microkernel.h's BlockedOps, Bf16Ops in
// kernels_avx512.cc); each kernels_*.cc instantiates it for its ISA, so every
// function here must stay a template on Ops (one copy per ISA, no ODR clash).
//
// Include only after flashmask_cpu headers and <vector>/<memory>/<algorithm>.
#pragma once

namespace flashmask {
namespace cpu {

template <class Ops>
struct FwdScratch {
  using Operand = typename Ops::Operand;
  explicit FwdScratch(int dp)
      : q(kTileRows * dp),
        p(kTileRows * kTileCols),
        s(kTileRows * kTileCols),
        o(kTileRows * dp),
        row_max(kTileRows),
        row_sum(kTileRows) {}
  std::vector<Operand> q, p;             // A operands: q, probabilities (bf16)
  std::vector<float> s, o;               // scores, output accumulator
  std::vector<float> row_max, row_sum;   // running softmax state, log2 units
  typename Ops::ThreadState thread_state;
};

// The part of a tile a pass computes: its TileExtent widened to the
// micro-kernels' steps (rows of S by Ops::kBoxRowStep, keys by Ops::kBoxColStep).
struct FwdBox {
  int r0, r1, c0, c1;
};

// The boxes a kPartial tile runs as: the unmasked box of each of its
// kPartialParts parts of query rows (rows apart, so the boxes' softmax and
// output rows never overlap). Returns how many are not empty.
template <class Ops>
int forward_boxes(const TileColumns& cols, FwdBox (&boxes)[kPartialParts]) {
  TileExtent parts[kPartialParts];
  const int n = TileMask::part_extents(cols, TileMask::Cut::kRows, parts);
  for (int i = 0; i < n; ++i) {
    const Span rows = widened(parts[i].row_begin, parts[i].row_end, Ops::kBoxRowStep);
    const Span keys = widened(parts[i].col_begin, parts[i].col_end, Ops::kBoxColStep);
    boxes[i] = {rows.begin, rows.end, keys.begin, keys.end};
  }
  return n;
}

// Turns the scores of the box into unnormalised probabilities in place,
// exp2(s * scale - reference) with `scale` >= 0 (ScoreScale::in_exp), relative
// to the row's reference maximum, and rescales the output rows accumulated so
// far when that reference moves. Rows outside the box have no unmasked key in
// this tile: nothing changes.
template <class Ops>
void online_softmax(FwdScratch<Ops>& w, int dp, const FwdBox& box, float scale) {
  const float neg_inf = -__builtin_inff();
  const int cols = box.c1 - box.c0;
  for (int r = box.r0; r < box.r1; ++r) {
    float* s = w.s.data() + r * kTileCols + box.c0;
    const float old_max = w.row_max[r];
    const float tile_max = Ops::Rows::max(s, cols) * scale;
    if (tile_max > old_max + kRescaleSlack) {
      // The output so far (none while old_max is -inf) is rescaled to the new reference.
      const float alpha = fast_exp2(old_max - tile_max);
      w.row_sum[r] *= alpha;
      if (old_max != neg_inf) scale_row(w.o.data() + r * dp, dp, alpha);
      w.row_max[r] = tile_max;
    }
    // A row with no unmasked key so far keeps max -inf; subtracting 0 then
    // keeps its probabilities exactly 0 instead of NaN.
    const float ref = w.row_max[r] == neg_inf ? 0.f : w.row_max[r];
    w.row_sum[r] += Ops::Rows::exp2_sum(s, cols, scale, ref);
  }
}

// The forward's key packing reads a key tile's rows across this many bytes of fp32 tiles'
// worth of key heads at a time (at least one head), so that its staging tiles stay in L2.
constexpr int64_t kKeyPackingGroupBytes = int64_t{128} << 10;

// K^T and V of every key tile, packed once as the B operands of S = Q K^T
// and O += P V (every query tile of the key head reads them). One item per
// (batch, key tile, group of key heads): the rows of K and V are read across
// the group's heads (load_rows_of_heads), and where the operands are fp32 and
// streaming pays (tile_io.h's rule for outputs, on the packed tiles' bytes) the
// packed tiles leave by streaming stores: the items read them back from memory
// in any case, and the stores then cost no read for ownership (4K, fp32, 2
// threads, Ice Lake guest: every-tile-skipped forward 3.8-4.2 -> 3.2-3.5 ms,
// docs/cpu-kernel.md "The forward's key packing across heads").
template <class T, class Ops>
struct PackedKeys {
  using Operand = typename Ops::Operand;
  PackedKeys(const FwdParams& p, int dp, int num_k_tiles)
      : num_heads_k(p.shape.num_heads_k),
        num_k_tiles(num_k_tiles),
        tile_size(static_cast<int64_t>(kTileCols) * dp),
        kt(num_all_tiles(p.shape) * tile_size),
        v(num_all_tiles(p.shape) * tile_size) {
    const int64_t per_head = tile_size * static_cast<int64_t>(sizeof(float));
    const int sweep = static_cast<int>(std::clamp<int64_t>(kKeyPackingGroupBytes / per_head, 1, num_heads_k));
    const int groups = (num_heads_k + sweep - 1) / sweep;
    const bool stream =
        std::is_same_v<Operand, float> && streaming_stores_pay(num_all_tiles(p.shape) * tile_size * sizeof(Operand));
    parallel_for(
        static_cast<int64_t>(p.shape.batch) * num_k_tiles * groups, [&] { return Sweep(dp, sweep); },
        [&](Sweep& w, int64_t item) {
          const int h0 = static_cast<int>(item % groups) * sweep;
          const int t = static_cast<int>(item / groups % num_k_tiles);
          const int b = static_cast<int>(item / groups / num_k_tiles);
          pack_heads(p, w, b, t, h0, std::min(sweep, num_heads_k - h0), stream);
        });
  }

  const Operand* k_tile(int b, int kh, int t) const { return kt.get() + offset(b, kh, t); }
  const Operand* v_tile(int b, int kh, int t) const { return v.get() + offset(b, kh, t); }

 private:
  // A thread's staging: the K and V tiles of a group of key heads, K^T of one.
  struct Sweep {
    Sweep(int dp, int heads)
        : k(static_cast<size_t>(heads) * kTileCols * dp), v(k.size()), k_t(k.size() / heads), rows(heads) {}
    std::vector<float> k, v, k_t;
    std::vector<float*> rows;  // load_rows_of_heads' destinations
  };

  // Key tile t of batch b for key heads [h0, h0 + n).
  void pack_heads(const FwdParams& p, Sweep& w, int b, int t, int h0, int n, bool stream) const {
    const AttentionShape& shape = p.shape;
    const int dp = static_cast<int>(tile_size / kTileCols);
    const int col0 = t * kTileCols;
    const int cols = tile_length(t, kTileCols, shape.seqlen_k);
    for (int i = 0; i < n; ++i) w.rows[i] = w.k.data() + i * tile_size;
    load_rows_of_heads<T>(p.k, p.k_strides, b, col0, cols, h0, n, shape.head_dim, kTileCols, dp, w.rows.data());
    // V straight into its packed tiles where those are fp32 and written plainly.
    for (int i = 0; i < n; ++i) {
      float* staged = w.v.data() + i * tile_size;
      w.rows[i] = stream ? staged : Ops::staging(v.get() + offset(b, h0 + i, t), staged);
    }
    load_rows_of_heads<T>(p.v, p.v_strides, b, col0, cols, h0, n, shape.head_dim, kTileCols, dp, w.rows.data());
    for (int i = 0; i < n; ++i) {
      Operand* kt_dst = kt.get() + offset(b, h0 + i, t);
      Operand* v_dst = v.get() + offset(b, h0 + i, t);
      float* k_t = stream ? w.k_t.data() : Ops::staging(kt_dst, w.k_t.data());
      Ops::transpose(w.k.data() + i * tile_size, kTileCols, dp, dp, k_t, kTileCols);
      if constexpr (std::is_same_v<Operand, float>) {
        if (stream) {
          copy_streamed(k_t, kt_dst, tile_size);
          copy_streamed(w.rows[i], v_dst, tile_size);
          continue;
        }
      }
      Ops::pack_b(k_t, dp, kTileCols, kTileCols, kt_dst);
      Ops::pack_b(w.rows[i], kTileCols, dp, dp, v_dst);
    }
#if defined(__SSE2__)
    if (stream) _mm_sfence();  // streaming stores are weakly ordered
#endif
  }

  int64_t num_all_tiles(const AttentionShape& shape) const {
    return static_cast<int64_t>(shape.batch) * num_heads_k * num_k_tiles;
  }
  int64_t offset(int b, int kh, int t) const {
    return ((static_cast<int64_t>(b) * num_heads_k + kh) * num_k_tiles + t) * tile_size;
  }

  const int num_heads_k, num_k_tiles;
  const int64_t tile_size;
  Workspace<Operand> kt, v;
};

template <class T, class Ops>
void forward(const FwdParams& p) {
  const AttentionShape& shape = p.shape;
  const int dp = padded_head_dim(shape.head_dim);
  const int num_q_tiles = num_tiles(shape.seqlen_q, kTileRows);
  const int num_k_tiles = num_tiles(shape.seqlen_k, kTileCols);
  const int group = shape.num_heads / shape.num_heads_k;
  const TileMask tile_mask(p.mask, shape);
  const PackedKeys<T, Ops> keys(p, dp, num_k_tiles);
  // Scores are kept in log2 units (scaled by softmax_scale * log2(e) after the
  // product, so that bf16 products of the unscaled inputs give the fp32 scores of
  // those inputs) and the softmax needs exp2 only.
  const ScoreScale scale(p.softmax_scale * kLog2e);
  const bool stream_out = streams_stores<T>(p.out, p.out_strides, shape.batch, shape.seqlen_q,
                                            shape.num_heads, shape.head_dim);

  const int64_t num_items = static_cast<int64_t>(shape.batch) * shape.num_heads * num_q_tiles;
  parallel_for(
      num_items, [&] { return FwdScratch<Ops>(dp); },
      [&](FwdScratch<Ops>& w, int64_t item) {
        // Last query tiles first: under causal masks they see the most keys,
        // and handing out the big items first balances the threads' loads.
        const int qt = num_q_tiles - 1 - static_cast<int>(item % num_q_tiles);
        const int h = static_cast<int>(item / num_q_tiles % shape.num_heads);
        const int b = static_cast<int>(item / num_q_tiles / shape.num_heads);
        const int kh = h / group;
        const int mh = mask_head_for(p.mask, shape, h);
        const int row0 = qt * kTileRows;
        const int rows = tile_length(qt, kTileRows, shape.seqlen_q);

        // The output rows, stored at the end, fetched while the item runs.
        prefetch_head_rows<T>(p.out, p.out_strides, b, row0, h, rows, shape.head_dim, /*for_write=*/true);
        float* q_tile = Ops::staging(w.q.data(), w.o.data());
        load_head_rows<T>(p.q, p.q_strides, b, row0, h, rows, shape.head_dim, kTileRows, dp, q_tile);
        Ops::pack_a(q_tile, kTileRows, dp, dp, w.q.data());
        std::fill(w.o.begin(), w.o.end(), 0.f);
        std::fill(w.row_max.begin(), w.row_max.end(), -__builtin_inff());
        std::fill(w.row_sum.begin(), w.row_sum.end(), 0.f);

        // One box of a visited tile: S, its masking (a kPartial tile's
        // columns; null for kUnmasked), the online softmax, O += P V.
        const auto visit_box = [&](int kt, const TileColumns* cols, const FwdBox& x) {
          const int box_rows = x.r1 - x.r0, box_cols = x.c1 - x.c0;
          float* s = w.s.data() + x.r0 * kTileCols + x.c0;
          Ops::gemm(box_rows, box_cols, dp, w.q.data() + x.r0 * dp, dp,
                    Ops::b_at(keys.k_tile(b, kh, kt), kTileCols, 0, x.c0), kTileCols, s, kTileCols,
                    /*accumulate=*/false);
          if (scale.separate_pass)
            for (int r = 0; r < box_rows; ++r) scale_row(s + r * kTileCols, box_cols, scale.in_pass);
          if (cols != nullptr) TileMask::mask_scores(*cols, w.s.data(), kTileCols, 1, {x.r0, x.r1, x.c0, x.c1});
          online_softmax(w, dp, x, scale.in_exp);
          const auto probs = Ops::a_view(s, box_rows, box_cols, kTileCols, w.p.data());
          Ops::gemm(box_rows, dp, box_cols, probs.data, probs.ld,
                    Ops::b_at(keys.v_tile(b, kh, kt), dp, x.c0, 0), dp, w.o.data() + x.r0 * dp,
                    dp, /*accumulate=*/true);
        };
        for (int kt = 0; kt < num_k_tiles; ++kt) {
          const TileKind kind = tile_mask.kind(b, mh, qt, kt);
          if (kind == TileKind::kSkip) continue;
          if (kind == TileKind::kUnmasked) {
            visit_box(kt, nullptr, {0, kTileRows, 0, kTileCols});
            continue;
          }
          TileColumns cols;
          tile_mask.columns(b, mh, qt, kt, cols);
          FwdBox boxes[kPartialParts];
          const int n = forward_boxes<Ops>(cols, boxes);
          for (int i = 0; i < n; ++i) visit_box(kt, &cols, boxes[i]);
        }

        float* lse =
            p.lse + (static_cast<int64_t>(b) * shape.num_heads + h) * shape.seqlen_q + row0;
        for (int r = 0; r < rows; ++r) {
          const float sum = w.row_sum[r];
          // sum == 0: every key of the row is masked; output 0, lse -inf.
          scale_row(w.o.data() + r * dp, dp, sum > 0.f ? 1.f / sum : 0.f);
          lse[r] = sum > 0.f ? (w.row_max[r] + std::log2(sum)) * kLn2 : -__builtin_inff();
        }
        store_head_rows<T>(w.o.data(), dp, 1.f, p.out, p.out_strides, b, row0, h, rows, shape.head_dim,
                           stream_out);
      });
}

}  // namespace cpu
}  // namespace flashmask
