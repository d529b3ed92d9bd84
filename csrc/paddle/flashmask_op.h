// Paddle custom operator `flashmask_attention_op`: the per-device host
// functions and the helpers that turn Paddle tensors into flashmask params.
//
// flashmask_op.cc validates the inputs once for every device, then calls the
// function of the tensors' place. Each returns freshly allocated outputs:
//   forward : {out [B, Sq, H, D] (dtype of q), softmax_lse [B, H, Sq] float32}
//   backward: {dq, dk, dv} shaped and typed like q, k, v.
#pragma once

#include <vector>

#include "flashmask/params.h"
#include "paddle/extension.h"

// The op's inputs as the device functions take them: validated and contiguous
// (flashmask_op.cc). paddle::Tensor is a handle, so these are cheap to copy.
struct FlashMaskInputs {
  paddle::Tensor q, k, v, startend_row_indices;
  paddle::optional<paddle::Tensor> block_mask;
  bool causal;
  bool masks_nothing;  // the caller gave no mask (MaskParams::masks_nothing)
  float softmax_scale;
};
// What the backward takes besides: the forward's outputs and the output gradient.
struct FlashMaskGradInputs {
  paddle::Tensor out, softmax_lse, dout;
};

std::vector<paddle::Tensor> FlashMaskForwardCPU(const FlashMaskInputs& in);
std::vector<paddle::Tensor> FlashMaskBackwardCPU(const FlashMaskInputs& in, const FlashMaskGradInputs& g);

#ifdef PADDLE_WITH_CUDA
std::vector<paddle::Tensor> FlashMaskForwardGPU(const FlashMaskInputs& in);
// deterministic: bitwise-reproducible gradients (the Python front end resolves it from
// FLASHMASK_DETERMINISTIC and FLAGS_cudnn_deterministic).
std::vector<paddle::Tensor> FlashMaskBackwardGPU(const FlashMaskInputs& in, const FlashMaskGradInputs& g,
                                                 bool deterministic);
#endif

// Freshly allocated outputs on the inputs' place: the forward's {out [B, Sq, H, D]
// (dtype of q), softmax_lse [B, H, Sq] float32}, the backward's {dq, dk, dv}.
std::vector<paddle::Tensor> EmptyForwardOutputs(const FlashMaskInputs& in);
std::vector<paddle::Tensor> EmptyGrads(const FlashMaskInputs& in);

// Params for the kernels over those tensors; shared by the CPU and GPU paths.
// BwdParams::deterministic is left false for the device function to set (the CPU
// kernel is always deterministic). grads: {dq, dk, dv}.
flashmask::FwdParams MakeFwdParams(const FlashMaskInputs& in, const paddle::Tensor& out,
                                   const paddle::Tensor& softmax_lse);
flashmask::BwdParams MakeBwdParams(const FlashMaskInputs& in, const FlashMaskGradInputs& g,
                                   const std::vector<paddle::Tensor>& grads);
