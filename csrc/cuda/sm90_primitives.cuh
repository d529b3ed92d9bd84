// Hopper (sm90a) building blocks for the warp-specialised kernels: mbarriers,
// TMA tile loads, wgmma fences and shared-memory matrix descriptors, and
// register reallocation between producer and consumer warpgroups.
//
// Shared-memory tile layout used with TMA and wgmma ("SW128"): a tile of R rows
// x C 16-bit columns is stored as C/64 column blocks, each [R][64] elements
// (128 bytes per row) with 16-byte chunks XOR-swizzled by (row % 8). It is what
// a TMA box of {64, R} with CU_TENSOR_MAP_SWIZZLE_128B writes, and what a wgmma
// descriptor with 128-byte swizzling reads. Column blocks start 1024-byte aligned.
#pragma once

#include <cstdint>

#include "kernel_common.cuh"

namespace flashmask {
namespace cuda {
namespace sm90 {

// An SW128 column block (above): kSw128Cols 16-bit elements, kSw128RowBytes bytes a row, its
// 8-row swizzle groups kSw128GroupBytes apart (the swizzle's period, so blocks start aligned to
// it). wgmma's k step (kWgmmaK elements of 16 bits) is kSw128KStepBytes of a row, kSw128KSteps
// of them a block.
constexpr int kWgmmaK = 16;  // k of wgmma.mma_async with 16-bit operands (m64nNk16)
constexpr int kSw128Cols = 64, kSw128RowBytes = 128, kSw128GroupBytes = 8 * kSw128RowBytes;
constexpr int kSw128KStepBytes = kWgmmaK * 2, kSw128KSteps = kSw128RowBytes / kSw128KStepBytes;
// Threads of a warpgroup, the unit that issues a wgmma.
constexpr int kWarpgroupThreads = 4 * kWarpSize;

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FM_SM90_ASM(...) asm volatile(__VA_ARGS__)
#else
#define FM_SM90_ASM(...) \
  do {                   \
  } while (0)
#endif

// ---------------------------------------------------------------- mbarrier
__device__ __forceinline__ void mbar_init(uint64_t* bar, int arrivals) {
  FM_SM90_ASM("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(arrivals));
}
// Makes barrier initialisation visible to the async proxy (TMA) before first use.
__device__ __forceinline__ void fence_barrier_init() {
  FM_SM90_ASM("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  FM_SM90_ASM("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(
                  smem_u32(bar))
              : "memory");
}
// One arrival that also announces `bytes` of TMA traffic completing on this barrier.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  FM_SM90_ASM(
      "{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(
          smem_u32(bar)),
      "r"(bytes)
      : "memory");
}
// Waits until the phase with the given parity has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, int parity) {
  FM_SM90_ASM(
      "{\n.reg .pred done;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}

// ---------------------------------------------------------------- TMA
// 4-D tiled load (coordinates innermost first) into smem, completing on `bar`.
__device__ __forceinline__ void tma_load_4d(void* dst, const void* tensor_map, uint64_t* bar,
                                            int c0, int c1, int c2, int c3) {
  FM_SM90_ASM(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
      "[%0], [%1, {%3, %4, %5, %6}], [%2];\n" ::"r"(smem_u32(dst)),
      "l"(tensor_map), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}
// Rows [row0, row0 + kRows) of (head, batch), all head-dim columns, as an SW128 tile:
// kColBlocks blocks of [kRows][64] elements, one TMA per block.
template <int kColBlocks, int kRows, typename T>
__device__ __forceinline__ void tma_load_tile(T* dst, const void* tensor_map, uint64_t* bar, int row0,
                                              int head, int batch) {
#pragma unroll
  for (int cb = 0; cb < kColBlocks; ++cb)
    tma_load_4d(dst + cb * kRows * kSw128Cols, tensor_map, bar, cb * kSw128Cols, row0, head, batch);
}
// The same rows (the tensor map's box) brought into L2 only (no smem, no barrier): a
// head start for a tile that will be loaded later.
template <int kColBlocks>
__device__ __forceinline__ void tma_prefetch_tile_l2(const void* tensor_map, int row0, int head, int batch) {
#pragma unroll
  for (int cb = 0; cb < kColBlocks; ++cb)
    FM_SM90_ASM("cp.async.bulk.prefetch.tensor.4d.L2.global.tile [%0, {%1, %2, %3, %4}];\n" ::"l"(tensor_map),
                "r"(cb * kSw128Cols), "r"(row0), "r"(head), "r"(batch)
                : "memory");
}
// This thread's warp, broadcast from lane 0: the compiler can then prove it uniform across
// the warp and keep what derives from it (a warpgroup's rows and columns, the wgmma
// descriptors) in uniform registers instead of converting them (R2UR) before every wgmma.
__device__ __forceinline__ int warp_index_uniform() { return __shfl_sync(kFullWarp, threadIdx.x / kWarpSize, 0); }
// 1-D bulk copy of `bytes` (multiple of 16, both addresses 16-byte aligned).
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes,
                                          uint64_t* bar) {
  FM_SM90_ASM(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::
          "r"(smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar))
      : "memory");
}
// 1-D bulk reduce-add (fp32 +=) of `bytes` of shared memory into global memory (multiple
// of 16, both addresses 16-byte aligned), in the current bulk group: the source may be
// overwritten after bulk_wait_read.
__device__ __forceinline__ void bulk_reduce_add_f32(float* dst, const void* src, uint32_t bytes) {
  FM_SM90_ASM("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(dst),
              "r"(smem_u32(src)), "r"(bytes)
              : "memory");
}
// 4-D tiled store of an smem tile into global memory, in the current bulk group (rows
// beyond the tensor's end are not written).
__device__ __forceinline__ void tma_store_4d(const void* tensor_map, const void* src, int c0, int c1,
                                             int c2, int c3) {
  FM_SM90_ASM(
      "cp.async.bulk.tensor.4d.global.shared::cta.tile.bulk_group "
      "[%0, {%2, %3, %4, %5}], [%1];\n" ::"l"(tensor_map),
      "r"(smem_u32(src)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}
__device__ __forceinline__ void bulk_commit() { FM_SM90_ASM("cp.async.bulk.commit_group;\n" ::: "memory"); }
// At most N of this thread's bulk groups still read their smem source.
template <int N>
__device__ __forceinline__ void bulk_wait_read() {
  FM_SM90_ASM("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
}
// At most N of this thread's bulk groups are still incomplete (writes included).
template <int N>
__device__ __forceinline__ void bulk_wait() {
  FM_SM90_ASM("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void prefetch_tensor_map(const void* tensor_map) {
  FM_SM90_ASM("prefetch.tensormap [%0];\n" ::"l"(tensor_map) : "memory");
}

// ---------------------------------------------------------------- wgmma
__device__ __forceinline__ void wgmma_fence() {
  FM_SM90_ASM("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  FM_SM90_ASM("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  FM_SM90_ASM("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Orders this thread's generic-proxy shared-memory writes before later async-proxy
// (wgmma, TMA) accesses of the same memory.
__device__ __forceinline__ void fence_proxy_async_smem() {
  FM_SM90_ASM("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Keeps the compiler from moving accesses of accumulator registers across the
// asynchronous wgmma issue / wait points.
template <int N>
__device__ __forceinline__ void fence_operands(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
// The same for A fragments held in registers (P of the forward's P V).
template <int K>
__device__ __forceinline__ void fence_operands(uint32_t (&r)[K][4]) {
#pragma unroll
  for (int k = 0; k < K; ++k)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(r[k][e])::"memory");
}

// Matrix descriptor of an SW128 tile (see the top of this file). Fields: start
// address >> 4 (bits 0-13), leading byte offset >> 4 (16-29), stride byte offset
// >> 4 (32-45), swizzle mode (62-63, 1 = 128-byte).
//  K-major operand (rows = M or N, contiguous along K): stride = 1024 bytes between
//    8-row groups; the leading offset is unused. Step k by 16 within a column block
//    by adding 32 bytes to the start address.
//  MN-major operand (rows = K, contiguous along M/N, e.g. V as the B of P*V):
//    stride = 1024 bytes between 8-row (K) groups, leading = bytes between 64-wide
//    column blocks. Step k by 16 by adding 16 rows (2048 bytes).
__device__ __forceinline__ uint64_t sw128_desc(uint32_t smem_addr, uint32_t leading_bytes) {
  uint64_t d = 0;
  d |= static_cast<uint64_t>((smem_addr & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>((leading_bytes >> 4) & 0x3FFF) << 16;
  d |= static_cast<uint64_t>(kSw128GroupBytes >> 4) << 32;
  d |= static_cast<uint64_t>(1) << 62;
  return d;
}

// The descriptor of the operand `bytes` further on in shared memory. Only the address
// field changes, and shared addresses stay below 2^18, so adding bytes >> 4 never carries
// out of it. Kernels build one descriptor per operand and tile and step it by constants:
// one add per wgmma instead of sw128_desc's mask, shift and or (~125 uniform instructions
// per tile of the forward's main loop, perf-notes v19).
__device__ __forceinline__ uint64_t desc_advance(uint64_t desc, uint32_t bytes) {
  return desc + (bytes >> 4);
}

// Byte offset of 16-byte chunk `chunk` (0-7) of row `row` in one SW128 block, for
// generic-proxy stores into a tile that wgmma or TMA then reads.
__device__ __forceinline__ uint32_t sw128_offset(int row, int chunk) {
  return row * kSw128RowBytes + ((chunk ^ (row & 7)) << 4);
}

// ---------------------------------------------------------------- warps
__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x & (kWarpSize - 1)); }
template <int kRegs>
__device__ __forceinline__ void regs_dealloc() {
  FM_SM90_ASM("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void regs_alloc() {
  FM_SM90_ASM("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
// Barrier over a subset of warps (ids 1..15; 0 is __syncthreads).
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

}  // namespace sm90
}  // namespace cuda
}  // namespace flashmask
