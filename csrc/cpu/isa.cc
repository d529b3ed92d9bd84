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
  if (avx512_bf16 && __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") &&
      os_grants_amx_tiles()) {
    return Isa::kAmxBf16;
  }
  if (avx512_bf16) return Isa::kAvx512Bf16;
  if (avx512) return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kGeneric;
}

}  // namespace

Isa selected_isa() {
  static const Isa best = best_supported_isa();
  const char* cap = std::getenv("FLASHMASK_CPU_ISA");
  if (cap == nullptr) return best;
  const struct {
    const char* name;
    Isa isa;
  } names[] = {{"generic", Isa::kGeneric},
               {"avx2", Isa::kAvx2},
               {"avx512", Isa::kAvx512},
               {"avx512_bf16", Isa::kAvx512Bf16},
               {"amx_bf16", Isa::kAmxBf16}};
  for (const auto& n : names) {
    if (std::strcmp(cap, n.name) == 0) return n.isa < best ? n.isa : best;
  }
  return best;  // unknown names change nothing
}

}  // namespace cpu
}  // namespace flashmask
