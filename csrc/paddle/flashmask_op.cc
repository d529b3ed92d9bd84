// Paddle binding of FlashMask attention: validation, place dispatch and the
// operator registration. The kernels themselves never see a Paddle type.
#include "flashmask_op.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>

#include "cpu/flashmask_cpu.h"

namespace {

// AttentionShape (params.h) holds each dimension as int32.
constexpr int64_t kMaxDim = std::numeric_limits<int32_t>::max();

std::string ShapeStr(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

// softmax_lse [B, H, Sq] of a query [B, Sq, H, D].
std::vector<int64_t> LseShape(const std::vector<int64_t>& q_shape) {
  return {q_shape[0], q_shape[2], q_shape[1]};
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool IsSupportedDtype(paddle::DataType dtype) {
  return dtype == paddle::DataType::FLOAT32 || dtype == paddle::DataType::FLOAT16 ||
         dtype == paddle::DataType::BFLOAT16;
}

// Checks shared by the forward and the backward op; Python-side validation
// also exists, but this keeps bad calls from reaching a kernel.
void CheckInputs(const paddle::Tensor& q, const paddle::Tensor& k, const paddle::Tensor& v,
                 const paddle::Tensor& startend_row_indices,
                 const paddle::optional<paddle::Tensor>& block_mask, bool causal, float softmax_scale) {
  const auto qs = q.shape(), ks = k.shape(), vs = v.shape();
  PD_CHECK(qs.size() == 4, "flashmask_attention_op: `q` must be 4-D [batch, seqlen_q, num_heads, ",
           "head_dim], got shape ", ShapeStr(qs));
  PD_CHECK(ks.size() == 4,
           "flashmask_attention_op: `k` must be 4-D [batch, seqlen_k, num_heads_k, ",
           "head_dim], got shape ", ShapeStr(ks));
  PD_CHECK(vs == ks, "flashmask_attention_op: `v` must have the shape of `k` ", ShapeStr(ks),
           ", got ", ShapeStr(vs));
  PD_CHECK(IsSupportedDtype(q.dtype()),
           "flashmask_attention_op: `q` dtype must be float32, float16 or bfloat16, got ",
           q.dtype());
  PD_CHECK(q.is_cpu() || q.dtype() != paddle::DataType::FLOAT32,
           "flashmask_attention_op: `q` dtype must be float16 or bfloat16 on GPU, got float32");
  // 0 is accepted (uniform attention: the CPU kernel's tests run it); the public API asks > 0.
  PD_CHECK(std::isfinite(softmax_scale) && softmax_scale >= 0.f,
           "flashmask_attention_op: `softmax_scale` must be finite and >= 0, got ", softmax_scale);
  PD_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype(),
           "flashmask_attention_op: `k` and `v` must have the dtype of `q` (", q.dtype(), "), got ",
           k.dtype(), " and ", v.dtype());
  PD_CHECK(
      k.place() == q.place() && v.place() == q.place() && startend_row_indices.place() == q.place(),
      "flashmask_attention_op: `k`, `v` and `startend_row_indices` must be on the place of "
      "`q`");
  const int64_t batch = qs[0], seqlen_q = qs[1], num_heads = qs[2], head_dim = qs[3];
  const int64_t seqlen_k = ks[1], num_heads_k = ks[2];
  PD_CHECK(ks[0] == batch && ks[3] == head_dim,
           "flashmask_attention_op: `k` must be [batch, seqlen_k, num_heads_k, head_dim] with the "
           "batch and head_dim of `q` ",
           ShapeStr(qs), ", got ", ShapeStr(ks));
  PD_CHECK(head_dim >= 1, "flashmask_attention_op: `q` head_dim must be at least 1, got ",
           head_dim);
  PD_CHECK(head_dim <= flashmask::kMaxHeadDim, "flashmask_attention_op: `q` head_dim must be ",
           "at most ", flashmask::kMaxHeadDim, ", got ", head_dim);
  for (const auto* shape : {&qs, &ks}) {
    for (const int64_t d : *shape) {
      PD_CHECK(d <= kMaxDim, "flashmask_attention_op: every dimension of `q` and `k` must be at ",
               "most ", kMaxDim, ", got q ", ShapeStr(qs), " and k ", ShapeStr(ks));
    }
  }
  PD_CHECK(num_heads_k >= 1 && num_heads % num_heads_k == 0,
           "flashmask_attention_op: num_heads of `q` (", num_heads,
           ") must be a multiple of num_heads of `k` (", num_heads_k, ")");

  const auto is = startend_row_indices.shape();
  PD_CHECK(startend_row_indices.dtype() == paddle::DataType::INT32,
           "flashmask_attention_op: `startend_row_indices` dtype must be int32, got ",
           startend_row_indices.dtype());
  const bool bounds_ok =
      is.size() == 4 && (causal ? (is[3] == 1 || is[3] == 2) : (is[3] == 2 || is[3] == 4));
  PD_CHECK(bounds_ok && is[0] == batch && is[2] == seqlen_k &&
               (is[1] == 1 || is[1] == num_heads_k || is[1] == num_heads),
           "flashmask_attention_op: `startend_row_indices` must be [", batch,
           ", num_mask_heads in {1, ", num_heads_k, ", ", num_heads, "}, ", seqlen_k, ", ",
           causal ? "1 or 2" : "2 or 4", " (causal=", causal ? "True" : "False", ")], got ",
           ShapeStr(is));
  if (block_mask) {
    const auto bs = block_mask->shape();
    const std::vector<int64_t> expected = {batch, is[1],
                                           CeilDiv(seqlen_q, flashmask::kBlockMaskSize),
                                           CeilDiv(seqlen_k, flashmask::kBlockMaskSize)};
    PD_CHECK(block_mask->dtype() == paddle::DataType::INT32,
             "flashmask_attention_op: `block_mask` dtype must be int32, got ", block_mask->dtype());
    PD_CHECK(
        bs == expected, "flashmask_attention_op: `block_mask` must be [batch, num_mask_heads, ",
        "ceil(seqlen_q/128), ceil(seqlen_k/128)] = ", ShapeStr(expected), ", got ", ShapeStr(bs));
    PD_CHECK(block_mask->place() == q.place(),
             "flashmask_attention_op: `block_mask` must be on the place of `q`");
  }
}

void CheckLikeQ(const paddle::Tensor& q, const paddle::Tensor& t, const char* name) {
  PD_CHECK(t.shape() == q.shape() && t.dtype() == q.dtype() && t.place() == q.place(),
           "flashmask_attention_op: `", name, "` must match `q` (shape ", ShapeStr(q.shape()), ", ",
           q.dtype(), "), got shape ", ShapeStr(t.shape()), ", ", t.dtype());
}

void CheckBackwardInputs(const paddle::Tensor& q, const paddle::Tensor& out,
                         const paddle::Tensor& softmax_lse, const paddle::Tensor& dout) {
  CheckLikeQ(q, out, "out");
  CheckLikeQ(q, dout, "out@GRAD");
  const std::vector<int64_t> lse_shape = LseShape(q.shape());
  PD_CHECK(softmax_lse.shape() == lse_shape && softmax_lse.dtype() == paddle::DataType::FLOAT32 &&
               softmax_lse.place() == q.place(),
           "flashmask_attention_op: `softmax_lse` must be float32 ", ShapeStr(lse_shape),
           " [batch, num_heads, seqlen_q], got ", softmax_lse.dtype(), " ",
           ShapeStr(softmax_lse.shape()));
}

flashmask::DType ToDType(paddle::DataType dtype) {
  switch (dtype) {
    case paddle::DataType::FLOAT16:
      return flashmask::DType::kFloat16;
    case paddle::DataType::BFLOAT16:
      return flashmask::DType::kBFloat16;
    default:
      return flashmask::DType::kFloat32;  // CheckInputs allows nothing else
  }
}

// Strides of a contiguous [batch, seqlen, heads, head_dim] tensor.
flashmask::TensorStrides StridesOf(const paddle::Tensor& t) {
  const auto s = t.shape();
  return {s[1] * s[2] * s[3], s[2] * s[3], s[3]};
}

flashmask::AttentionShape ShapeOf(const paddle::Tensor& q, const paddle::Tensor& k) {
  const auto qs = q.shape(), ks = k.shape();
  return {static_cast<int32_t>(qs[0]), static_cast<int32_t>(qs[1]), static_cast<int32_t>(ks[1]),
          static_cast<int32_t>(qs[2]), static_cast<int32_t>(ks[2]), static_cast<int32_t>(qs[3])};
}

flashmask::MaskParams MaskOf(const FlashMaskInputs& in) {
  const auto is = in.startend_row_indices.shape();
  return {in.startend_row_indices.data<int32_t>(),
          static_cast<int32_t>(is[3]),
          static_cast<int32_t>(is[1]),
          in.causal,
          in.block_mask ? in.block_mask->data<int32_t>() : nullptr,
          in.masks_nothing};
}

// What forward and backward params share: the shape, mask, dtype and scale, and the
// q/k/v/out pointers with their strides.
template <typename Params>
void FillCommon(Params& p, const FlashMaskInputs& in, const paddle::Tensor& out) {
  p.shape = ShapeOf(in.q, in.k);
  p.mask = MaskOf(in);
  p.dtype = ToDType(in.q.dtype());
  p.softmax_scale = in.softmax_scale;
  p.q = in.q.data();
  p.k = in.k.data();
  p.v = in.v.data();
  p.out = const_cast<void*>(out.data());  // written by the forward, read by the backward
  p.q_strides = StridesOf(in.q);
  p.k_strides = StridesOf(in.k);
  p.v_strides = StridesOf(in.v);
  p.out_strides = StridesOf(out);
}

[[noreturn]] void ThrowUnsupportedPlace(const paddle::Tensor& q) {
  PD_THROW("flashmask_attention_op: unsupported place ", q.place(),
           " (supported: CPU, and GPU when Paddle and this package are built with CUDA)");
}

}  // namespace

std::vector<paddle::Tensor> EmptyForwardOutputs(const FlashMaskInputs& in) {
  return {paddle::empty(in.q.shape(), in.q.dtype(), in.q.place()),
          paddle::empty(LseShape(in.q.shape()), paddle::DataType::FLOAT32, in.q.place())};
}

std::vector<paddle::Tensor> EmptyGrads(const FlashMaskInputs& in) {
  std::vector<paddle::Tensor> grads;
  for (const paddle::Tensor* t : {&in.q, &in.k, &in.v}) grads.push_back(paddle::empty(t->shape(), t->dtype(), t->place()));
  return grads;
}

flashmask::FwdParams MakeFwdParams(const FlashMaskInputs& in, const paddle::Tensor& out,
                                   const paddle::Tensor& softmax_lse) {
  flashmask::FwdParams p{};
  FillCommon(p, in, out);
  p.lse = const_cast<float*>(softmax_lse.data<float>());
  return p;
}

flashmask::BwdParams MakeBwdParams(const FlashMaskInputs& in, const FlashMaskGradInputs& g,
                                   const std::vector<paddle::Tensor>& grads) {
  flashmask::BwdParams p{};
  FillCommon(p, in, g.out);
  p.dout = g.dout.data();
  p.lse = g.softmax_lse.data<float>();
  p.dq = const_cast<void*>(grads[0].data());
  p.dk = const_cast<void*>(grads[1].data());
  p.dv = const_cast<void*>(grads[2].data());
  p.dout_strides = StridesOf(g.dout);
  p.dq_strides = StridesOf(grads[0]);
  p.dk_strides = StridesOf(grads[1]);
  p.dv_strides = StridesOf(grads[2]);
  return p;
}

std::vector<paddle::Tensor> FlashMaskForwardCPU(const FlashMaskInputs& in) {
  std::vector<paddle::Tensor> outs = EmptyForwardOutputs(in);
  flashmask::flashmask_fwd_cpu(MakeFwdParams(in, outs[0], outs[1]));
  return outs;
}

std::vector<paddle::Tensor> FlashMaskBackwardCPU(const FlashMaskInputs& in, const FlashMaskGradInputs& g) {
  std::vector<paddle::Tensor> grads = EmptyGrads(in);
  flashmask::flashmask_bwd_cpu(MakeBwdParams(in, g, grads));
  return grads;
}

namespace {

// The kernels take contiguous tensors. Paddle 3.x can hand a custom op a strided view
// (contiguous() copies it, and is a no-op otherwise); Paddle 2.6's custom-op tensors
// are always contiguous and have no contiguous() (setup.py sets the macro).
paddle::Tensor Contiguous(const paddle::Tensor& t) {
#ifdef FLASHMASK_PADDLE_HAS_CONTIGUOUS
  return t.contiguous();
#else
  return t;
#endif
}

paddle::optional<paddle::Tensor> Contiguous(const paddle::optional<paddle::Tensor>& t) {
  return t ? paddle::optional<paddle::Tensor>(Contiguous(*t)) : t;
}

FlashMaskInputs ContiguousInputs(const paddle::Tensor& q, const paddle::Tensor& k, const paddle::Tensor& v,
                                 const paddle::Tensor& startend_row_indices,
                                 const paddle::optional<paddle::Tensor>& block_mask, bool causal,
                                 bool masks_nothing, float softmax_scale) {
  CheckInputs(q, k, v, startend_row_indices, block_mask, causal, softmax_scale);
  return {Contiguous(q), Contiguous(k), Contiguous(v), Contiguous(startend_row_indices), Contiguous(block_mask),
          causal, masks_nothing, softmax_scale};
}

std::vector<paddle::Tensor> FlashMaskForward(const paddle::Tensor& q, const paddle::Tensor& k,
                                             const paddle::Tensor& v,
                                             const paddle::Tensor& startend_row_indices,
                                             const paddle::optional<paddle::Tensor>& block_mask,
                                             bool causal, float softmax_scale,
                                             bool /*deterministic: a backward setting*/, bool masks_nothing) {
  const FlashMaskInputs in =
      ContiguousInputs(q, k, v, startend_row_indices, block_mask, causal, masks_nothing, softmax_scale);
  if (q.is_cpu()) return FlashMaskForwardCPU(in);
#ifdef PADDLE_WITH_CUDA
  if (q.is_gpu()) return FlashMaskForwardGPU(in);
#endif
  ThrowUnsupportedPlace(q);
}

std::vector<paddle::Tensor> FlashMaskBackward(
    const paddle::Tensor& q, const paddle::Tensor& k, const paddle::Tensor& v,
    const paddle::Tensor& startend_row_indices, const paddle::Tensor& out,
    const paddle::Tensor& softmax_lse, const paddle::Tensor& dout,
    const paddle::optional<paddle::Tensor>& block_mask, bool causal, float softmax_scale,
    bool deterministic, bool masks_nothing) {
  const FlashMaskInputs in =
      ContiguousInputs(q, k, v, startend_row_indices, block_mask, causal, masks_nothing, softmax_scale);
  CheckBackwardInputs(q, out, softmax_lse, dout);
  const FlashMaskGradInputs g{Contiguous(out), Contiguous(softmax_lse), Contiguous(dout)};
  if (q.is_cpu()) return FlashMaskBackwardCPU(in, g);
#ifdef PADDLE_WITH_CUDA
  if (q.is_gpu()) return FlashMaskBackwardGPU(in, g, deterministic);
#endif
  ThrowUnsupportedPlace(q);
}

std::vector<std::vector<int64_t>> FlashMaskInferShape(
    const std::vector<int64_t>& q_shape, const std::vector<int64_t>& /*k_shape*/,
    const std::vector<int64_t>& /*v_shape*/,
    const std::vector<int64_t>& /*startend_row_indices_shape*/,
    const paddle::optional<std::vector<int64_t>>& /*block_mask_shape*/) {
  PD_CHECK(q_shape.size() == 4, "flashmask_attention_op: `q` must be 4-D [batch, seqlen_q, ",
           "num_heads, head_dim], got shape ", ShapeStr(q_shape));
  return {q_shape, LseShape(q_shape)};
}

std::vector<paddle::DataType> FlashMaskInferDtype(
    const paddle::DataType& q_dtype, const paddle::DataType& /*k_dtype*/,
    const paddle::DataType& /*v_dtype*/, const paddle::DataType& /*startend_row_indices_dtype*/,
    const paddle::optional<paddle::DataType>& /*block_mask_dtype*/) {
  return {q_dtype, paddle::DataType::FLOAT32};
}

}  // namespace

PD_BUILD_OP(flashmask_attention_op)
    .Inputs({"q", "k", "v", "startend_row_indices", paddle::Optional("block_mask")})
    .Outputs({"out", "softmax_lse"})
    .Attrs({"causal: bool", "softmax_scale: float", "deterministic: bool", "masks_nothing: bool"})
    .SetKernelFn(PD_KERNEL(FlashMaskForward))
    .SetInferShapeFn(PD_INFER_SHAPE(FlashMaskInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(FlashMaskInferDtype));

PD_BUILD_GRAD_OP(flashmask_attention_op)
    .Inputs({"q", "k", "v", "startend_row_indices", "out", "softmax_lse", paddle::Grad("out"),
             paddle::Optional("block_mask")})
    .Outputs({paddle::Grad("q"), paddle::Grad("k"), paddle::Grad("v")})
    .Attrs({"causal: bool", "softmax_scale: float", "deterministic: bool", "masks_nothing: bool"})
    .SetKernelFn(PD_KERNEL(FlashMaskBackward));
