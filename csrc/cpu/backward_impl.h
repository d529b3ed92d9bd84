// Backward pass, FlashAttention-2 style: probabilities are recomputed from
// q, k and the forward's lse, and D_i = rowsum(dout_i * out_i). A template
// over the input type T and the operand policy Ops, like forward_impl.h (and
// under the same rule: every function a template on Ops).
//
// Work items own key tiles: item (batch, key head, chunk c) takes the c-th
// of num_chunks contiguous runs of key tiles and, per tile, sums dk and dv
// over the query heads of its group and every query tile: five tile products
// per visited tile pair, the minimum. Contiguous, not interleaved:
// neighbouring key tiles attend to the same query tiles (document masks), so
// a chunk touches fewer dq partial tiles and finds the packed query tiles in
// cache. The items' sizes then differ (causal: 7:5:3:1 at four chunks); every
// key head's first chunk is handed out first, so the dynamic schedule evens
// them out (8 key heads, causal: equal loads at 2 to 16 threads; at 32, one
// item each, the largest is 7/4 of the mean). dq, which every key tile adds
// to, goes to the chunk's own fp32 partial sum, and a last parallel pass adds
// the chunks in a fixed order. The chunk count depends on the problem only,
// never on the thread count, so the gradients are bitwise the same whatever
// the threads (deterministic).
//
// Products run transposed (S^T = K Q^T, tiles are [key][query]) so that P^T
// and dS^T, the A operands of dV += P^T dO and dK += dS^T Q, come out of the
// softmax in the layout the micro-kernel reads; dq is accumulated transposed
// too (dQ^T += K^T dS^T, dS^T as the B operand) and turned back at the end.
#pragma once

namespace flashmask {
namespace cpu {

// Enough items to spread a small batch x head count over many cores...
constexpr int kBwdTargetItems = 32;
// ...but never more dq partial sums than this (bytes, all chunks together).
constexpr int64_t kDqPartialBudget = int64_t{256} << 20;

// Query-side operands of every (batch, head, query tile), packed once, on
// first use (run_once).
template <class Ops>
struct QuerySide {
  using Operand = typename Ops::Operand;
  QuerySide(int64_t num_tiles, int dp)
      : tile_size(static_cast<int64_t>(kTileRows) * dp),
        q_t(num_tiles * tile_size),
        dout_t(num_tiles * tile_size),
        q(num_tiles * tile_size),
        dout(num_tiles * tile_size),
        lse(num_tiles * kTileRows),
        delta(num_tiles * kTileRows),
        packed(num_tiles) {}
  const int64_t tile_size;
  // B operands: q^T and dout^T [dp x rows] of S^T = K Q^T and dP^T = V dO^T;
  // q and dout [rows x dp] of dK += dS^T Q and dV += P^T dO.
  Workspace<Operand> q_t, dout_t, q, dout;
  Workspace<float> lse, delta;  // per row; lse in log2 units, +inf if masked
  Workspace<uint8_t> packed;     // per tile: run_once's flag
};

// A key item sweeps the query tiles once for several of its key tiles at a time: each
// visited query tile's packed operands and dq partial tile (80 KiB at head_dim 64, fp32)
// are read from memory once for all of them, where one key tile at a time read them again
// for every key tile once a key tile's query tiles outgrew L2 (causal at 4K: 32 query
// tiles of 80 KiB per key tile; docs/cpu-kernel.md "Key tiles four at a time"). As many
// key tiles as their operands fit kSweepKeysBytes, at most kMaxKeysPerSweep: with the
// query tile beside them they stay in L2 (head_dim 64: 4, 128: 2, 256: 1 in fp32).
constexpr int kMaxKeysPerSweep = 4;
constexpr int64_t kSweepKeysBytes = int64_t{384} << 10;

// One key tile's operands and gradient accumulators.
template <class Ops>
struct KeyTileOperands {
  using Operand = typename Ops::Operand;
  explicit KeyTileOperands(int dp)
      : dk(kTileCols * dp), dv(kTileCols * dp), k(kTileCols * dp), v(kTileCols * dp), k_t(dp * kTileCols) {}
  std::vector<float> dk, dv;       // dK and dV of the key tile
  std::vector<Operand> k, v, k_t;  // A operands: k, v [keys x dp], k^T [dp x keys]
};

// Key tiles per sweep at padded head dim dp (above).
template <class Ops>
int keys_per_sweep(int dp) {
  const int64_t per_key = int64_t{kTileCols} * dp * (2 * sizeof(float) + 3 * sizeof(typename Ops::Operand));
  return static_cast<int>(std::clamp<int64_t>(kSweepKeysBytes / per_key, 1, kMaxKeysPerSweep));
}

template <class Ops>
struct BwdScratch {
  using Operand = typename Ops::Operand;
  BwdScratch(int dp, int num_keys)
      : a(std::max(kTileRows, kTileCols) * dp),
        b(std::max(kTileRows, kTileCols) * dp),
        s(kTileCols * kTileRows),
        ds(kTileCols * kTileRows),
        keys(num_keys, KeyTileOperands<Ops>(dp)),
        p_op(kTileCols * kTileRows),
        ds_op(kTileCols * kTileRows),
        ds_t_op(kTileCols * kTileRows) {}
  std::vector<float> a, b;        // fp32 staging for loads and transposes
  std::vector<float> s, ds;       // S^T then P^T, dP^T then dS^T: [key][query]
  std::vector<KeyTileOperands<Ops>> keys;     // the key tiles of the current sweep (key pass)
  std::vector<Operand> p_op, ds_op, ds_t_op;  // P^T, dS^T as A, dS^T as B
  typename Ops::ThreadState thread_state;
};

template <class T, class Ops>
class Backward {
 public:
  using Operand = typename Ops::Operand;

  explicit Backward(const BwdParams& p)
      : p_(p),
        shape_(p.shape),
        dp_(padded_head_dim(p.shape.head_dim)),
        num_q_tiles_(num_tiles(p.shape.seqlen_q, kTileRows)),
        num_k_tiles_(num_tiles(p.shape.seqlen_k, kTileCols)),
        group_(p.shape.num_heads / p.shape.num_heads_k),
        scale_(p.softmax_scale * kLog2e),
        num_chunks_(chunk_count()),
        tile_mask_(p.mask, p.shape),
        query_(static_cast<int64_t>(p.shape.batch) * p.shape.num_heads * num_q_tiles_, dp_),
        dq_t_(num_chunks_ * dq_partial_size()),
        dq_written_(num_chunks_ * num_q_items()),
        stream_dq_(streams_stores<T>(p.dq, p.dq_strides, shape_.batch, shape_.seqlen_q, shape_.num_heads,
                                     shape_.head_dim)),
        stream_dk_(streams_stores<T>(p.dk, p.dk_strides, shape_.batch, shape_.seqlen_k, shape_.num_heads_k,
                                     shape_.head_dim)),
        stream_dv_(streams_stores<T>(p.dv, p.dv_strides, shape_.batch, shape_.seqlen_k, shape_.num_heads_k,
                                     shape_.head_dim)) {}

  void run() {
    std::fill_n(query_.packed.get(), num_q_items(), uint8_t{0});
    std::fill_n(dq_written_.get(), num_chunks_ * num_q_items(), uint8_t{0});
    parallel_for(
        static_cast<int64_t>(shape_.batch) * shape_.num_heads_k * num_chunks_,
        [&] { return BwdScratch<Ops>(dp_, keys_per_sweep<Ops>(dp_)); },
        [&](BwdScratch<Ops>& w, int64_t item) { key_chunk(w, item); });
    parallel_for(
        num_q_items(), [&] { return BwdScratch<Ops>(dp_, 0); },
        [&](BwdScratch<Ops>& w, int64_t item) { store_dq(w, item); });
  }

 private:
  int chunk_count() const {
    const int64_t key_heads = static_cast<int64_t>(shape_.batch) * shape_.num_heads_k;
    const int64_t wanted = (kBwdTargetItems + key_heads - 1) / key_heads;
    const int64_t affordable = kDqPartialBudget / (dq_partial_size() * sizeof(float));
    return static_cast<int>(std::max<int64_t>(1, std::min({wanted, affordable,
                                                           int64_t{num_k_tiles_}})));
  }
  // One chunk's dq^T partial sums: per (batch, head, query tile) a
  // contiguous [dp][kTileRows] tile (contiguous, not [dp][seqlen_q]: rows
  // seqlen_q apart would all fall into the same few L1 sets).
  int64_t num_q_items() const {
    return static_cast<int64_t>(shape_.batch) * shape_.num_heads * num_q_tiles_;
  }
  int64_t dq_partial_size() const {
    return static_cast<int64_t>(shape_.batch) * shape_.num_heads * num_q_tiles_ * dp_ * kTileRows;
  }
  float* dq_t(int chunk, int64_t q_item) const {
    return dq_t_.get() + chunk * dq_partial_size() + q_item * dp_ * kTileRows;
  }

  // A query item (batch, head, query tile) as its batch, head, first row and valid rows.
  struct QueryTile {
    int b, h, row0, rows;
  };
  QueryTile query_tile_of(int64_t item) const {
    const int row0 = static_cast<int>(item % num_q_tiles_) * kTileRows;
    return {static_cast<int>(item / num_q_tiles_ / shape_.num_heads),
            static_cast<int>(item / num_q_tiles_ % shape_.num_heads), row0,
            tile_length(static_cast<int>(item % num_q_tiles_), kTileRows, shape_.seqlen_q)};
  }

  // Packs q, dout, lse and D = rowsum(dout * out) of one query tile (in the
  // key pass, when a pair first needs it: w.a and w.b are free then).
  void pack_query_tile(BwdScratch<Ops>& w, int64_t item) const {
    const auto [b, h, row0, rows] = query_tile_of(item);
    const int64_t at = item * query_.tile_size;
    Operand* const q_dst = query_.q.get() + at;
    Operand* const q_t_dst = query_.q_t.get() + at;
    Operand* const dout_dst = query_.dout.get() + at;
    Operand* const dout_t_dst = query_.dout_t.get() + at;
    float* q = Ops::staging(q_dst, w.a.data());
    load_head_rows<T>(p_.q, p_.q_strides, b, row0, h, rows, shape_.head_dim, kTileRows, dp_, q);
    Ops::pack_b(q, kTileRows, dp_, dp_, q_dst);
    float* q_t = Ops::staging(q_t_dst, w.b.data());
    Ops::transpose(q, kTileRows, dp_, dp_, q_t, kTileRows);
    Ops::pack_b(q_t, dp_, kTileRows, kTileRows, q_t_dst);

    float* dout = Ops::staging(dout_dst, w.a.data());
    float* out = w.b.data();
    load_head_rows<T>(p_.dout, p_.dout_strides, b, row0, h, rows, shape_.head_dim, kTileRows, dp_, dout);
    load_head_rows<T>(p_.out, p_.out_strides, b, row0, h, rows, shape_.head_dim, kTileRows, dp_, out);
    const float* lse = p_.lse + (static_cast<int64_t>(b) * shape_.num_heads + h) * shape_.seqlen_q;
    const float inf = __builtin_inff();
    for (int r = 0; r < kTileRows; ++r) {
      // +inf (padding rows, rows whose every key is masked) makes every
      // recomputed probability of the row exactly 0.
      const float row_lse = r < rows ? lse[row0 + r] : -inf;
      query_.lse.get()[item * kTileRows + r] = row_lse == -inf ? inf : row_lse * kLog2e;
      // D from the stored output, as in FlashAttention-2: no pass over the keys.
      const float* o = out + r * dp_;
      const float* d = dout + r * dp_;
      float delta = 0.f;
#pragma omp simd reduction(+ : delta)
      for (int c = 0; c < dp_; ++c) delta += o[c] * d[c];
      query_.delta.get()[item * kTileRows + r] = delta;
    }
    Ops::pack_b(dout, kTileRows, dp_, dp_, dout_dst);
    float* dout_t = Ops::staging(dout_t_dst, w.b.data());  // out is used up
    Ops::transpose(dout, kTileRows, dp_, dp_, dout_t, kTileRows);
    Ops::pack_b(dout_t, dp_, kTileRows, kTileRows, dout_t_dst);
  }

  // k, v and k^T of one key tile as A operands, its dK and dV zeroed.
  void load_key_tile(BwdScratch<Ops>& w, KeyTileOperands<Ops>& key, int b, int kh, int kt) const {
    std::fill(key.dk.begin(), key.dk.end(), 0.f);
    std::fill(key.dv.begin(), key.dv.end(), 0.f);
    const int col0 = kt * kTileCols;
    const int cols = tile_length(kt, kTileCols, shape_.seqlen_k);
    float* k = Ops::staging(key.k.data(), w.a.data());
    load_head_rows<T>(p_.k, p_.k_strides, b, col0, kh, cols, shape_.head_dim, kTileCols, dp_, k);
    Ops::pack_a(k, kTileCols, dp_, dp_, key.k.data());
    float* k_t = Ops::staging(key.k_t.data(), w.b.data());
    Ops::transpose(k, kTileCols, dp_, dp_, k_t, kTileCols);
    Ops::pack_a(k_t, dp_, kTileCols, kTileCols, key.k_t.data());
    float* v = Ops::staging(key.v.data(), w.a.data());  // k is packed
    load_head_rows<T>(p_.v, p_.v_strides, b, col0, kh, cols, shape_.head_dim, kTileCols, dp_, v);
    Ops::pack_a(v, kTileCols, dp_, dp_, key.v.data());
  }

  // The part of a (key tile, query tile) pair the products cover: its
  // TileExtent widened to the micro-kernels' steps, keys (M of S^T) by
  // Ops::kBoxRowStep, queries (N of S^T) by Ops::kBoxColStep.
  struct Box {
    int k0, k1, n0, n1;
    int keys() const { return k1 - k0; }
    int queries() const { return n1 - n0; }
    int offset() const { return k0 * kTileRows + n0; }  // into the [key][query] tiles
  };

  static Box backward_box(const TileExtent& e) {
    const Span keys = widened(e.col_begin, e.col_end, Ops::kBoxRowStep);
    const Span queries = widened(e.row_begin, e.row_end, Ops::kBoxColStep);
    return {keys.begin, keys.end, queries.begin, queries.end};
  }
  static constexpr Box kWholeTile{0, kTileCols, 0, kTileRows};

  // The boxes a kPartial (key tile, query tile) pair runs as: the unmasked
  // box of each of its kPartialParts parts of keys (keys apart, so their dK/dV
  // rows never overlap), as one whole-tile box when they join into it.
  // Returns how many are not empty.
  static int boxes_of(const TileColumns& cols, Box (&boxes)[kPartialParts]) {
    TileExtent parts[kPartialParts];
    const int n = TileMask::part_extents(cols, TileMask::Cut::kKeys, parts);
    bool whole = n == kPartialParts;
    for (int i = 0; i < n; ++i) {
      boxes[i] = backward_box(parts[i]);
      whole = whole && boxes[i].queries() == kTileRows && boxes[i].keys() == kTileCols / kPartialParts;
    }
    if (whole) {
      boxes[0] = kWholeTile;
      return 1;
    }
    return n;
  }

  // One pair's work. kWhole (the box is the whole tile: every unmasked tile
  // and the partial ones whose parts' boxes join into it) makes the sizes compile-time constants, which the
  // compiler turns into fully unrolled products: without it the backward ran
  // 5-7% slower on causal masks.
  // cols: a kPartial pair's columns, null for a kUnmasked one.
  template <bool kWhole>
  void visit_pair(BwdScratch<Ops>& w, KeyTileOperands<Ops>& key, int chunk, int64_t q_item,
                  const TileColumns* cols, const Box& box) const {
    const Box x = kWhole ? kWholeTile : box;
    probabilities(w, key, q_item, cols, x);
    accumulate_pair(w, key, chunk, q_item, x);
  }

  // P^T and dS^T = P^T * (dP^T - D) of the box of one (key tile, query tile) pair.
  inline void probabilities(BwdScratch<Ops>& w, const KeyTileOperands<Ops>& key, int64_t q_item,
                            const TileColumns* cols, const Box& x) const {
    const int64_t at = q_item * query_.tile_size;
    float* s = w.s.data() + x.offset();
    float* ds = w.ds.data() + x.offset();
    Ops::gemm(x.keys(), x.queries(), dp_, key.k.data() + x.k0 * dp_, dp_,
              Ops::b_at(query_.q_t.get() + at, kTileRows, 0, x.n0), kTileRows, s, kTileRows,
              /*accumulate=*/false);
    if (scale_.separate_pass)
      for (int c = 0; c < x.keys(); ++c) scale_row(s + c * kTileRows, x.queries(), scale_.in_pass);
    if (cols != nullptr) TileMask::mask_scores(*cols, w.s.data(), 1, kTileRows, {x.n0, x.n1, x.k0, x.k1});
    Ops::gemm(x.keys(), x.queries(), dp_, key.v.data() + x.k0 * dp_, dp_,
              Ops::b_at(query_.dout_t.get() + at, kTileRows, 0, x.n0), kTileRows, ds, kTileRows,
              /*accumulate=*/false);
    const float* lse = query_.lse.get() + q_item * kTileRows + x.n0;
    const float* delta = query_.delta.get() + q_item * kTileRows + x.n0;
    for (int c = 0; c < x.keys(); ++c)
      Ops::Rows::probabilities(s + c * kTileRows, ds + c * kTileRows, x.queries(), scale_.in_exp, lse, delta);
  }

  // dv += P^T dO, dk += dS^T Q and the chunk's dq^T += K^T dS^T for one pair.
  inline void accumulate_pair(BwdScratch<Ops>& w, KeyTileOperands<Ops>& key, int chunk, int64_t q_item,
                              const Box& x) const {
    const int64_t at = q_item * query_.tile_size;
    const auto p_t = Ops::a_view(w.s.data() + x.offset(), x.keys(), x.queries(), kTileRows,
                                 w.p_op.data());
    Ops::gemm(x.keys(), dp_, x.queries(), p_t.data, p_t.ld,
              Ops::b_at(query_.dout.get() + at, dp_, x.n0, 0), dp_, key.dv.data() + x.k0 * dp_, dp_,
              /*accumulate=*/true);
    const auto ds_t = Ops::a_view(w.ds.data() + x.offset(), x.keys(), x.queries(), kTileRows,
                                  w.ds_op.data());
    Ops::gemm(x.keys(), dp_, x.queries(), ds_t.data, ds_t.ld,
              Ops::b_at(query_.q.get() + at, dp_, x.n0, 0), dp_, key.dk.data() + x.k0 * dp_, dp_,
              /*accumulate=*/true);
    const auto ds_t_b = Ops::b_view(w.ds.data() + x.offset(), x.keys(), x.queries(), kTileRows,
                                    w.ds_t_op.data());
    // A chunk's first write to a dq^T tile stores instead of adding (zeroing
    // first what the box leaves out): no zeroing pass over every tile, and
    // store_dq skips the tiles a chunk never reached.
    float* dq = dq_t(chunk, q_item);
    uint8_t& written = dq_written_.get()[chunk * num_q_items() + q_item];
    const bool whole = x.queries() == kTileRows;
    if (!written && !whole) std::fill_n(dq, dp_ * kTileRows, 0.f);
    Ops::gemm(dp_, x.queries(), x.keys(), key.k_t.data() + x.k0, kTileCols, ds_t_b.data, ds_t_b.ld,
              dq + x.n0, kTileRows, /*accumulate=*/written || !whole);
    written = 1;
  }

  // While the key tiles [kt, kt + n) run: their dk and dv rows fetched for the stores at
  // the sweep's end, and the k and v rows of the chunk's next key tile.
  void prefetch_key_rows(int b, int kh, int kt, int n, int kt_end) const {
    const auto rows = [&](int t) { return tile_length(t, kTileCols, shape_.seqlen_k); };
    const int d = shape_.head_dim;
    for (int t = kt; t < kt + n; ++t) {
      prefetch_head_rows<T>(p_.dk, p_.dk_strides, b, t * kTileCols, kh, rows(t), d, /*for_write=*/true);
      prefetch_head_rows<T>(p_.dv, p_.dv_strides, b, t * kTileCols, kh, rows(t), d, /*for_write=*/true);
    }
    const int next = kt + n;
    if (next == kt_end) return;
    prefetch_head_rows<T>(p_.k, p_.k_strides, b, next * kTileCols, kh, rows(next), d, /*for_write=*/false);
    prefetch_head_rows<T>(p_.v, p_.v_strides, b, next * kTileCols, kh, rows(next), d, /*for_write=*/false);
  }

  // One (key tile kt, query tile) pair of batch b, query head h (mask head mh), unless skipped.
  void visit(BwdScratch<Ops>& w, KeyTileOperands<Ops>& key, int chunk, int b, int h, int mh, int qt,
             int kt) const {
    const TileKind kind = tile_mask_.kind(b, mh, qt, kt);
    if (kind == TileKind::kSkip) return;
    const int64_t q_item = (static_cast<int64_t>(b) * shape_.num_heads + h) * num_q_tiles_ + qt;
    run_once(query_.packed.get() + q_item, [&] { pack_query_tile(w, q_item); });
    if (kind == TileKind::kUnmasked) {
      visit_pair<true>(w, key, chunk, q_item, nullptr, kWholeTile);
      return;
    }
    TileColumns cols;
    tile_mask_.columns(b, mh, qt, kt, cols);
    Box boxes[kPartialParts];
    const int n = boxes_of(cols, boxes);
    if (n == 1 && boxes[0].keys() == kTileCols && boxes[0].queries() == kTileRows) {
      visit_pair<true>(w, key, chunk, q_item, &cols, kWholeTile);
      return;
    }
    for (int i = 0; i < n; ++i) visit_pair<false>(w, key, chunk, q_item, &cols, boxes[i]);
  }

  // dk and dv of the chunk's key tiles; their dq contributions to its partials. The key
  // tiles go keys_per_sweep at a time through every query tile; a query tile's dq partial
  // still takes their contributions in key order, so the gradients are those of one key
  // tile at a time, bit for bit.
  void key_chunk(BwdScratch<Ops>& w, int64_t item) const {
    const int64_t key_heads = static_cast<int64_t>(shape_.batch) * shape_.num_heads_k;
    const int chunk = static_cast<int>(item / key_heads);
    const int kh = static_cast<int>(item % key_heads % shape_.num_heads_k);
    const int b = static_cast<int>(item % key_heads / shape_.num_heads_k);
    const int kt_end = static_cast<int>(int64_t{num_k_tiles_} * (chunk + 1) / num_chunks_);
    const int per_sweep = static_cast<int>(w.keys.size());
    for (int kt = static_cast<int>(int64_t{num_k_tiles_} * chunk / num_chunks_); kt < kt_end; kt += per_sweep) {
      const int n = std::min(per_sweep, kt_end - kt);
      for (int i = 0; i < n; ++i) load_key_tile(w, w.keys[i], b, kh, kt + i);
      prefetch_key_rows(b, kh, kt, n, kt_end);
      for (int h = kh * group_; h < (kh + 1) * group_; ++h) {
        const int mh = mask_head_for(p_.mask, shape_, h);
        for (int qt = 0; qt < num_q_tiles_; ++qt)
          for (int i = 0; i < n; ++i) visit(w, w.keys[i], chunk, b, h, mh, qt, kt + i);
      }
      for (int i = 0; i < n; ++i) {
        const int col0 = (kt + i) * kTileCols;
        const int cols = tile_length(kt + i, kTileCols, shape_.seqlen_k);
        store_head_rows<T>(w.keys[i].dk.data(), dp_, p_.softmax_scale, p_.dk, p_.dk_strides, b, col0, kh, cols,
                           shape_.head_dim, stream_dk_);
        store_head_rows<T>(w.keys[i].dv.data(), dp_, 1.f, p_.dv, p_.dv_strides, b, col0, kh, cols,
                           shape_.head_dim, stream_dv_);
      }
    }
  }

  // dq of one query tile: the chunks' partial sums added in chunk order.
  void store_dq(BwdScratch<Ops>& w, int64_t item) const {
    const auto [b, h, row0, rows] = query_tile_of(item);
    const int size = dp_ * kTileRows;
    float* sum_t = w.a.data();  // [dp][kTileRows]
    std::fill_n(sum_t, size, 0.f);
    for (int c = 0; c < num_chunks_; ++c) {
      if (!dq_written_.get()[c * num_q_items() + item]) continue;
      const float* part = dq_t(c, item);
      for (int i = 0; i < size; ++i) sum_t[i] += part[i];
    }
    Ops::transpose(sum_t, dp_, kTileRows, kTileRows, w.b.data(), dp_);
    store_head_rows<T>(w.b.data(), dp_, p_.softmax_scale, p_.dq, p_.dq_strides, b, row0, h, rows, shape_.head_dim,
                       stream_dq_);
  }

  const BwdParams& p_;
  const AttentionShape& shape_;
  const int dp_, num_q_tiles_, num_k_tiles_, group_;
  const ScoreScale scale_;  // raw scores to log2 units, as in forward_impl.h
  const int num_chunks_;
  const TileMask tile_mask_;
  const QuerySide<Ops> query_;
  const Workspace<float> dq_t_;
  const Workspace<uint8_t> dq_written_;  // [chunk][query item]: partial tile holds a sum
  const bool stream_dq_, stream_dk_, stream_dv_;  // outputs written with streaming stores (tile_io.h)
};

}  // namespace cpu
}  // namespace flashmask
