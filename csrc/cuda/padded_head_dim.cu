// Runs head dims without compiled kernels through the compiled ones (padded_head_dim.h).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "flashmask/cuda_api.h"
#include "padded_head_dim.h"
#include "runtime.h"
#include "workspace.h"

namespace flashmask {
namespace cuda {

namespace {

constexpr int kCopyThreads = 256;
constexpr int64_t kMaxCopyBlocks = 8192;  // the grid-stride loop covers the rest

// One [batch, rows, heads, cols] tensor: base pointer and element strides.
struct View {
  const void* data;
  TensorStrides strides;
  int rows;
  int heads;
  int cols;
};

// dst[b, r, h, c] = c < src.cols ? src[b, r, h, c] : 0, for every c < dst.cols. The
// elements are 2 bytes (float16 / bfloat16), whose zero is all bits clear.
__global__ void copy_columns_kernel(uint16_t* dst, TensorStrides ds, const uint16_t* src,
                                    TensorStrides ss, int src_cols, int rows, int heads,
                                    int cols, int64_t total) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    const int c = static_cast<int>(i % cols);
    int64_t t = i / cols;
    const int64_t h = t % heads;
    t /= heads;
    const int64_t r = t % rows, b = t / rows;
    const uint16_t v = c < src_cols ? src[b * ss.batch + r * ss.row + h * ss.head + c] : 0;
    dst[b * ds.batch + r * ds.row + h * ds.head + c] = v;
  }
}

int copy_columns(const View& dst, const View& src, int batch, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(batch) * dst.rows * dst.heads * dst.cols;
  if (total == 0) return 0;
  const int64_t blocks = std::min<int64_t>((total + kCopyThreads - 1) / kCopyThreads, kMaxCopyBlocks);
  copy_columns_kernel<<<static_cast<unsigned>(blocks), kCopyThreads, 0, stream>>>(
      static_cast<uint16_t*>(const_cast<void*>(dst.data)), dst.strides,
      static_cast<const uint16_t*>(src.data), src.strides, src.cols, dst.rows, dst.heads,
      dst.cols, total);
  return check_cuda(cudaGetLastError(), "padded head_dim copy");
}

// A zero-padded contiguous [batch, rows, heads, padded] buffer taken from the workspace.
View take_padded(WorkspaceCarver& ws, int batch, int rows, int heads, int padded) {
  const TensorStrides st{static_cast<int64_t>(rows) * heads * padded,
                         static_cast<int64_t>(heads) * padded, padded};
  const size_t bytes = static_cast<size_t>(batch) * st.batch * sizeof(uint16_t);
  return View{ws.take(bytes), st, rows, heads, padded};
}

// Points the padded problem's tensors at zero-padded workspace buffers; `q_side()` and
// `k_side()` take one buffer shaped like q and like k.
template <typename TakeQ, typename TakeK>
void place_buffers(FwdParams& pp, TakeQ q_side, TakeK k_side) {
  const View q = q_side(), k = k_side(), v = k_side(), out = q_side();
  pp.q = q.data, pp.k = k.data, pp.v = v.data, pp.out = const_cast<void*>(out.data);
  pp.q_strides = q.strides, pp.out_strides = out.strides;
  pp.k_strides = k.strides, pp.v_strides = v.strides;
}

template <typename TakeQ, typename TakeK>
void place_buffers(BwdParams& pp, TakeQ q_side, TakeK k_side) {
  const View q = q_side(), out = q_side(), dout = q_side(), dq = q_side();
  const View k = k_side(), v = k_side(), dk = k_side(), dv = k_side();
  pp.q = q.data, pp.out = out.data, pp.dout = dout.data, pp.dq = const_cast<void*>(dq.data);
  pp.k = k.data, pp.v = v.data, pp.dk = const_cast<void*>(dk.data);
  pp.dv = const_cast<void*>(dv.data);
  pp.q_strides = pp.out_strides = pp.dout_strides = pp.dq_strides = q.strides;
  pp.k_strides = pp.v_strides = pp.dk_strides = pp.dv_strides = k.strides;
}

size_t compiled_workspace_size(const FwdParams& p) { return flashmask_cuda_fwd_workspace_size(&p); }
size_t compiled_workspace_size(const BwdParams& p) { return flashmask_cuda_bwd_workspace_size(&p); }

// The padded problem: params pointing at workspace buffers, and where the compiled
// kernels' own workspace starts. With workspace == nullptr it only sizes.
template <typename Params>
struct Plan {
  Params padded;
  void* kernel_ws;
  size_t kernel_ws_bytes;
  size_t total;
};

template <typename Params>
Plan<Params> make_plan(const Params& p, void* workspace) {
  const AttentionShape& s = p.shape;
  const int dp = compiled_head_dim(s.head_dim);
  WorkspaceCarver ws(workspace);
  Plan<Params> plan{p, nullptr, 0, 0};
  plan.padded.shape.head_dim = dp;
  place_buffers(
      plan.padded, [&] { return take_padded(ws, s.batch, s.seqlen_q, s.num_heads, dp); },
      [&] { return take_padded(ws, s.batch, s.seqlen_k, s.num_heads_k, dp); });
  plan.kernel_ws_bytes = compiled_workspace_size(plan.padded);
  plan.kernel_ws = ws.take(plan.kernel_ws_bytes);
  plan.total = ws.used();
  return plan;
}

// A caller's tensor and its padded copy in the workspace, q-shaped or k-shaped.
struct PaddedPair {
  const void* padded;
  TensorStrides padded_st;
  const void* caller;
  TensorStrides caller_st;
  bool k_shaped;
};

// The tensors copied into the padded problem (inputs) and back out of it (outputs).
template <typename Params>
std::vector<PaddedPair> qkv_of(const Params& pp, const Params& p) {
  return {{pp.q, pp.q_strides, p.q, p.q_strides, false},
          {pp.k, pp.k_strides, p.k, p.k_strides, true},
          {pp.v, pp.v_strides, p.v, p.v_strides, true}};
}
std::vector<PaddedPair> inputs_of(const FwdParams& pp, const FwdParams& p) { return qkv_of(pp, p); }
std::vector<PaddedPair> outputs_of(const FwdParams& pp, const FwdParams& p) {
  return {{pp.out, pp.out_strides, p.out, p.out_strides, false}};
}
std::vector<PaddedPair> inputs_of(const BwdParams& pp, const BwdParams& p) {
  std::vector<PaddedPair> in = qkv_of(pp, p);
  in.push_back({pp.out, pp.out_strides, p.out, p.out_strides, false});
  in.push_back({pp.dout, pp.dout_strides, p.dout, p.dout_strides, false});
  return in;
}
std::vector<PaddedPair> outputs_of(const BwdParams& pp, const BwdParams& p) {
  return {{pp.dq, pp.dq_strides, p.dq, p.dq_strides, false},
          {pp.dk, pp.dk_strides, p.dk, p.dk_strides, true},
          {pp.dv, pp.dv_strides, p.dv, p.dv_strides, true}};
}

// Copies each caller tensor into its padded buffer (to_padded) or each padded one back.
int copy_pairs(const std::vector<PaddedPair>& pairs, const AttentionShape& s, int dp, bool to_padded,
               cudaStream_t stream) {
  for (const PaddedPair& t : pairs) {
    const int rows = t.k_shaped ? s.seqlen_k : s.seqlen_q, heads = t.k_shaped ? s.num_heads_k : s.num_heads;
    const View padded{t.padded, t.padded_st, rows, heads, dp};
    const View caller{t.caller, t.caller_st, rows, heads, s.head_dim};
    const int rc = to_padded ? copy_columns(padded, caller, s.batch, stream)
                             : copy_columns(caller, padded, s.batch, stream);
    if (rc) return rc;
  }
  return 0;
}

// Inputs into the padded buffers, the compiled kernels, outputs back.
template <typename Params, typename Kernel>
int run_padded(const Params& p, void* workspace, cudaStream_t stream, Kernel kernel) {
  const Plan<Params> plan = make_plan(p, workspace);
  const int dp = plan.padded.shape.head_dim;
  if (int rc = copy_pairs(inputs_of(plan.padded, p), p.shape, dp, true, stream)) return rc;
  if (int rc = kernel(&plan.padded, plan.kernel_ws, plan.kernel_ws_bytes, stream)) return rc;
  return copy_pairs(outputs_of(plan.padded, p), p.shape, dp, false, stream);
}

}  // namespace

int compiled_head_dim(int head_dim) {
  if (head_dim < 1 || head_dim > kMaxHeadDim) return 0;
  for (const int d : kCompiledHeadDims)
    if (d >= head_dim) return d;
  return 0;
}

size_t padded_fwd_workspace_size(const FwdParams& p) { return make_plan(p, nullptr).total; }
size_t padded_bwd_workspace_size(const BwdParams& p) { return make_plan(p, nullptr).total; }

int run_fwd_padded(const FwdParams& p, void* workspace, cudaStream_t stream) {
  return run_padded(p, workspace, stream, flashmask_cuda_fwd);
}

int run_bwd_padded(const BwdParams& p, void* workspace, cudaStream_t stream) {
  return run_padded(p, workspace, stream, flashmask_cuda_bwd);
}

}  // namespace cuda
}  // namespace flashmask
