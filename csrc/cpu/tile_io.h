// Moving tiles between the strided [batch, seqlen, heads, head_dim] tensors
// and the contiguous, zero-padded fp32 tiles the arithmetic runs on.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "convert.h"
#include "flashmask/head_dims.h"
#include "flashmask/params.h"

namespace flashmask {
namespace cpu {

// Element (b, row, head, 0) of a [batch, seqlen, heads, head_dim] tensor.
template <typename T>
T* element(T* base, const TensorStrides& s, int b, int row, int head) {
  return base + b * s.batch + row * s.row + head * s.head;
}

// dst[tile_rows x ld] = src[rows x cols], converted to fp32; rows and columns past
// the valid ones are zero so they drop out of every product.
template <typename T>
void load_tile(const T* __restrict src, int64_t row_stride, int rows, int cols, int tile_rows, int ld,
               float* __restrict dst) {
  for (int r = 0; r < tile_rows; ++r) {
    float* d = dst + r * ld;
    if (r >= rows) {
      for (int c = 0; c < ld; ++c) d[c] = 0.f;
      continue;
    }
    const T* s = src + r * row_stride;
    for (int c = 0; c < cols; ++c) d[c] = to_float(s[c]);
    for (int c = cols; c < ld; ++c) d[c] = 0.f;
  }
}

// Outputs of at least this many bytes are written with non-temporal stores
// (SSE2 streaming stores, baseline x86-64) where streaming_stores_pay():
// straight to memory, without first reading every line for ownership, which an
// ordinary store of a line not in the cache does. The op's outputs are written
// once and not read back by the kernel. Measured at N=4K, fp32, 2 threads (8 MiB
// per output), on the AMD EPYC Zen 5 guest: every-tile-skipped call -1.8 ms
// (-25%), causal -2.9 ms. Smaller outputs keep ordinary stores, so that a next op
// finds them in the cache.
constexpr size_t kStreamedOutputBytes = size_t{4} << 20;

// Whether an output of output_bytes (or the forward's packed keys, of as many bytes)
// leaves by streaming stores:
// FLASHMASK_CPU_STREAMING_STORES=1 or 0 if set, else where a call's working set does
// not fit the last-level cache (tile_io.cc), taken as kWorkingSetTensors tensors of the
// output's size (the backward's five inputs, three outputs, four packed query-side
// operands and its dq partial sums: 12-16). Where it fits, ordinary stores keep the
// outputs in the cache for the next call or op, and streaming ones send them to memory:
// on the AMX Xeon (300 MiB L3) the every-tile-skipped call at 4K took 14.6 ms streamed
// against 4.9 ms not (bf16, 2 threads); on the guests with 32-48 MiB of L3 streaming
// won (docs/cpu-kernel.md).
constexpr int64_t kWorkingSetTensors = 12;
bool streaming_stores_pay(int64_t output_bytes);

// Whether stores to a [batch, seqlen, heads, head_dim] output of T stream:
// kStreamedOutputBytes or more, and every row 16-byte aligned and a multiple
// of 16 bytes long (what the streaming store writes); SSE2 only; and
// streaming_stores_pay(its bytes).
template <typename T>
bool streams_stores(const void* base, const TensorStrides& s, int batch, int seqlen, int heads,
                    int head_dim) {
#if defined(__SSE2__)
  const auto aligned = [](int64_t bytes) { return bytes % 16 == 0; };
  const int64_t bytes = static_cast<int64_t>(batch) * seqlen * heads * head_dim * sizeof(T);
  return bytes >= static_cast<int64_t>(kStreamedOutputBytes) &&
         aligned(static_cast<int64_t>(reinterpret_cast<uintptr_t>(base))) &&
         aligned(s.batch * sizeof(T)) && aligned(s.row * sizeof(T)) && aligned(s.head * sizeof(T)) &&
         aligned(head_dim * sizeof(T)) && streaming_stores_pay(bytes);
#else
  (void)base, (void)s, (void)batch, (void)seqlen, (void)heads, (void)head_dim;
  return false;
#endif
}

#if defined(__SSE2__)
// dst[0, bytes) = src[0, bytes) by SSE2 streaming stores (dst 16-byte aligned, bytes a
// multiple of 16): the streamed outputs' rows and the forward's packed keys. Weakly
// ordered: the caller fences (_mm_sfence) before another thread reads dst.
inline void stream_bytes(const void* __restrict src, void* __restrict dst, size_t bytes) {
  for (size_t i = 0; i < bytes; i += 16)
    _mm_stream_si128(reinterpret_cast<__m128i*>(static_cast<char*>(dst) + i),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const char*>(src) + i)));
}
#endif

// dst[rows x cols] = scale * src, converted to T; with stream (see
// streams_stores), each row converted in a buffer and streamed out.
template <typename T>
void store_tile(const float* __restrict src, int ld, int rows, int cols, float scale,
                T* __restrict dst, int64_t row_stride, bool stream) {
  for (int r = 0; r < rows; ++r) {
    const float* s = src + r * ld;
    T* d = dst + r * row_stride;
    if (!stream) {
      for (int c = 0; c < cols; ++c) d[c] = from_float<T>(scale * s[c]);
      continue;
    }
#if defined(__SSE2__)
    alignas(16) T row[kMaxHeadDim];
    for (int c = 0; c < cols; ++c) row[c] = from_float<T>(scale * s[c]);
    stream_bytes(row, d, cols * sizeof(T));
#endif
  }
#if defined(__SSE2__)
  if (stream) _mm_sfence();  // streaming stores are weakly ordered
#endif
}

// Rows [row0, row0 + rows) of one head of a [batch, seqlen, heads, head_dim] tensor of T
// (the kernel's untyped pointer), loaded as load_tile does (head_dim columns).
template <typename T>
void load_head_rows(const void* base, const TensorStrides& s, int b, int row0, int head, int rows,
                    int head_dim, int tile_rows, int ld, float* __restrict dst) {
  load_tile(element(static_cast<const T*>(base), s, b, row0, head), s.row, rows, head_dim, tile_rows, ld, dst);
}

// Rows [row0, row0 + rows) of heads [head0, head0 + nheads) of a [batch, seqlen, heads,
// head_dim] tensor of T, read row by row across the heads into one fp32 tile per head,
// dst[i] (tile_rows x ld, zero-padded as load_tile's). Where the heads are adjacent (a
// contiguous tensor) that reads the memory in order; a head's tile loaded alone reads
// rows H x head_dim apart, 256 bytes at a time at head_dim 64 (fp32), which the hardware
// prefetchers do not follow.
template <typename T>
void load_rows_of_heads(const void* base, const TensorStrides& s, int b, int row0, int rows, int head0,
                        int nheads, int head_dim, int tile_rows, int ld, float* const* dst) {
  for (int r = 0; r < tile_rows; ++r)
    for (int i = 0; i < nheads; ++i) {  // row r of head i's tile: load_tile of one row (zeros past rows)
      const T* src = r < rows ? element(static_cast<const T*>(base), s, b, row0 + r, head0 + i) : nullptr;
      load_tile(src, 0, r < rows ? 1 : 0, head_dim, 1, ld, dst[i] + r * ld);
    }
}

// dst[0, n) = src[0, n) by streaming stores (stream_bytes: dst 16-byte aligned, n a
// multiple of 4), for a packed copy that the pass reading it finds in memory anyway.
// Elsewhere a plain copy.
inline void copy_streamed(const float* __restrict src, float* __restrict dst, int64_t n) {
#if defined(__SSE2__)
  stream_bytes(src, dst, static_cast<size_t>(n) * sizeof(float));
#else
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
#endif
}

// The same rows asked into the cache (L2) ahead of their load or, for_write,
// of their store (fetched for ownership). The rows lie H x head_dim apart,
// 4 cache lines each at head_dim 64 (fp32): loading or storing a tile of them
// waits on memory line by line unless they were asked for while other work ran.
template <typename T>
void prefetch_head_rows(const void* base, const TensorStrides& s, int b, int row0, int head, int rows,
                        int head_dim, bool for_write) {
  constexpr uintptr_t kLine = 64;
  const T* first = element(static_cast<const T*>(base), s, b, row0, head);
  for (int r = 0; r < rows; ++r) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(first + r * s.row) & ~(kLine - 1);
    const uintptr_t end = reinterpret_cast<uintptr_t>(first + r * s.row + head_dim);
    for (uintptr_t line = begin; line < end; line += kLine) {
      if (for_write) {
        __builtin_prefetch(reinterpret_cast<const void*>(line), 1, 2);
      } else {
        __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 2);
      }
    }
  }
}

// The same rows written: dst rows = scale * src (rows x head_dim of ld-strided fp32).
template <typename T>
void store_head_rows(const float* __restrict src, int ld, float scale, void* base, const TensorStrides& s,
                     int b, int row0, int head, int rows, int head_dim, bool stream) {
  store_tile(src, ld, rows, head_dim, scale, element(static_cast<T*>(base), s, b, row0, head), s.row, stream);
}

}  // namespace cpu
}  // namespace flashmask
