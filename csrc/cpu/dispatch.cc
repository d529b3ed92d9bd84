// The public entry points: pick the ISA variant for this call.
#include <cstddef>

#include "flashmask_cpu.h"
#include "isa.h"
#include "kernels.h"
#include "workspace.h"

namespace flashmask {
namespace {

size_t element_size(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }

// Bytes spanned by a [batch, seqlen, heads, head_dim] tensor with these strides.
size_t span_bytes(const TensorStrides& s, int batch, int seqlen, int heads, int head_dim,
                  DType dtype) {
  const int64_t last = (batch - 1) * s.batch + (seqlen - 1) * s.row + (heads - 1) * s.head +
                       head_dim;
  return batch > 0 && seqlen > 0 ? static_cast<size_t>(last) * element_size(dtype) : 0;
}

// One pass (the forward for FwdParams, the backward for BwdParams) on the
// kernels of the instruction set chosen for this process (isa.h).
template <typename Params>
void run_selected(const Params& params) {
  switch (cpu::selected_isa()) {
#if FLASHMASK_HAVE_X86_KERNELS
    case cpu::Isa::kAmxBf16:
      return cpu::run_avx512(params, cpu::Bf16Products::kAmx);
    case cpu::Isa::kAvx512Bf16:
      return cpu::run_avx512(params, cpu::Bf16Products::kAvx512);
    case cpu::Isa::kAvx512:
      return cpu::run_avx512(params, cpu::Bf16Products::kFp32);
    case cpu::Isa::kAvx2:
      return cpu::run_avx2(params);
#endif
    default:
      return cpu::run_generic(params);
  }
}

}  // namespace

void flashmask_fwd_cpu(const FwdParams& params) {
  const AttentionShape& s = params.shape;
  cpu::advise_huge_pages(params.out, span_bytes(params.out_strides, s.batch, s.seqlen_q,
                                                s.num_heads, s.head_dim, params.dtype));
  run_selected(params);
}

void flashmask_bwd_cpu(const BwdParams& params) {
  const AttentionShape& s = params.shape;
  cpu::advise_huge_pages(params.dq, span_bytes(params.dq_strides, s.batch, s.seqlen_q,
                                               s.num_heads, s.head_dim, params.dtype));
  cpu::advise_huge_pages(params.dk, span_bytes(params.dk_strides, s.batch, s.seqlen_k,
                                               s.num_heads_k, s.head_dim, params.dtype));
  cpu::advise_huge_pages(params.dv, span_bytes(params.dv_strides, s.batch, s.seqlen_k,
                                               s.num_heads_k, s.head_dim, params.dtype));
  run_selected(params);
}

}  // namespace flashmask
