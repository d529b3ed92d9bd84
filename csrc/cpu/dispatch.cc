// The public entry points: pick the ISA variant for this call.
#include "flashmask_cpu.h"
#include "isa.h"
#include "kernels.h"

namespace flashmask {

void flashmask_fwd_cpu(const FwdParams& params) {
  switch (cpu::selected_isa()) {
#if FLASHMASK_HAVE_X86_KERNELS
    case cpu::Isa::kAmxBf16:
      return cpu::forward_avx512(params, cpu::Bf16Products::kAmx);
    case cpu::Isa::kAvx512Bf16:
      return cpu::forward_avx512(params, cpu::Bf16Products::kAvx512);
    case cpu::Isa::kAvx512:
      return cpu::forward_avx512(params, cpu::Bf16Products::kFp32);
    case cpu::Isa::kAvx2:
      return cpu::forward_avx2(params);
#endif
    default:
      return cpu::forward_generic(params);
  }
}

void flashmask_bwd_cpu(const BwdParams& params) {
  switch (cpu::selected_isa()) {
#if FLASHMASK_HAVE_X86_KERNELS
    case cpu::Isa::kAmxBf16:
      return cpu::backward_avx512(params, cpu::Bf16Products::kAmx);
    case cpu::Isa::kAvx512Bf16:
      return cpu::backward_avx512(params, cpu::Bf16Products::kAvx512);
    case cpu::Isa::kAvx512:
      return cpu::backward_avx512(params, cpu::Bf16Products::kFp32);
    case cpu::Isa::kAvx2:
      return cpu::backward_avx2(params);
#endif
    default:
      return cpu::backward_generic(params);
  }
}

}  // namespace flashmask
