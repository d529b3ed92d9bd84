// Device building blocks shared by the FlashMask CUDA kernels (sm80+):
// mma.sync m16n8k16 wrappers, ldmatrix, cp.async, a swizzled shared-memory
// tile layout, and a block-wide list compaction used to enumerate the
// non-skipped tiles of one row/column block.
//
// Fragment layouts (PTX ISA, m16n8k16 with 16-bit inputs, lane = 4*g + t):
//   A (16x16): a0 (g, 2t..2t+1) a1 (g+8, 2t..) a2 (g, 8+2t..) a3 (g+8, 8+2t..)
//   B (16x8) : b0 (k=2t..2t+1, n=g) b1 (k=8+2t.., n=g)
//   C (16x8) : c0,c1 (g, 2t..2t+1)  c2,c3 (g+8, 2t..2t+1)
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cstdint>
#include <type_traits>

#include "flashmask/mask.h"
#include "flashmask/params.h"

namespace flashmask {
namespace cuda {

constexpr float kLog2e = 1.4426950408889634f;

// ---------------------------------------------------------------- types
template <typename T>
struct Pack;
template <>
struct Pack<__half> {
  static __device__ __forceinline__ uint32_t two(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};
template <>
struct Pack<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t two(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// ---------------------------------------------------------------- PTX wrappers
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__half>(float (&c)[4], const uint32_t (&a)[4],
                                                 uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                        uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// 16-byte async copy; when !valid the destination is zero-filled and nothing is read.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_4(uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void red_add_f32(float* addr, float v) {
  asm volatile("red.global.add.f32 [%0], %1;\n" ::"l"(addr), "f"(v) : "memory");
}
// Two adjacent floats (addr 8-byte aligned): one vector reduction on sm90+.
__device__ __forceinline__ void red_add_f32x2(float* addr, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(addr), "f"(a), "f"(b) : "memory");
#else
  red_add_f32(addr, a);
  red_add_f32(addr + 1, b);
#endif
}

// ---------------------------------------------------------------- smem layout
// Row-major tile of kCols 16-bit elements per row (kCols a multiple of 64),
// 16-byte chunks XOR-swizzled by (row % 8) so that ldmatrix of 8 rows at one
// column hits 8 distinct bank groups.
template <int kCols>
__device__ __forceinline__ int swz(int row, int col) {
  static_assert(kCols % 64 == 0, "swizzle needs rows of >= 64 elements");
  const int chunk = col >> 3;
  const int pchunk = (chunk & ~7) | ((chunk ^ row) & 7);
  return row * kCols + pchunk * 8 + (col & 7);
}

// Async copy of rows [0, kRows) x [0, kCols) of a global tile (row stride in
// elements) into a swizzled smem tile; rows >= rows_valid are zero-filled.
template <int kRows, int kCols, int kThreads, typename T>
__device__ __forceinline__ void load_tile_async(T* smem, const T* gmem, int64_t row_stride,
                                                int rows_valid, int tid) {
  constexpr int kChunksPerRow = kCols / 8;
  constexpr int kChunks = kRows * kChunksPerRow;
#pragma unroll
  for (int c0 = 0; c0 < kChunks; c0 += kThreads) {
    const int c = c0 + tid;
    if (kChunks % kThreads == 0 || c < kChunks) {
      const int r = c / kChunksPerRow, ch = c % kChunksPerRow;
      const bool ok = r < rows_valid;
      const T* src = ok ? gmem + r * row_stride + ch * 8 : gmem;
      cp_async_16(smem_u32(smem + swz<kCols>(r, ch * 8)), src, ok);
    }
  }
}

// ---------------------------------------------------------------- tile lists
// Compaction by a group of kThreads threads (local ids tid = 0..kThreads-1, whole
// warps): list[i] = index | kind << 24 for every index in [begin, end) whose kind
// (classify(index)) is not kSkip, in ascending order. Every thread returns the
// count. `sync()` is the group's barrier (__syncthreads for a whole CTA); call uniformly.
template <int kThreads, typename F, typename Sync>
__device__ __forceinline__ int build_tile_list(int* list, int* scratch, int begin, int end,
                                               F classify, int tid, Sync sync) {
  constexpr int kWarps = kThreads / 32;
  const int lane = tid & 31, warp = tid >> 5;
  int count = 0;
  for (int base = begin; base < end; base += kThreads) {
    const int i = base + tid;
    const int kind = i < end ? classify(i) : static_cast<int>(TileKind::kSkip);
    const bool keep = kind != static_cast<int>(TileKind::kSkip);
    const unsigned ballot = __ballot_sync(0xffffffffu, keep);
    if (lane == 0) scratch[warp] = __popc(ballot);
    sync();
    int off = count, total = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const int cw = scratch[w];
      off += w < warp ? cw : 0;
      total += cw;
    }
    if (keep) list[off + __popc(ballot & ((1u << lane) - 1u))] = i | (kind << 24);
    count += total;
    sync();
  }
  return count;
}
// The same over a whole CTA of kThreads threads.
template <int kThreads, typename F>
__device__ __forceinline__ int build_tile_list(int* list, int* scratch, int begin, int end,
                                               F classify) {
  return build_tile_list<kThreads>(list, scratch, begin, end, classify, static_cast<int>(threadIdx.x),
                                   [] { __syncthreads(); });
}

// A persistent CTA's next work item: one thread of a group of threads takes it from the
// global counter and the group reads it through scratch[31] (build_tile_list uses only the
// first kWarps slots). Every thread returns the item; call uniformly.
template <typename Sync>
__device__ __forceinline__ int take_work_item(int* counter, int* scratch, int tid, Sync sync) {
  if (tid == 0) scratch[31] = atomicAdd(counter, 1);
  sync();
  const int item = scratch[31];
  sync();  // every thread has read it before scratch is reused
  return item;
}

__device__ __forceinline__ TileBounds load_tile_bounds(const TileBounds* tb) {
  const int4* p = reinterpret_cast<const int4*>(tb);
  const int4 a = __ldg(p), b = __ldg(p + 1);
  return TileBounds{a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
}

// Which key tiles [n*block_n, (n+1)*block_n) query rows [m0, m0 + rows_valid) of one
// (batch, mask head) `bhm` must visit: tiles [0, n_end) are candidates (the causal
// limit cuts the rest), kind(n) skips by the block mask or the tile bounds `tb` (this
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
  __device__ __forceinline__ int kind(int n) const {
    const int c0 = n * block_n, c1 = min(c0 + block_n, seqlen_k);
    if (block_mask_row != nullptr && __ldg(block_mask_row + c0 / kBlockMaskSize) == 0)
      return static_cast<int>(TileKind::kSkip);
    TileKind k = classify_tile(load_tile_bounds(tb + n), m0, row_end, c0, c1, causal, offset);
    if (k == TileKind::kUnmasked && c0 + block_n > seqlen_k) k = TileKind::kPartial;
    return static_cast<int>(k);
  }
};

// The key tiles of KeyTileClassifier as a build_tile_list list over a group of kThreads
// threads (local ids tid, barrier sync). Returns the count; call uniformly.
template <int kThreads, int kBlockN, typename Sync>
__device__ __forceinline__ int list_key_tiles(int* list, int* scratch, const MaskParams& mask,
                                              int Sq, int Sk, int64_t bhm, int m0, int rows_valid,
                                              const TileBounds* tb, int tid, Sync sync) {
  const KeyTileClassifier key_tiles(mask, Sq, Sk, bhm, m0, rows_valid, kBlockN, tb);
  return build_tile_list<kThreads>(list, scratch, 0, key_tiles.n_end,
                                   [&](int n) { return key_tiles.kind(n); }, tid, sync);
}
// The same over a whole CTA of kThreads threads.
template <int kThreads, int kBlockN>
__device__ __forceinline__ int list_key_tiles(int* list, int* scratch, const MaskParams& mask,
                                              int Sq, int Sk, int64_t bhm, int m0,
                                              int rows_valid, const TileBounds* tb) {
  return list_key_tiles<kThreads, kBlockN>(list, scratch, mask, Sq, Sk, bhm, m0, rows_valid, tb,
                                           static_cast<int>(threadIdx.x), [] { __syncthreads(); });
}

// The query tiles [m*kBlockM, (m+1)*kBlockM) that the keys [n0, n0 + keys_valid)
// of key tile `n_block` (width kBlockN, bounds summary `tbn`) must visit for one
// (batch, mask head) `bhm`, as a build_tile_list list over a group of kThreads threads
// (local ids tid, barrier sync); the mirror of list_key_tiles for the backward's
// key-block CTAs. Returns the count; call uniformly.
template <int kThreads, int kBlockM, typename Sync>
__device__ __forceinline__ int list_query_tiles(int* list, int* scratch, const MaskParams& mask,
                                                int Sq, int Sk, int64_t bhm, int n0,
                                                int keys_valid, int kBlockN, const TileBounds& tbn,
                                                int tid, Sync sync) {
  const bool causal = mask.causal;
  const int offset = Sk - Sq;
  const int m_tiles = (Sq + kBlockM - 1) / kBlockM;
  const int32_t* block_mask_col = nullptr;
  int bm_cols = 0;
  if (mask.block_mask != nullptr) {
    const int bm_rows = (Sq + kBlockMaskSize - 1) / kBlockMaskSize;
    bm_cols = (Sk + kBlockMaskSize - 1) / kBlockMaskSize;
    block_mask_col = mask.block_mask + bhm * bm_rows * bm_cols + n0 / kBlockMaskSize;
  }
  int m_begin = 0;
  if (causal) {
    const int first_row = max(0, n0 - offset);
    m_begin = first_row >= Sq ? m_tiles : first_row / kBlockM;
  }
  auto classify = [&](int m) -> int {
    const int r0 = m * kBlockM, r1 = min(r0 + kBlockM, Sq);
    if (block_mask_col != nullptr &&
        __ldg(block_mask_col + static_cast<int64_t>(r0 / kBlockMaskSize) * bm_cols) == 0)
      return static_cast<int>(TileKind::kSkip);
    TileKind k = classify_tile(tbn, r0, r1, n0, n0 + keys_valid, causal, offset);
    if (k == TileKind::kUnmasked && n0 + kBlockN > Sk) k = TileKind::kPartial;
    return static_cast<int>(k);
  };
  return build_tile_list<kThreads>(list, scratch, m_begin, m_tiles, classify, tid, sync);
}
// The same over a whole CTA of kThreads threads.
template <int kThreads, int kBlockM>
__device__ __forceinline__ int list_query_tiles(int* list, int* scratch, const MaskParams& mask,
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
// Kernels that keep bounds per column for many tiles convert them once (the Hopper
// kernels: one int4 per column, no per-form loads). Form F leaves y (forms 0, 2) and
// z (forms 0-2) open at INT_MAX / INT_MIN, so its test skips those compares; bitwise,
// not short-circuit, because && and || compile to a branch per element.
template <int F>
__device__ __forceinline__ bool in_masked_rows(int row, const int4& iv) {
  const bool lower = (F == 1 || F == 3) ? ((row >= iv.x) & (row < iv.y)) : row >= iv.x;
  const bool upper = F == 3 ? ((row >= iv.z) & (row < iv.w)) : row < iv.w;
  return lower | upper;
}
template <int F>
struct Form {
  static constexpr int kBounds = F == 0 ? 1 : (F == 3 ? 4 : 2);
  // b: the column's raw bounds; causal_offset = seqlen_k - seqlen_q.
  static __device__ __forceinline__ int4 masked_rows(int col, const int (&b)[4], int off) {
    if (F == 0) return make_int4(b[0], INT_MAX, INT_MIN, col - off);
    if (F == 1) return make_int4(b[0], b[1], INT_MIN, col - off);
    if (F == 2) return make_int4(b[0], INT_MAX, INT_MIN, b[1]);
    return make_int4(b[0], b[1], b[2], b[3]);
  }
  static __device__ __forceinline__ bool masked(int row, int col, const int (&b)[4], int off) {
    return in_masked_rows<F>(row, masked_rows(col, b, off));
  }
};
// Calls f(std::integral_constant<int, F>) for the runtime form.
template <typename Fn>
__device__ __forceinline__ void dispatch_form(int form, Fn&& f) {
  switch (form) {
    case 0: f(std::integral_constant<int, 0>()); break;
    case 1: f(std::integral_constant<int, 1>()); break;
    case 2: f(std::integral_constant<int, 2>()); break;
    default: f(std::integral_constant<int, 3>()); break;
  }
}

// Form F's masked_rows of column col, or every row for a column at or past seqlen_k.
template <int F>
__device__ __forceinline__ int4 column_masked_rows(int col, const int (&b)[4], int off, int seqlen_k) {
  return col < seqlen_k ? Form<F>::masked_rows(col, b, off) : make_int4(INT_MIN, INT_MAX, 0, 0);
}
// The same for the runtime form.
__device__ __forceinline__ int4 column_masked_rows(int form, int col, const int (&b)[4], int off, int seqlen_k) {
  int4 iv;
  dispatch_form(form, [&](auto ftag) { iv = column_masked_rows<decltype(ftag)::value>(col, b, off, seqlen_k); });
  return iv;
}

// The element loop of a partial tile, shared by the masks below: a thread's fragment has
// NT n8 chunks j of column pairs c = 0, 1 and NR rows i. column(ftag, j, c) does the
// per-column work once (loads, conversions) and returns hides(i); masked_out(j, i, c) runs
// for each element it hides. The form is dispatched once, outside the loops, so every
// form's test is inlined without branches.
template <int NT, int NR, typename Column, typename Out>
__device__ __forceinline__ void mask_fragment(int form, Column&& column, Out&& masked_out) {
  dispatch_form(form, [&](auto ftag) {
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const auto hides = column(ftag, j, c);
#pragma unroll
        for (int i = 0; i < NR; ++i)
          if (hides(i)) masked_out(j, i, c);
      }
  });
}

// Partial tile of scores laid out as query rows x key columns (n8 chunks, this
// thread's columns 8j + 2t + {0,1}): calls masked_out(j, i, c) for each element
// of row rows[i] and column col0 + 8j + 2t + c that the mask hides. `bounds` holds
// the tile's columns' raw bounds in smem, kBounds ints per column; columns at or
// past seqlen_k count as masked.
template <int NT, int NR, typename Out>
__device__ __forceinline__ void mask_partial_rows(int form, const int* bounds, int col0, int t,
                                                  int seqlen_k, int causal_offset,
                                                  const int (&rows)[NR], Out&& masked_out) {
  mask_fragment<NT, NR>(
      form,
      [&](auto ftag, int j, int c) {
        using Fm = Form<decltype(ftag)::value>;
        const int lc = j * 8 + 2 * t + c;
        const int col = col0 + lc;
        int bd[4] = {0, 0, 0, 0};
#pragma unroll
        for (int q = 0; q < Fm::kBounds; ++q) bd[q] = bounds[lc * Fm::kBounds + q];
        const bool col_ok = col < seqlen_k;
        // Bitwise, as in in_masked_rows: || compiled to a branch per element.
        return [=](int i) { return !col_ok | Fm::masked(rows[i], col, bd, causal_offset); };
      },
      masked_out);
}

// The same from columns already converted by column_masked_rows (one int4 per column
// in smem): one 16-byte load per column instead of one per bound (perf-notes v17).
template <int NT, int NR, typename Out>
__device__ __forceinline__ void mask_partial_rows(const int4* intervals, int form, int t, const int (&rows)[NR],
                                                  Out&& masked_out) {
  mask_fragment<NT, NR>(
      form,
      [&](auto ftag, int j, int c) {
        const int4 iv = intervals[j * 8 + 2 * t + c];
        return [=](int i) { return in_masked_rows<decltype(ftag)::value>(rows[i], iv); };
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
// q0 + 8j + 2t + c that the mask hides.
template <int NT, typename Out>
__device__ __forceinline__ void mask_partial_keys(const KeyRowBounds& kb, int form, int q0, int t,
                                                  Out&& masked_out) {
  mask_fragment<NT, 2>(
      form,
      [&](auto ftag, int j, int c) {
        const int q = q0 + j * 8 + 2 * t + c;
        return [=](int r) { return in_masked_rows<decltype(ftag)::value>(q, kb.rows[r]); };
      },
      masked_out);
}

}  // namespace cuda
}  // namespace flashmask
