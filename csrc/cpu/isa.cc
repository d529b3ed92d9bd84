#include "isa.h"

#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "kernels.h"

namespace flashmask {
namespace cpu {
namespace {

// Linux hands out the AMX tile data state (8 KiB of XSAVE area) only to
// processes that ask (arch_prctl ARCH_REQ_XCOMP_PERM, Linux 5.16+); without
// it the first tile instruction faults.
bool os_grants_amx_tiles() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr int kArchReqXcompPerm = 0x1023;
  constexpr int kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

Isa best_supported_isa() {
#if FLASHMASK_HAVE_X86_KERNELS
  // libgcc's checks include the OS side (XGETBV: the OS saves the ymm/zmm
  // state), so a kernel booted without AVX-512 support falls back correctly.
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const bool avx512_bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  if (avx512_bf16 && __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16")) {
    return Isa::kAmxBf16;  // the OS's part is asked for on first use (selected_isa)
  }
  if (avx512_bf16) return Isa::kAvx512Bf16;
  if (avx512) return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kGeneric;
}

// Every variant the CPU supports may run: the AMX one was checked against the
// AVX512-BF16 one on a Xeon with AMX-BF16 (tests/cpu_isa_compare.cc, 2026-11-30:
// max relative difference 1.4e-3, tolerance 1.5e-2; causal 4K D=64 2.4x faster;
// docs/cpu-kernel.md). FLASHMASK_CPU_ISA lowers the cap.
constexpr Isa kDefaultCap = Isa::kAmxBf16;

Isa min_isa(Isa a, Isa b) { return a < b ? a : b; }

// AMX needs the OS's grant as well; asked for once, only when AMX would run
// (the grant makes every signal frame of the process 8 KiB larger).
Isa granted(Isa isa) {
  if (isa != Isa::kAmxBf16) return isa;
  static const bool amx_granted = os_grants_amx_tiles();
  return amx_granted ? isa : Isa::kAvx512Bf16;
}

// vdpbf16ps does two multiply-adds per lane, but not every core runs it at
// the FMA's rate: on Zen 5 the bf16 micro-kernel does 1.8x the fp32 one's
// multiply-adds, on an Emerald Rapids Xeon the instruction does 0.49x the
// FMA's (bf16_dot_speedup; causal 4K bf16 fwd+bwd there 128 GFLOP/s in bf16
// against 182 in fp32, docs/cpu-kernel.md). Its operands also cost packing, so
// by default it runs only where it is clearly faster; otherwise bf16 inputs
// are multiplied in fp32.
constexpr double kMinBf16DotSpeedup = 1.25;

Isa measured(Isa isa) {
#if FLASHMASK_HAVE_X86_KERNELS
  if (isa != Isa::kAvx512Bf16) return isa;
  static const bool dot_pays = bf16_dot_speedup() >= kMinBf16DotSpeedup;
  return dot_pays ? isa : Isa::kAvx512;
#else
  return isa;
#endif
}

}  // namespace

Isa selected_isa() {
  static const Isa best = best_supported_isa();
  const char* cap = std::getenv("FLASHMASK_CPU_ISA");
  if (cap != nullptr) {
    const struct {
      const char* name;
      Isa isa;
    } names[] = {{"generic", Isa::kGeneric},
                 {"avx2", Isa::kAvx2},
                 {"avx512", Isa::kAvx512},
                 {"avx512_bf16", Isa::kAvx512Bf16},
                 {"amx_bf16", Isa::kAmxBf16}};
    for (const auto& n : names) {
      if (std::strcmp(cap, n.name) == 0) return granted(min_isa(n.isa, best));
    }
  }
  // No cap, or a name it does not know (which changes nothing): the default choice.
  return measured(granted(min_isa(best, kDefaultCap)));
}

}  // namespace cpu
}  // namespace flashmask
