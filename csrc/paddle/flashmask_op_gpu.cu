// GPU host functions of the Paddle op: a thin adapter onto the framework-free
// CUDA interface (flashmask/cuda_api.h). Outputs and the workspace are Paddle
// tensors on the inputs' place; kernels run on q's stream. Inputs arrive
// validated and contiguous (flashmask_op.cc). Only paddle::empty is asked of
// Paddle here (an allocation, no Paddle kernel), so the op runs wherever its own
// kernels do.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "flashmask/cuda_api.h"
#include "flashmask_op.h"
#include "paddle/extension.h"

namespace {

// Test hook, as in the torch binding: with FLASHMASK_POISON=1 the outputs are filled
// with NaN (all bits set, NaN in float16, bfloat16 and float32) before the kernels run,
// so an element they leave unwritten shows.
void Poison(const paddle::Tensor& t) {
  const char* flag = std::getenv("FLASHMASK_POISON");
  if (flag == nullptr || std::strcmp(flag, "1") != 0) return;
  const size_t elem = t.dtype() == paddle::DataType::FLOAT32 ? 4 : 2;
  const cudaError_t e = cudaMemsetAsync(const_cast<void*>(t.data()), 0xFF,
                                        static_cast<size_t>(t.numel()) * elem, t.stream());
  PD_CHECK(e == cudaSuccess, "flashmask_attention (GPU): poisoning an output failed: ",
           cudaGetErrorString(e));
}

paddle::Tensor Workspace(size_t bytes, const paddle::Place& place) {
  const int64_t n = static_cast<int64_t>(bytes > 0 ? bytes : 1);
  return paddle::empty({n}, paddle::DataType::UINT8, place);
}

}  // namespace

std::vector<paddle::Tensor> FlashMaskForwardGPU(const FlashMaskInputs& in) {
  std::vector<paddle::Tensor> outs = EmptyForwardOutputs(in);
  for (const paddle::Tensor& t : outs) Poison(t);
  const flashmask::FwdParams p = MakeFwdParams(in, outs[0], outs[1]);
  const size_t ws_bytes = flashmask_cuda_fwd_workspace_size(&p);
  paddle::Tensor ws = Workspace(ws_bytes, in.q.place());
  const int rc = flashmask_cuda_fwd(&p, ws.data(), ws_bytes, in.q.stream());
  PD_CHECK(rc == 0, "flashmask_attention (GPU forward): ", flashmask_cuda_last_error());
  return outs;
}

std::vector<paddle::Tensor> FlashMaskBackwardGPU(const FlashMaskInputs& in, const FlashMaskGradInputs& g,
                                                 bool deterministic) {
  std::vector<paddle::Tensor> grads = EmptyGrads(in);
  for (const paddle::Tensor& t : grads) Poison(t);
  flashmask::BwdParams p = MakeBwdParams(in, g, grads);
  p.deterministic = deterministic;
  const size_t ws_bytes = flashmask_cuda_bwd_workspace_size(&p);
  paddle::Tensor ws = Workspace(ws_bytes, in.q.place());
  const int rc = flashmask_cuda_bwd(&p, ws.data(), ws_bytes, in.q.stream());
  PD_CHECK(rc == 0, "flashmask_attention (GPU backward): ", flashmask_cuda_last_error());
  return grads;
}
