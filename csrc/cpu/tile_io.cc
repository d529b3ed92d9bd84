#include "tile_io.h"

#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <unistd.h>
#endif

namespace flashmask {
namespace cpu {
namespace {

// The last-level cache's bytes (glibc's sysconf: the L3's); 0 where unknown, and then
// every output of kStreamedOutputBytes or more streams. No L2 fallback: kWorkingSetTensors
// outputs of kStreamedOutputBytes (48 MiB) exceed any L2, so it would stream the same.
int64_t last_level_cache_bytes() {
#if defined(__linux__) && defined(_SC_LEVEL3_CACHE_SIZE)
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (l3 > 0) return l3;
#endif
  return 0;
}

}  // namespace

bool streaming_stores_pay(int64_t output_bytes) {
  const char* forced = std::getenv("FLASHMASK_CPU_STREAMING_STORES");
  if (forced != nullptr && (std::strcmp(forced, "0") == 0 || std::strcmp(forced, "1") == 0)) {
    return forced[0] == '1';
  }
  static const int64_t cache = last_level_cache_bytes();
  return kWorkingSetTensors * output_bytes > cache;
}

}  // namespace cpu
}  // namespace flashmask
