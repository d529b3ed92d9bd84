// The AVX-512 variant: the fp32 micro-kernel on zmm registers and, where the
// CPU has AVX512-BF16, bf16 inputs multiplied in bf16 with vdpbf16ps (two
// products per fp32 lane and instruction, fp32 accumulation); where it has
// AMX-BF16, the bf16 products on AMX tiles. One core, 64 x 64 x 64 in L1: AMD
// Zen 5 fp32 8 x 2 zmm 246 GFLOP/s, bf16 8 x 2 zmm 448, 4 x 4 zmm 456; an
// Intel Xeon (Emerald Rapids) fp32 8 x 2 173, where vdpbf16ps does half the
// FMA's multiply-adds (bf16_dot_speedup below; isa.cc then runs bf16 in fp32).
#include "kernel_deps.h"

#if FLASHMASK_HAVE_X86_KERNELS
#include <immintrin.h>

#include <algorithm>
#include <chrono>

// prefer-vector-width=512: GCC's tuning for Intel's AVX-512 server cores would run the plain
// loops that it vectorises here (masking, tile loads) on ymm (docs/cpu-kernel.md).
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,amx-tile,amx-bf16,prefer-vector-width=512")
#include "backward_impl.h"
#include "forward_impl.h"
#include "microkernel.h"

namespace flashmask {
namespace cpu {
namespace {

struct Zmm {
  using Reg = __m512;
  static constexpr int kLanes = 16;
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, Reg x) { _mm512_storeu_ps(p, x); }
  static Reg broadcast(float x) { return _mm512_set1_ps(x); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static Reg fms(Reg a, Reg b, Reg c) { return _mm512_fmsub_ps(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm512_sub_ps(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm512_mul_ps(a, b); }
  static Reg max(Reg a, Reg b) { return _mm512_max_ps(a, b); }
  static Reg min(Reg a, Reg b) { return _mm512_min_ps(a, b); }
  static Reg round(Reg x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static Reg pow2(Reg n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  static float reduce_add(Reg x) { return _mm512_reduce_add_ps(x); }
  static float reduce_max(Reg x) { return _mm512_reduce_max_ps(x); }
  static Reg unpack_lo(Reg a, Reg b) { return _mm512_unpacklo_ps(a, b); }
  static Reg unpack_hi(Reg a, Reg b) { return _mm512_unpackhi_ps(a, b); }
  static Reg pairs_lo(Reg a, Reg b) { return _mm512_shuffle_ps(a, b, 0x44); }
  static Reg pairs_hi(Reg a, Reg b) { return _mm512_shuffle_ps(a, b, 0xee); }
  // Four lanes: two rounds of 128-bit lane shuffles.
  static void exchange_lanes(Reg (&r)[16]) {
    Reg t[16];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 4; ++j) {
        t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
        t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xdd);
      }
    for (int j = 0; j < 8; ++j) {
      r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
      r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
    }
  }
};

using Avx512Ops = BlockedOps<Zmm, /*kRows=*/8, /*kVecs=*/2>;

// bf16 operands (round to nearest even from the fp32 tiles). vdpbf16ps
// multiplies pairs along k: A is row-major with k and lda even (a pair is
// one 32-bit element, broadcast whole); B is in the "VNNI" layout [k / 2][n][2], the
// rows 2i and 2i+1 interleaved, so one 512-bit load holds 16 columns' pairs.
// Rows handed to it are multiples of 8 and columns of 16 (tiles, padded
// head_dim, partial tiles' boxes: tiling.h).
struct Bf16Ops {
  using Operand = uint16_t;
  using Rows = VectorRows<Zmm>;
  using ThreadState = NoThreadState;
  static constexpr int kRows = 8, kVecs = 2, kLanes = 16;
  static constexpr int kBoxRowStep = kExtentRowStep, kBoxColStep = kExtentColStep;  // tiling.h

  static void pack_a(const float* src, int rows, int cols, int lds, uint16_t* dst) {
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; c += kLanes) {
        const __m256bh x = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + r * lds + c));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + r * cols + c), (__m256i)x);
      }
    }
  }

  static void pack_b(const float* src, int rows, int cols, int lds, uint16_t* dst) {
    // cvtne2ps gives [row 2i's 16 values, row 2i+1's 16]; the permutation
    // interleaves them into 16 (row 2i, row 2i+1) pairs.
    alignas(64) static constexpr uint16_t kInterleave[32] = {
        0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
        8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i interleave = _mm512_load_si512(kInterleave);
    for (int r = 0; r < rows; r += 2) {
      for (int c = 0; c < cols; c += kLanes) {
        const __m512 even = _mm512_loadu_ps(src + r * lds + c);
        const __m512 odd = _mm512_loadu_ps(src + (r + 1) * lds + c);
        const __m512i pairs = (__m512i)_mm512_cvtne2ps_pbh(odd, even);
        _mm512_storeu_si512(dst + r * cols + 2 * c, _mm512_permutexvar_epi16(interleave, pairs));
      }
    }
  }

  static float* staging(uint16_t*, float* scratch) { return scratch; }
  // The fp32 staging tiles transpose as the fp32 policy's.
  static void transpose(const float* src, int rows, int cols, int lds, float* dst, int ldd) {
    Avx512Ops::transpose(src, rows, cols, lds, dst, ldd);
  }
  static OperandView<uint16_t> a_view(const float* src, int rows, int cols, int lds,
                                      uint16_t* scratch) {
    pack_a(src, rows, cols, lds, scratch);
    return {scratch, cols};
  }
  static OperandView<uint16_t> b_view(const float* src, int rows, int cols, int lds,
                                      uint16_t* scratch) {
    pack_b(src, rows, cols, lds, scratch);
    return {scratch, cols};
  }
  static const uint16_t* b_at(const uint16_t* b, int ldb, int k, int n) {
    return b + k * ldb + 2 * n;  // k even: pair row k / 2 starts at k * ldb
  }

  // As BlockedOps::gemm (microkernel.h), k advancing by pairs; ldb counts
  // B's logical columns.
  static void gemm(int M, int N, int K, const uint16_t* a, int lda, const uint16_t* b, int ldb,
                   float* c, int ldc, bool accumulate) {
    auto run_block = [&](int i0, int n0, auto /*rows: kRows*/, auto vecs) __attribute__((always_inline)) {
      block<vecs()>(K, a + static_cast<ptrdiff_t>(i0) * lda, lda, b + 2 * n0, ldb, c + i0 * ldc + n0, ldc,
                    accumulate);
    };
    for_each_block<kRows, kRows, kRows, kVecs, kLanes>(M, N, run_block);
  }

 private:
  template <int kV>  // always inlined, as BlockedOps::block (microkernel.h)
  [[gnu::always_inline]] static inline void block(int K, const uint16_t* a, ptrdiff_t lda, const uint16_t* b,
                           ptrdiff_t ldb, float* c, ptrdiff_t ldc, bool accumulate) {
    __m512 acc[kRows][kV];
    const uint16_t* rows[kRows];
    for (int r = 0; r < kRows; ++r) {
      rows[r] = a + r * lda;
      for (int v = 0; v < kV; ++v)
        acc[r][v] = accumulate ? _mm512_loadu_ps(c + r * ldc + v * kLanes) : _mm512_setzero_ps();
    }
    for (ptrdiff_t k = 0; k < K; k += 2, b += 2 * ldb) {
      __m512bh y[kV];
      for (int v = 0; v < kV; ++v) y[v] = (__m512bh)_mm512_loadu_si512(b + 2 * v * kLanes);
      for (int r = 0; r < kRows; ++r) {
        int32_t pair;  // elements k and k + 1 of row r, broadcast as one
        __builtin_memcpy(&pair, rows[r] + k, sizeof(pair));
        const __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
        for (int v = 0; v < kV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], x, y[v]);
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (int v = 0; v < kV; ++v) _mm512_storeu_ps(c + r * ldc + v * kLanes, acc[r][v]);
  }
};

// bf16 products on AMX tiles (tdpbf16ps: a 16 x 16 fp32 tile += a 16 x 32
// bf16 A tile times a 16 x 32 B tile in the VNNI layout, which is Bf16Ops'
// B layout with its pair rows as tile rows). Operands are Bf16Ops'; a 32 x 32
// block of C lives in four accumulator tiles over the k loop. Partial tiles'
// boxes are widened to 32 x 32 steps for it: boxes of 8-row and 16-column steps
// ran on Bf16Ops' vdpbf16ps, on an Emerald Rapids Xeon a quarter of the AMX rate
// (docs/cpu-kernel.md); what is not a multiple of 32 still does.
struct AmxOps : Bf16Ops {
  static constexpr int kTile = 16;  // rows of every tile; 64 bytes per row
  static constexpr int kBlock = 2 * kTile;
  static_assert(kBlock == kAmxBoxStep, "boxes in whole blocks");
  static constexpr int kBoxRowStep = kAmxBoxStep, kBoxColStep = kAmxBoxStep;

  // Every tile 16 rows x 64 bytes: C 0-3, A 4-5, B 6-7. The configuration is
  // per thread and kept for a parallel region (scratch lifetime), so it is
  // loaded where the region's scratch is built and released with it.
  // ldtilecfg by inline assembly that names the whole configuration as its
  // memory operand: GCC 12's _tile_loadconfig names only its first 8 bytes, so
  // where the backward's scratch is built GCC dropped the colsb and rows stores
  // and ldtilecfg faulted on a configuration of zero-sized tiles (SIGSEGV in
  // every bf16 backward on an AMX Xeon, found 2026-12-02).
  struct ThreadState {
    struct alignas(64) TileConfig {
      uint8_t bytes[64];
    };
    ThreadState() {
      TileConfig config = {};
      config.bytes[0] = 1;  // palette 1
      for (int t = 0; t < 8; ++t) {
        config.bytes[16 + 2 * t] = 64;  // colsb, little-endian uint16
        config.bytes[48 + t] = kTile;   // rows
      }
      asm volatile("ldtilecfg %0" : : "m"(config));
    }
    ~ThreadState() { _tile_release(); }
    ThreadState(const ThreadState&) = delete;
    ThreadState& operator=(const ThreadState&) = delete;
  };

  static void gemm(int M, int N, int K, const uint16_t* a, int lda, const uint16_t* b, int ldb,
                   float* c, int ldc, bool accumulate) {
    if (M % kBlock != 0 || N % kBlock != 0 || K % kBlock != 0) {
      return Bf16Ops::gemm(M, N, K, a, lda, b, ldb, c, ldc, accumulate);
    }
    // GCC's _tile_loadd names no memory operand: without this barrier the
    // stores of A, B and C before an inlined call could move past its loads.
    asm volatile("" ::: "memory");
    const int a_stride = lda * 2, b_stride = ldb * 4, c_stride = ldc * 4;  // bytes
    for (int i0 = 0; i0 < M; i0 += kBlock) {
      for (int n0 = 0; n0 < N; n0 += kBlock) {
        float* c0 = c + i0 * ldc + n0;
        float* c1 = c0 + kTile * ldc;
        if (accumulate) {
          _tile_loadd(0, c0, c_stride);
          _tile_loadd(1, c0 + kTile, c_stride);
          _tile_loadd(2, c1, c_stride);
          _tile_loadd(3, c1 + kTile, c_stride);
        } else {
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
          _tile_zero(3);
        }
        for (int k = 0; k < K; k += kBlock) {
          _tile_loadd(4, a + i0 * lda + k, a_stride);
          _tile_loadd(5, a + (i0 + kTile) * lda + k, a_stride);
          _tile_loadd(6, b_at(b, ldb, k, n0), b_stride);
          _tile_loadd(7, b_at(b, ldb, k, n0 + kTile), b_stride);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, c0, c_stride);
        _tile_stored(1, c0 + kTile, c_stride);
        _tile_stored(2, c1, c_stride);
        _tile_stored(3, c1 + kTile, c_stride);
      }
    }
  }
};

// fp32 and fp16 inputs, and bf16 ones with Bf16Products::kFp32, run in fp32.
template <class Run>
void dispatch(DType dtype, Bf16Products bf16, const Run& run) {
  if (dtype == DType::kBFloat16 && bf16 == Bf16Products::kAmx) return run(BFloat16{}, AmxOps{});
  if (dtype == DType::kBFloat16 && bf16 == Bf16Products::kAvx512) {
    return run(BFloat16{}, Bf16Ops{});
  }
  dispatch_dtype(dtype, [&](auto tag) { run(tag, Avx512Ops{}); });
}

// The best time of kTrials runs of kIters steps (each step a fixed number of
// independent instructions on accumulators kept in registers).
template <class Step>
double best_seconds(Step&& step) {
  constexpr int kTrials = 5, kIters = 2048;
  double best = 1e30;
  for (int t = 0; t < kTrials; ++t) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kIters; ++i) step();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

}  // namespace

// 12 independent accumulators (more than either instruction's latency
// covers at its throughput), vdpbf16ps's 32 multiply-adds per instruction
// against vfmadd231ps's 16. About 50 us in all.
double bf16_dot_speedup() {
  constexpr int kChains = 12;
  volatile float seed = 1.f;
  const __m512 one = _mm512_set1_ps(seed), small = _mm512_set1_ps(seed * 1e-3f);
  const __m512bh pair = _mm512_cvtne2ps_pbh(one, small);
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = small;
  const double dot = best_seconds([&] {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], pair, pair);
  });
  const double fma = best_seconds([&] {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(small, one, acc[c]);
  });
  float sink = 0.f;
  for (int c = 0; c < kChains; ++c) sink += _mm512_reduce_add_ps(acc[c]);
  volatile float keep = sink;
  (void)keep;
  return (2.0 * fma) / dot;  // vdpbf16ps does twice the multiply-adds per instruction
}

void run_avx512(const FwdParams& params, Bf16Products bf16) {
  dispatch(params.dtype, bf16, [&](auto tag, auto ops) {
    forward<decltype(tag), decltype(ops)>(params);
  });
}

void run_avx512(const BwdParams& params, Bf16Products bf16) {
  dispatch(params.dtype, bf16, [&](auto tag, auto ops) {
    Backward<decltype(tag), decltype(ops)>(params).run();
  });
}

}  // namespace cpu
}  // namespace flashmask
#endif
