// The CPU kernel's instruction-set variants (see isa.h): each kernels_*.cc
// compiles forward_impl.h and backward_impl.h for its ISA and exports run_<isa>,
// the forward for FwdParams and the backward for BwdParams.
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

void run_generic(const FwdParams& params);
void run_generic(const BwdParams& params);

#if FLASHMASK_HAVE_X86_KERNELS
void run_avx2(const FwdParams& params);
void run_avx2(const BwdParams& params);
// How bf16 inputs are multiplied: in fp32, in bf16 with vdpbf16ps
// (AVX512-BF16), or in bf16 on AMX tiles (AMX-BF16).
enum class Bf16Products { kFp32, kAvx512, kAmx };
void run_avx512(const FwdParams& params, Bf16Products bf16);
void run_avx512(const BwdParams& params, Bf16Products bf16);
// Multiply-adds per second of vdpbf16ps over those of vfmadd231ps on this
// core, measured (~50 us). Call only where the CPU has AVX512-BF16.
double bf16_dot_speedup();
#endif

}  // namespace cpu
}  // namespace flashmask
