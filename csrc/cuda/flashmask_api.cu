// extern "C" entry points of libflashmask_cuda (cuda_api.h): argument validation, then
// dispatch on (dtype, head_dim) to the compiled instances (kernel_dispatch.h, generated)
// or to the padded path for the other head dims (padded_head_dim.h).
#include <array>
#include <cmath>
#include <cstdint>

#include "flashmask/cuda_api.h"
#include "flashmask_launch.cuh"
#include "kernel_dispatch.h"
#include "padded_head_dim.h"
#include "runtime.h"

namespace flashmask {
namespace cuda {

namespace {

// The compiled kernels load 16 bytes (8 elements) per access: base pointers and strides
// must keep every row's start on such a boundary. Padded head dims copy into aligned
// buffers of their own, so any layout is accepted there.
constexpr uintptr_t kAccessBytes = 16;
constexpr int64_t kAccessElements = 8;

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kAccessBytes == 0; }
bool strides_aligned(const TensorStrides& s) {
  return s.batch % kAccessElements == 0 && s.row % kAccessElements == 0 &&
         s.head % kAccessElements == 0;
}

bool runs_padded(const AttentionShape& s) { return compiled_head_dim(s.head_dim) != s.head_dim; }

int validate_shape(const AttentionShape& s) {
  if (compiled_head_dim(s.head_dim) == 0)
    return report_error("flashmask CUDA: shape.head_dim must be in [1, %d], got %d", kMaxHeadDim,
                        s.head_dim);
  if (s.batch < 0 || s.seqlen_q < 0 || s.seqlen_k < 0)
    return report_error("flashmask CUDA: shape.batch (%d), seqlen_q (%d) and seqlen_k (%d) must "
                        "not be negative", s.batch, s.seqlen_q, s.seqlen_k);
  // Tile-list entries hold a tile index below 2^24 (tiles of 32 rows or columns at the
  // narrowest). Element offsets are 64-bit: no limit on batch * seqlen * heads * head_dim.
  if (s.seqlen_q > kMaxSeqlen || s.seqlen_k > kMaxSeqlen)
    return report_error("flashmask CUDA: seqlen_q (%d) and seqlen_k (%d) must be <= %d, the longest sequence "
                        "the kernels index", s.seqlen_q, s.seqlen_k, kMaxSeqlen);
  if (s.num_heads <= 0 || s.num_heads_k <= 0)
    return report_error("flashmask CUDA: shape.num_heads (%d) and num_heads_k (%d) must be "
                        "positive", s.num_heads, s.num_heads_k);
  if (s.num_heads % s.num_heads_k != 0)
    return report_error("flashmask CUDA: shape.num_heads (%d) must be a multiple of "
                        "num_heads_k (%d)", s.num_heads, s.num_heads_k);
  if (s.num_heads > kMaxGridYZ || s.batch > kMaxGridYZ)
    return report_error("flashmask CUDA: shape.batch (%d) and num_heads (%d) must be <= %d",
                        s.batch, s.num_heads, kMaxGridYZ);
  return 0;
}

int validate_mask(const AttentionShape& s, const MaskParams& m) {
  if (m.num_mask_heads != 1 && m.num_mask_heads != s.num_heads_k &&
      m.num_mask_heads != s.num_heads)
    return report_error("flashmask CUDA: mask.num_mask_heads (%d) must be 1, num_heads_k or "
                        "num_heads", m.num_mask_heads);
  const bool bounds_ok = m.causal ? (m.num_bounds == 1 || m.num_bounds == 2)
                                  : (m.num_bounds == 2 || m.num_bounds == 4);
  if (!bounds_ok)
    return report_error("flashmask CUDA: mask.num_bounds (%d) is invalid when causal=%d (1 or 2 "
                        "when causal, 2 or 4 when not)", m.num_bounds, static_cast<int>(m.causal));
  if (m.startend_row_indices == nullptr)
    return report_error("flashmask CUDA: mask.startend_row_indices must not be null");
  return 0;
}

int validate_common(const AttentionShape& s, const MaskParams& m, DType dtype, float scale) {
  if (!compiled_dtype(dtype))
    return report_error("flashmask CUDA: dtype must be %s, got code %d", kCompiledDTypeNames,
                        static_cast<int>(dtype));
  if (int rc = validate_shape(s)) return rc;
  if (int rc = validate_mask(s, m)) return rc;
  if (!(scale > 0.f) || !std::isfinite(scale))
    return report_error("flashmask CUDA: softmax_scale must be a positive finite number, got %g",
                        static_cast<double>(scale));
  return 0;
}

// Each named tensor non-null and, unless the head dim runs padded, aligned for the
// kernels' 16-byte accesses. `where` names the entry point for the messages.
struct TensorArg {
  const char* name;
  const void* data;
  const TensorStrides* strides;  // null for lse, which the library addresses itself
};

template <size_t N>
int validate_tensors(const char* where, const std::array<TensorArg, N>& args, bool padded) {
  for (const TensorArg& t : args) {
    if (t.data == nullptr) return report_error("%s: %s must not be null", where, t.name);
    if (padded || t.strides == nullptr) continue;
    if (!aligned(t.data))
      return report_error("%s: %s must be 16-byte aligned (make it contiguous)", where, t.name);
    if (!strides_aligned(*t.strides))
      return report_error("%s: %s strides must be multiples of 8 elements (make it contiguous)",
                          where, t.name);
  }
  return 0;
}

int validate_workspace(const char* where, const void* workspace, size_t given, size_t need) {
  if (given < need || (need > 0 && workspace == nullptr))
    return report_error("%s: workspace of %zu bytes given, %zu needed", where, given, need);
  return 0;
}

// Each entry point's tensors, in the order of their arguments.
std::array<TensorArg, 5> tensor_args(const FwdParams& p) {
  return {{{"q", p.q, &p.q_strides},
           {"k", p.k, &p.k_strides},
           {"v", p.v, &p.v_strides},
           {"out", p.out, &p.out_strides},
           {"lse", p.lse, nullptr}}};
}
std::array<TensorArg, 9> tensor_args(const BwdParams& p) {
  return {{{"q", p.q, &p.q_strides},
           {"k", p.k, &p.k_strides},
           {"v", p.v, &p.v_strides},
           {"out", p.out, &p.out_strides},
           {"dout", p.dout, &p.dout_strides},
           {"lse", p.lse, nullptr},
           {"dq", p.dq, &p.dq_strides},
           {"dk", p.dk, &p.dk_strides},
           {"dv", p.dv, &p.dv_strides}}};
}
size_t workspace_size(const FwdParams& p) { return flashmask_cuda_fwd_workspace_size(&p); }
size_t workspace_size(const BwdParams& p) { return flashmask_cuda_bwd_workspace_size(&p); }
// A forward without query rows writes nothing; a backward without them still zeroes dK and dV.
bool nothing_to_compute(const FwdParams& p) { return p.shape.batch == 0 || p.shape.seqlen_q == 0; }
bool nothing_to_compute(const BwdParams& p) { return p.shape.batch == 0; }

// An entry point's checks, in order (params, dtype, shape, mask and scale, the tensors, the
// workspace), then run(padded) unless there is nothing to compute. `where` names the entry
// point in the messages.
template <typename Params, typename Run>
int checked_call(const char* where, const Params* p, const void* workspace, size_t workspace_bytes, Run run) {
  if (p == nullptr) return report_error("%s: params must not be null", where);
  if (int rc = validate_common(p->shape, p->mask, p->dtype, p->softmax_scale)) return rc;
  const bool padded = runs_padded(p->shape);
  if (int rc = validate_tensors(where, tensor_args(*p), padded)) return rc;
  if (int rc = validate_workspace(where, workspace, workspace_bytes, workspace_size(*p))) return rc;
  if (nothing_to_compute(*p)) return 0;
  return run(padded);
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
const char* flashmask_cuda_last_error(void) { return last_error_message(); }

size_t flashmask_cuda_fwd_workspace_size(const FwdParams* p) {
  if (p == nullptr || compiled_head_dim(p->shape.head_dim) == 0) return 0;
  if (runs_padded(p->shape)) return padded_fwd_workspace_size(*p);
  return dispatch_head_dim(p->shape.head_dim,
                           [&](auto d) { return fwd_layout<decltype(d)::value>(*p).total; });
}

size_t flashmask_cuda_bwd_workspace_size(const BwdParams* p) {
  if (p == nullptr || compiled_head_dim(p->shape.head_dim) == 0) return 0;
  if (runs_padded(p->shape)) return padded_bwd_workspace_size(*p);
  return dispatch_head_dim(p->shape.head_dim,
                           [&](auto d) { return bwd_layout<decltype(d)::value>(*p).total; });
}

int flashmask_cuda_fwd(const FwdParams* p, void* workspace, size_t workspace_bytes,
                       cudaStream_t stream) {
  return checked_call("flashmask_cuda_fwd", p, workspace, workspace_bytes, [&](bool padded) {
    if (padded) return run_fwd_padded(*p, workspace, stream);
    return dispatch(p->dtype, p->shape.head_dim, [&](auto t, auto d) {
      return run_fwd<decltype(t), decltype(d)::value>(*p, workspace, stream);
    });
  });
}

int flashmask_cuda_bwd(const BwdParams* p, void* workspace, size_t workspace_bytes,
                       cudaStream_t stream) {
  return checked_call("flashmask_cuda_bwd", p, workspace, workspace_bytes, [&](bool padded) {
    if (padded) return run_bwd_padded(*p, workspace, stream);
    return dispatch(p->dtype, p->shape.head_dim, [&](auto t, auto d) {
      return run_bwd<decltype(t), decltype(d)::value>(*p, workspace, stream);
    });
  });
}

}  // extern "C"
