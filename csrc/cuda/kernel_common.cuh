// Device building blocks shared by the FlashMask CUDA kernels (sm80+):
// mma.sync m16n8k16 wrappers, ldmatrix, cp.async and a swizzled shared-memory
// tile layout. Every kernel also needs the tile lists (tile_list.cuh) and the
// mask (mask.cuh), so they come with this header.
//
// Fragment layouts (PTX ISA, m16n8k16 with 16-bit inputs, lane = 4*g + t):
//   A (16x16): a0 (g, 2t..2t+1) a1 (g+8, 2t..) a2 (g, 8+2t..) a3 (g+8, 8+2t..)
//   B (16x8) : b0 (k=2t..2t+1, n=g) b1 (k=8+2t.., n=g)
//   C (16x8) : c0,c1 (g, 2t..2t+1)  c2,c3 (g+8, 2t..2t+1)
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "flashmask/mask.h"
#include "flashmask/params.h"
#include "flashmask/softmax.h"  // kLog2e, kLn2 (the softmaxes work in base 2; LSE is natural)
#include "mask.cuh"
#include "tile_list.cuh"

namespace flashmask {
namespace cuda {

// ---------------------------------------------------------------- types
// The 16-bit element types: two floats packed into a pair (round to nearest), one element
// widened to float.
template <typename T>
struct Elem;
template <>
struct Elem<__half> {
  static __device__ __forceinline__ __half2 pair(float a, float b) { return __floats2half2_rn(a, b); }
  static __device__ __forceinline__ float widen(__half x) { return __half2float(x); }
};
template <>
struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ __nv_bfloat162 pair(float a, float b) { return __floats2bfloat162_rn(a, b); }
  static __device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }
};
// Two floats as the 32 bits of an mma operand or a 4-byte store.
template <typename T>
struct Pack {
  static __device__ __forceinline__ uint32_t two(float a, float b) {
    auto h = Elem<T>::pair(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};
template <typename T>
__device__ __forceinline__ float to_float(T x) {
  return Elem<T>::widen(x);
}
// Two m16n8 fp32 accumulator tiles, the k16 step's columns 0-7 (lo) and 8-15 (hi), as the
// m16n8k16 A fragment of T (P or dS reused as an operand without a trip through smem).
template <typename T>
__device__ __forceinline__ void pack_a_fragment(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = Pack<T>::two(lo[0], lo[1]);
  a[1] = Pack<T>::two(lo[2], lo[3]);
  a[2] = Pack<T>::two(hi[0], hi[1]);
  a[3] = Pack<T>::two(hi[2], hi[3]);
}

// ---------------------------------------------------------------- PTX wrappers
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1);
// PTX names the operand type in the instruction, so the two 16-bit specializations are
// stamped from one text.
#define FLASHMASK_MMA16816(CTYPE, PTX_TYPE)                                                        \
  template <>                                                                                    \
  __device__ __forceinline__ void mma16816<CTYPE>(float(&c)[4], const uint32_t(&a)[4], uint32_t b0, \
                                                  uint32_t b1) {                                 \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." PTX_TYPE "." PTX_TYPE                   \
                 ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"                 \
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));                \
  }
FLASHMASK_MMA16816(__half, "f16")
FLASHMASK_MMA16816(__nv_bfloat16, "bf16")
#undef FLASHMASK_MMA16816

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

// ---------------------------------------------------------------- sm80 block context
// What every mma.sync kernel decodes of the problem: the lengths, the mask's form (mask.cuh),
// the offset of the bottom-right-aligned diagonal, the key tiles of kBlockN columns, the
// softmax scale in base 2.
template <int kBlockN>
struct Sm80Problem {
  int Sq, Sk, nb, form, offset, n_tiles;
  float scale_log2;
  template <typename Params>
  __device__ __forceinline__ explicit Sm80Problem(const Params& p)
      : Sq(p.shape.seqlen_q),
        Sk(p.shape.seqlen_k),
        nb(p.mask.num_bounds),
        form(mask_form(p.mask.causal, p.mask.num_bounds)),
        offset(p.shape.seqlen_k - p.shape.seqlen_q),
        n_tiles((p.shape.seqlen_k + kBlockN - 1) / kBlockN),
        scale_log2(p.softmax_scale * kLog2e) {}
};

// Shared memory of an sm80 forward or dQ CTA, in order: kQTiles tiles of kBlockM query rows
// (Q; then dO in the dQ kernel), the K and V tiles, one key tile's column bounds (up to 4
// ints a column) and their intervals (an int4 a column), the tile-list builder's scratch,
// then the key-tile list (n_tiles entries, sized at launch: kFixedBytes is all before it).
// Tiles<T> carves it for 16-bit T.
template <int D, int kBlockM, int kBlockN, int kQTiles>
struct Sm80QueryBlockSmem {
  static constexpr int kElemBytes = 2;
  static constexpr int kFixedBytes = (kQTiles * kBlockM + 2 * kBlockN) * D * kElemBytes +
                                     (kBlockN * (4 + 4) + kListScratchInts) * static_cast<int>(sizeof(int));
  template <typename T>
  struct Tiles {
    static_assert(sizeof(T) == kElemBytes, "the mma.sync kernels take 16-bit elements");
    T *q, *k, *v;
    int* bounds;      // a partial tile's raw column bounds (cp.async)
    int4* intervals;  // the same converted (mask.cuh: convert_tile_columns)
    int* scratch;
    TileEntry* list;
    __device__ __forceinline__ explicit Tiles(char* raw)
        : q(reinterpret_cast<T*>(raw)),
          k(q + kQTiles * kBlockM * D),
          v(k + kBlockN * D),
          bounds(reinterpret_cast<int*>(v + kBlockN * D)),
          intervals(reinterpret_cast<int4*>(bounds + kBlockN * 4)),
          scratch(reinterpret_cast<int*>(intervals + kBlockN)),
          list(reinterpret_cast<TileEntry*>(scratch + kListScratchInts)) {}
  };
};

// The query block of an sm80 forward or dQ CTA (grid: query blocks x heads x batch, the late
// blocks, whose rows see the most keys, first): its rows, heads and mask row, and the bases
// of its Q (at its first row), K and V (at key 0), column bounds and tile bounds.
template <typename T, int kBlockM, int kBlockN>
struct Sm80QueryBlock : Sm80Problem<kBlockN> {
  int m0, rows_valid, h, b, hk;
  int64_t bhm;
  const T *q, *k, *v;
  const int32_t* bounds;
  const TileBounds* tile_bounds;
  template <typename Params>
  __device__ __forceinline__ Sm80QueryBlock(const Params& p, const TileBounds* all_tile_bounds)
      : Sm80Problem<kBlockN>(p),
        m0((gridDim.x - 1 - blockIdx.x) * kBlockM),
        rows_valid(min(kBlockM, p.shape.seqlen_q - m0)),
        h(blockIdx.y),
        b(blockIdx.z),
        hk(h / (p.shape.num_heads / p.shape.num_heads_k)),
        bhm(mask_row_for(p.mask, p.shape, b, h)),
        q(static_cast<const T*>(p.q) + b * p.q_strides.batch + static_cast<int64_t>(m0) * p.q_strides.row +
          h * p.q_strides.head),
        k(static_cast<const T*>(p.k) + b * p.k_strides.batch + hk * p.k_strides.head),
        v(static_cast<const T*>(p.v) + b * p.v_strides.batch + hk * p.v_strides.head),
        bounds(p.mask.startend_row_indices + bhm * p.shape.seqlen_k * p.mask.num_bounds),
        tile_bounds(all_tile_bounds + bhm * this->n_tiles) {}
};

// cp.async of key tile n's column bounds (kBlockN columns of nb ints, from a (batch, mask
// head)'s `bounds`) into smem; the columns past Sk are zero-filled.
template <int kBlockN, int kThreads>
__device__ __forceinline__ void load_bounds_tile_async(int* dst, const int32_t* bounds, int n, int nb, int Sk,
                                                       int tid) {
  const int32_t* src = bounds + static_cast<int64_t>(n) * kBlockN * nb;
  // Cut to the tile first: (Sk - n * kBlockN) * nb overflows an int at n = 0, Sk = 2^29, nb = 4.
  const int lim = min(Sk - n * kBlockN, kBlockN) * nb;
  for (int i = tid; i < kBlockN * nb; i += kThreads) {
    const bool ok = i < lim;
    cp_async_4(smem_u32(dst + i), ok ? src + i : bounds, ok);
  }
}

}  // namespace cuda
}  // namespace flashmask
