// The CPU kernel's instruction-set variants (see isa.h): each kernels_*.cc
// compiles forward_impl.h and backward_impl.h for its ISA and exports these.
#pragma once

#include "flashmask/params.h"

// Per-ISA translation units need GCC's `#pragma GCC target` (Clang would need
// `#pragma clang attribute`); elsewhere only the generic variant is built.
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__)
#define FLASHMASK_HAVE_X86_KERNELS 1
#else
#define FLASHMASK_HAVE_X86_KERNELS 0
#endif

namespace flashmask {
namespace cpu {

void forward_generic(const FwdParams& params);
void backward_generic(const BwdParams& params);

#if FLASHMASK_HAVE_X86_KERNELS
void forward_avx2(const FwdParams& params);
void backward_avx2(const BwdParams& params);
// bf16_dot: bf16 inputs multiplied in bf16 (AVX512-BF16); else in fp32.
void forward_avx512(const FwdParams& params, bool bf16_dot);
void backward_avx512(const BwdParams& params, bool bf16_dot);
#endif

}  // namespace cpu
}  // namespace flashmask
