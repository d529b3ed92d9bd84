// extern "C" entry points of libflashmask_cuda: validation, dispatch on
// (dtype, head_dim), and the O(N) tile-bounds preprocessing kernel.
#include <cudaTypedefs.h>

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>

#include "flashmask/cuda_api.h"
#include "flashmask_launch.cuh"
#include "padded_head_dim.h"

namespace flashmask {
namespace cuda {

namespace {
thread_local char g_error[1024] = "";
}

int report_error(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(g_error, sizeof(g_error), fmt, ap);
  va_end(ap);
  return 1;
}

int check_cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return 0;
  return report_error("%s: CUDA error %d (%s)", what, static_cast<int>(e), cudaGetErrorString(e));
}

namespace {
// An attribute of the current device, read once per device (`fallback` when it cannot be read).
template <cudaDeviceAttr kAttr>
int cached_device_attribute(int fallback) {
  static int cache[64] = {0};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return fallback;
  if (cache[dev] == 0) {
    int v = fallback;
    if (cudaDeviceGetAttribute(&v, kAttr, dev) != cudaSuccess) v = fallback;
    cache[dev] = v;
  }
  return cache[dev];
}
}  // namespace

int smem_optin_bytes() { return cached_device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>(48 * 1024); }
int device_cc_major() { return cached_device_attribute<cudaDevAttrComputeCapabilityMajor>(8); }
int sm_count() { return cached_device_attribute<cudaDevAttrMultiProcessorCount>(1); }

namespace {
__global__ void sm90a_probe_kernel() {}

// cuTensorMapEncodeTiled through the runtime's driver entry point, so the library
// does not link libcuda directly.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status;
#if CUDART_VERSION >= 12050
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000,
                                                           cudaEnableDefault, &status);
#else  // CUDA 12.0-12.4
    const cudaError_t e =
        cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &ptr, cudaEnableDefault, &status);
#endif
    if (e != cudaSuccess || status != cudaDriverEntryPointSuccess)
      ptr = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
  }();
  return fn;
}
}  // namespace

bool sm90_kernels_available() {
  if (device_cc_major() != 9) return false;
  // The sm_90a build of this library, not PTX of another arch JIT-compiled for Hopper.
  static const bool has_sm90a = [] {
    cudaFuncAttributes attr;
    return cudaFuncGetAttributes(&attr, sm90a_probe_kernel) == cudaSuccess &&
           attr.ptxVersion >= 90 && tensor_map_encoder() != nullptr;
  }();
  return has_sm90a;
}

bool sm90_kernels_enabled() {
  const char* off = std::getenv("FLASHMASK_DISABLE_SM90");
  if (off != nullptr && off[0] != '\0' && off[0] != '0') return false;
  return sm90_kernels_available();
}

namespace {
// A 4-D {head_dim, rows, heads, batch} tensor map (element strides), box {box_cols,
// box_rows, 1, 1}, 128-byte swizzle (box_cols * element size must be 128 bytes).
int encode_tensor_map(CUtensorMap* map, CUtensorMapDataType type, int elem_bytes, const void* base,
                      const AttentionShape& s, int rows, int heads, const TensorStrides& strides,
                      int box_cols, int box_rows) {
  const cuuint64_t elem = elem_bytes;
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(s.head_dim), static_cast<cuuint64_t>(rows),
                              static_cast<cuuint64_t>(heads), static_cast<cuuint64_t>(s.batch)};
  const cuuint64_t byte_strides[3] = {static_cast<cuuint64_t>(strides.row) * elem,
                                      static_cast<cuuint64_t>(strides.head) * elem,
                                      static_cast<cuuint64_t>(strides.batch) * elem};
  const cuuint32_t box[4] = {static_cast<cuuint32_t>(box_cols), static_cast<cuuint32_t>(box_rows), 1, 1};
  const cuuint32_t unit[4] = {1, 1, 1, 1};
  const CUresult r = tensor_map_encoder()(
      map, type, 4, const_cast<void*>(base), dims, byte_strides, box, unit,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return report_error("cuTensorMapEncodeTiled failed (%d) for a [%d, %d, %d, %d] tensor with "
                        "strides (%lld, %lld, %lld)",
                        static_cast<int>(r), s.batch, rows, heads, s.head_dim,
                        static_cast<long long>(strides.batch), static_cast<long long>(strides.row),
                        static_cast<long long>(strides.head));
  return 0;
}
}  // namespace

int make_tile_tensor_map(CUtensorMap* map, const void* base, DType dtype, const AttentionShape& s,
                         int rows, int heads, const TensorStrides& strides, int box_rows) {
  return encode_tensor_map(
      map, dtype == DType::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
      2, base, s, rows, heads, strides, 64, box_rows);
}

int make_dq_accum_tensor_map(CUtensorMap* map, float* dq_accum, const AttentionShape& s, int sq_pad,
                             int box_rows) {
  TensorStrides st;
  st.row = s.head_dim;
  st.head = static_cast<int64_t>(sq_pad) * s.head_dim;
  st.batch = st.head * s.num_heads;
  return encode_tensor_map(map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, dq_accum, s, sq_pad, s.num_heads,
                           st, 32, box_rows);
}

// One warp per key tile: min/max of the normalised bounds over its valid columns.
__global__ void tile_bounds_kernel(const MaskParams mask, int seqlen_q, int seqlen_k, int block_n,
                                   int n_tiles, int64_t total_tiles, TileBounds* out) {
  const int64_t tile = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (tile >= total_tiles) return;
  const int64_t bhm = tile / n_tiles;
  const int n = static_cast<int>(tile % n_tiles);
  const int nb = mask.num_bounds;
  const int c_end = min(n * block_n + block_n, seqlen_k);
  TileBounds t = empty_tile_bounds();
  for (int c = n * block_n + lane; c < c_end; c += 32)
    extend_tile_bounds(t, load_column_bounds(
                              mask.startend_row_indices + (bhm * seqlen_k + c) * nb, nb,
                              mask.causal, seqlen_q));
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    t.lts_min = min(t.lts_min, __shfl_xor_sync(0xffffffffu, t.lts_min, off));
    t.lts_max = max(t.lts_max, __shfl_xor_sync(0xffffffffu, t.lts_max, off));
    t.lte_min = min(t.lte_min, __shfl_xor_sync(0xffffffffu, t.lte_min, off));
    t.lte_max = max(t.lte_max, __shfl_xor_sync(0xffffffffu, t.lte_max, off));
    t.uts_min = min(t.uts_min, __shfl_xor_sync(0xffffffffu, t.uts_min, off));
    t.uts_max = max(t.uts_max, __shfl_xor_sync(0xffffffffu, t.uts_max, off));
    t.ute_min = min(t.ute_min, __shfl_xor_sync(0xffffffffu, t.ute_min, off));
    t.ute_max = max(t.ute_max, __shfl_xor_sync(0xffffffffu, t.ute_max, off));
  }
  if (lane == 0) out[tile] = t;
}

void launch_tile_bounds(const MaskParams& mask, const AttentionShape& shape, int block_n,
                        TileBounds* out, cudaStream_t stream) {
  const int n_tiles = ceil_div(shape.seqlen_k, block_n);
  const int64_t total = static_cast<int64_t>(shape.batch) * mask.num_mask_heads * n_tiles;
  if (total == 0) return;
  const int64_t blocks = (total * 32 + 255) / 256;
  tile_bounds_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      mask, shape.seqlen_q, shape.seqlen_k, block_n, n_tiles, total, out);
}

// One CTA per (batch, mask head): the key tiles each query block visits (a warp per
// block, lanes over key tiles), then the blocks ranked by that count, most first
// (ties: the later block first, as causal rows grow towards the end).
__global__ void fwd_work_order_kernel(const MaskParams mask, int seqlen_q, int seqlen_k, int block_m,
                                      int block_n, int m_blocks, int n_tiles, const TileBounds* tb,
                                      int* order, int* next_item) {
  extern __shared__ int visits[];
  const int64_t bhm = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (bhm == 0 && threadIdx.x == 0) *next_item = 0;
  for (int m = warp; m < m_blocks; m += warps) {
    const int m0 = m * block_m;
    const KeyTileClassifier key_tiles(mask, seqlen_q, seqlen_k, bhm, m0, min(block_m, seqlen_q - m0),
                                      block_n, tb + bhm * n_tiles);
    int count = 0;
    for (int n = lane; n < key_tiles.n_end; n += 32)
      count += key_tiles.kind(n) != static_cast<int>(TileKind::kSkip);
    count = __reduce_add_sync(0xffffffffu, count);
    if (lane == 0) visits[m] = count;
  }
  __syncthreads();
  for (int m = threadIdx.x; m < m_blocks; m += blockDim.x) {
    const int c = visits[m];
    int rank = 0;
    for (int j = 0; j < m_blocks; ++j) {
      const int cj = visits[j];
      rank += cj > c || (cj == c && j > m);
    }
    order[bhm * m_blocks + rank] = m;
  }
}

int launch_fwd_work_order(const MaskParams& mask, const AttentionShape& shape, int block_m, int block_n,
                          const TileBounds* tb, int* order, int* next_item, cudaStream_t stream) {
  const int m_blocks = ceil_div(shape.seqlen_q, block_m);
  const int64_t rows = static_cast<int64_t>(shape.batch) * mask.num_mask_heads;
  // Rounded up to 16 bytes: the compiler reads the counts 4 at a time (LDS.128), also the
  // last, partial group.
  const size_t smem = static_cast<size_t>(ceil_div(m_blocks, 4)) * 4 * sizeof(int);
  if (int rc = prepare_smem(fwd_work_order_kernel, smem, "fwd_work_order_kernel")) return rc;
  fwd_work_order_kernel<<<static_cast<unsigned>(rows), 512, smem, stream>>>(
      mask, shape.seqlen_q, shape.seqlen_k, block_m, block_n, m_blocks, ceil_div(shape.seqlen_k, block_n),
      tb, order, next_item);
  return check_cuda(cudaGetLastError(), "fwd_work_order_kernel launch");
}

namespace {

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }
bool strides_ok(const TensorStrides& s) {
  return s.batch % 8 == 0 && s.row % 8 == 0 && s.head % 8 == 0;
}

int validate_common(const AttentionShape& s, const MaskParams& m, DType dtype, float scale) {
  if (dtype != DType::kFloat16 && dtype != DType::kBFloat16)
    return report_error("flashmask CUDA: dtype must be float16 or bfloat16");
  if (compiled_head_dim(s.head_dim) == 0)
    return report_error("flashmask CUDA: head_dim must be in [1, %d], got %d", kMaxHeadDim,
                        s.head_dim);
  if (s.batch < 0 || s.seqlen_q < 0 || s.seqlen_k < 0 || s.num_heads <= 0 || s.num_heads_k <= 0)
    return report_error("flashmask CUDA: bad shape");
  if (s.num_heads % s.num_heads_k != 0)
    return report_error("flashmask CUDA: num_heads (%d) must be a multiple of num_heads_k (%d)",
                        s.num_heads, s.num_heads_k);
  if (s.num_heads > 65535 || s.batch > 65535)
    return report_error("flashmask CUDA: batch and num_heads must be <= 65535");
  if (m.num_mask_heads != 1 && m.num_mask_heads != s.num_heads_k &&
      m.num_mask_heads != s.num_heads)
    return report_error("flashmask CUDA: num_mask_heads (%d) must be 1, num_heads_k or num_heads",
                        m.num_mask_heads);
  const bool nb_ok = m.causal ? (m.num_bounds == 1 || m.num_bounds == 2)
                              : (m.num_bounds == 2 || m.num_bounds == 4);
  if (!nb_ok)
    return report_error("flashmask CUDA: %d bounds per column is invalid when causal=%d",
                        m.num_bounds, static_cast<int>(m.causal));
  if (m.startend_row_indices == nullptr)
    return report_error("flashmask CUDA: startend_row_indices must not be null");
  if (!(scale > 0.f) || !std::isfinite(scale))
    return report_error("flashmask CUDA: softmax_scale must be a positive finite number");
  return 0;
}

template <typename F>
int dispatch(DType dtype, int head_dim, F&& f) {
  if (dtype == DType::kFloat16) {
    if (head_dim == 64) return f(__half(), std::integral_constant<int, 64>());
    if (head_dim == 128) return f(__half(), std::integral_constant<int, 128>());
    return f(__half(), std::integral_constant<int, 256>());
  }
  if (head_dim == 64) return f(__nv_bfloat16(), std::integral_constant<int, 64>());
  if (head_dim == 128) return f(__nv_bfloat16(), std::integral_constant<int, 128>());
  return f(__nv_bfloat16(), std::integral_constant<int, 256>());
}

}  // namespace
}  // namespace cuda
}  // namespace flashmask

using namespace flashmask;
using namespace flashmask::cuda;

extern "C" {

int flashmask_cuda_abi_version(void) { return FLASHMASK_CUDA_ABI_VERSION; }
size_t flashmask_cuda_fwd_params_size(void) { return sizeof(FwdParams); }
size_t flashmask_cuda_bwd_params_size(void) { return sizeof(BwdParams); }
int flashmask_cuda_supports_head_dim(int d) { return compiled_head_dim(d) != 0; }
const char* flashmask_cuda_last_error(void) { return g_error; }

size_t flashmask_cuda_fwd_workspace_size(const FwdParams* p) {
  if (p == nullptr || compiled_head_dim(p->shape.head_dim) == 0) return 0;
  if (compiled_head_dim(p->shape.head_dim) != p->shape.head_dim) return padded_fwd_workspace_size(*p);
  if (p->shape.head_dim == 64) return fwd_layout<64>(*p).total;
  if (p->shape.head_dim == 128) return fwd_layout<128>(*p).total;
  return fwd_layout<256>(*p).total;
}

size_t flashmask_cuda_bwd_workspace_size(const BwdParams* p) {
  if (p == nullptr || compiled_head_dim(p->shape.head_dim) == 0) return 0;
  if (compiled_head_dim(p->shape.head_dim) != p->shape.head_dim) return padded_bwd_workspace_size(*p);
  if (p->shape.head_dim == 64) return bwd_layout<64>(*p).total;
  if (p->shape.head_dim == 128) return bwd_layout<128>(*p).total;
  return bwd_layout<256>(*p).total;
}

int flashmask_cuda_fwd(const FwdParams* p, void* workspace, size_t workspace_bytes,
                       cudaStream_t stream) {
  if (p == nullptr) return report_error("flashmask_cuda_fwd: null params");
  if (int rc = validate_common(p->shape, p->mask, p->dtype, p->softmax_scale)) return rc;
  if (!p->q || !p->k || !p->v || !p->out || !p->lse)
    return report_error("flashmask_cuda_fwd: q, k, v, out and lse must not be null");
  const bool padded = compiled_head_dim(p->shape.head_dim) != p->shape.head_dim;
  if (!padded && (!aligned16(p->q) || !aligned16(p->k) || !aligned16(p->v) || !aligned16(p->out) ||
      !strides_ok(p->q_strides) || !strides_ok(p->k_strides) || !strides_ok(p->v_strides) ||
      !strides_ok(p->out_strides)))
    return report_error("flashmask_cuda_fwd: tensors must be 16-byte aligned with strides that are "
                        "multiples of 8 elements (make them contiguous)");
  const size_t need = flashmask_cuda_fwd_workspace_size(p);
  if (workspace_bytes < need || (need > 0 && workspace == nullptr))
    return report_error("flashmask_cuda_fwd: workspace of %zu bytes given, %zu needed",
                        workspace_bytes, need);
  if (p->shape.batch == 0 || p->shape.seqlen_q == 0) return 0;
  if (padded) return run_fwd_padded(*p, workspace, stream);
  return dispatch(p->dtype, p->shape.head_dim, [&](auto t, auto d) {
    return run_fwd<decltype(t), decltype(d)::value>(*p, workspace, stream);
  });
}

int flashmask_cuda_bwd(const BwdParams* p, void* workspace, size_t workspace_bytes,
                       cudaStream_t stream) {
  if (p == nullptr) return report_error("flashmask_cuda_bwd: null params");
  if (int rc = validate_common(p->shape, p->mask, p->dtype, p->softmax_scale)) return rc;
  if (!p->q || !p->k || !p->v || !p->out || !p->dout || !p->lse || !p->dq || !p->dk || !p->dv)
    return report_error("flashmask_cuda_bwd: no tensor may be null");
  const bool padded = compiled_head_dim(p->shape.head_dim) != p->shape.head_dim;
  const void* ptrs[] = {p->q, p->k, p->v, p->out, p->dout, p->dq, p->dk, p->dv};
  for (const void* q : ptrs)
    if (!padded && !aligned16(q))
      return report_error("flashmask_cuda_bwd: tensors must be 16-byte aligned");
  const TensorStrides* st[] = {&p->q_strides,    &p->k_strides,  &p->v_strides,
                               &p->out_strides,  &p->dout_strides, &p->dq_strides,
                               &p->dk_strides,   &p->dv_strides};
  for (const TensorStrides* x : st)
    if (!padded && !strides_ok(*x))
      return report_error("flashmask_cuda_bwd: strides must be multiples of 8 elements (make the "
                          "tensors contiguous)");
  const size_t need = flashmask_cuda_bwd_workspace_size(p);
  if (workspace_bytes < need || (need > 0 && workspace == nullptr))
    return report_error("flashmask_cuda_bwd: workspace of %zu bytes given, %zu needed",
                        workspace_bytes, need);
  if (p->shape.batch == 0) return 0;
  if (padded) return run_bwd_padded(*p, workspace, stream);
  return dispatch(p->dtype, p->shape.head_dim, [&](auto t, auto d) {
    return run_bwd<decltype(t), decltype(d)::value>(*p, workspace, stream);
  });
}

}  // extern "C"
