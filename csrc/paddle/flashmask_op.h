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

std::vector<paddle::Tensor> FlashMaskForwardCPU(const paddle::Tensor& q, const paddle::Tensor& k,
                                                const paddle::Tensor& v,
                                                const paddle::Tensor& startend_row_indices,
                                                const paddle::optional<paddle::Tensor>& block_mask,
                                                bool causal, float softmax_scale);

std::vector<paddle::Tensor> FlashMaskBackwardCPU(
    const paddle::Tensor& q, const paddle::Tensor& k, const paddle::Tensor& v,
    const paddle::Tensor& startend_row_indices, const paddle::Tensor& out,
    const paddle::Tensor& softmax_lse, const paddle::Tensor& dout,
    const paddle::optional<paddle::Tensor>& block_mask, bool causal, float softmax_scale);

#ifdef PADDLE_WITH_CUDA
std::vector<paddle::Tensor> FlashMaskForwardGPU(const paddle::Tensor& q, const paddle::Tensor& k,
                                                const paddle::Tensor& v,
                                                const paddle::Tensor& startend_row_indices,
                                                const paddle::optional<paddle::Tensor>& block_mask,
                                                bool causal, float softmax_scale);

// deterministic: bitwise-reproducible gradients (the Python front end resolves it from
// FLASHMASK_DETERMINISTIC and FLAGS_cudnn_deterministic).
std::vector<paddle::Tensor> FlashMaskBackwardGPU(
    const paddle::Tensor& q, const paddle::Tensor& k, const paddle::Tensor& v,
    const paddle::Tensor& startend_row_indices, const paddle::Tensor& out,
    const paddle::Tensor& softmax_lse, const paddle::Tensor& dout,
    const paddle::optional<paddle::Tensor>& block_mask, bool causal, float softmax_scale,
    bool deterministic);
#endif

// Params describing already validated, contiguous tensors; shared by the CPU
// and GPU paths. BwdParams::deterministic is left false for the device
// function to set (the CPU kernel is always deterministic).
flashmask::FwdParams MakeFwdParams(const paddle::Tensor& q, const paddle::Tensor& k,
                                   const paddle::Tensor& v,
                                   const paddle::Tensor& startend_row_indices,
                                   const paddle::optional<paddle::Tensor>& block_mask, bool causal,
                                   float softmax_scale, paddle::Tensor& out,
                                   paddle::Tensor& softmax_lse);

flashmask::BwdParams MakeBwdParams(const paddle::Tensor& q, const paddle::Tensor& k,
                                   const paddle::Tensor& v,
                                   const paddle::Tensor& startend_row_indices,
                                   const paddle::Tensor& out, const paddle::Tensor& softmax_lse,
                                   const paddle::Tensor& dout,
                                   const paddle::optional<paddle::Tensor>& block_mask, bool causal,
                                   float softmax_scale, paddle::Tensor& dq, paddle::Tensor& dk,
                                   paddle::Tensor& dv);
