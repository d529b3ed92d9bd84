// Which instruction-set variant of the CPU kernel runs, decided at run time.
//
// The kernel is compiled once per variant (kernels_*.cc, each under its own
// `#pragma GCC target`), so one library runs on any x86-64 and uses the best
// units the CPU and OS enable, whatever -march the build used. The
// environment variable FLASHMASK_CPU_ISA caps the choice (tests use it to run
// every variant the machine has; users to rule a fast path out). Without it,
// bf16 products by vdpbf16ps run only on cores where they are measured to be
// faster than fp32 FMAs (isa.cc); a cap of avx512_bf16 runs them regardless.
#pragma once

namespace flashmask {
namespace cpu {

// Ordered: each level can run everything below it.
enum class Isa {
  kGeneric = 0,     // portable C++ (compiler-vectorised reference loops)
  kAvx2 = 1,        // AVX2 + FMA register-blocked fp32 micro-kernel
  kAvx512 = 2,      // AVX-512 fp32 micro-kernel
  kAvx512Bf16 = 3,  // + bf16 inputs multiplied as bf16 (vdpbf16ps), fp32 accumulation
  kAmxBf16 = 4,     // + those products on AMX tiles (the OS must grant the tile state;
                    // see isa.cc)
};

// min(best variant this CPU/OS/build supports, FLASHMASK_CPU_ISA or, unset,
// the default cap), read on every call so a test can switch variants.
Isa selected_isa();

}  // namespace cpu
}  // namespace flashmask
