// Framework-free description of one FlashMask attention call.
//
// Every backend (the CPU kernel, the CUDA kernels, the Paddle op, the PyTorch
// binding) fills these plain structs; no framework type crosses this boundary,
// which is what lets the GPU kernels be tested without Paddle.
//
// Layouts (strides are in elements, so any row/head-strided view works):
//   q, out, dout, dq : [batch, seqlen_q, num_heads,   head_dim]
//   k, v, dk, dv     : [batch, seqlen_k, num_heads_k, head_dim]
//   lse              : [batch, num_heads, seqlen_q] float32, contiguous
//   startend_row_indices : [batch, num_mask_heads, seqlen_k, num_bounds] int32,
//                          contiguous (see mask.h for what the bounds mean)
//   block_mask (optional): [batch, num_mask_heads, ceil(seqlen_q/128),
//                          ceil(seqlen_k/128)] int32, 1 = keep, 0 = skip block
#pragma once

#include <cstdint>

#include "flashmask/head_dims.h"  // kMaxHeadDim, generated from the kernel table
#include "flashmask/macros.h"

namespace flashmask {

enum class DType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Granularity of block_mask, fixed by Paddle's API.
constexpr int kBlockMaskSize = 128;

struct MaskParams {
  const int32_t* startend_row_indices;  // never null: "no mask" is encoded as bounds
  int32_t num_bounds;                   // 1 or 2 when causal, 2 or 4 when not
  int32_t num_mask_heads;               // 1, num_heads_k or num_heads
  bool causal;                          // bottom-right aligned when seqlen_q != seqlen_k
  const int32_t* block_mask;            // nullable
  // The caller passed no mask: the bounds mask nothing beyond `causal`. A hint only (the
  // bounds stay authoritative): the Hopper forward then takes its mask-less key tiles.
  bool masks_nothing;
};

struct AttentionShape {
  int32_t batch;
  int32_t seqlen_q;
  int32_t seqlen_k;
  int32_t num_heads;    // query heads
  int32_t num_heads_k;  // key/value heads; num_heads % num_heads_k == 0 (GQA/MQA)
  int32_t head_dim;
};

struct TensorStrides {  // in elements
  int64_t batch;
  int64_t row;
  int64_t head;
};

struct FwdParams {
  AttentionShape shape;
  MaskParams mask;
  DType dtype;
  float softmax_scale;

  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;  // -inf for a row whose every key is masked (its output is 0)

  TensorStrides q_strides, k_strides, v_strides, out_strides;
};

struct BwdParams {
  AttentionShape shape;
  MaskParams mask;
  DType dtype;
  float softmax_scale;
  bool deterministic;  // grads bitwise identical run to run

  const void* q;
  const void* k;
  const void* v;
  const void* out;
  const void* dout;
  const float* lse;  // as written by the forward pass
  void* dq;
  void* dk;
  void* dv;

  TensorStrides q_strides, k_strides, v_strides, out_strides, dout_strides;
  TensorStrides dq_strides, dk_strides, dv_strides;
};

// Head of the mask (and block mask) that query head `head` reads.
FM_HOST_DEVICE int32_t mask_head_for(const MaskParams& mask, const AttentionShape& shape,
                             int32_t head) {
  if (mask.num_mask_heads == 1) return 0;
  if (mask.num_mask_heads == shape.num_heads) return head;
  return head / (shape.num_heads / shape.num_heads_k);  // one mask per key head
}

// Row of the [batch * num_mask_heads] mask arrays (bounds, tile bounds, block mask) that
// query head `head` of batch `batch` reads.
FM_HOST_DEVICE int64_t mask_row_for(const MaskParams& mask, const AttentionShape& shape, int32_t batch,
                                    int32_t head) {
  return static_cast<int64_t>(batch) * mask.num_mask_heads + mask_head_for(mask, shape, head);
}

}  // namespace flashmask
