#include "tile_io.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#if defined(__linux__)
#include <unistd.h>
#endif

namespace flashmask {
namespace cpu {
namespace {

// Bytes of a sysfs cache size ("32768K"); 0 if it does not parse.
int64_t cache_size_bytes(const std::string& text) {
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (end == text.c_str() || value <= 0) return 0;
  switch (*end) {
    case 'K': return value << 10;
    case 'M': return value << 20;
    case 'G': return value << 30;
    default: return value;
  }
}

// The last-level cache a core shares, in bytes: the size of cpu0's highest cache level in
// sysfs (one instance, what lscpu shows), else glibc's sysconf (the L3's), else 0, and then
// every output of kStreamedOutputBytes or more streams. sysconf alone is not enough: on an
// AMD EPYC guest it reported the host's L3 over all its dies (256 MiB) where the guest's two
// cores share one 32 MiB instance (docs/cpu-kernel.md, "The last-level cache a core shares").
int64_t last_level_cache_bytes() {
#if defined(__linux__)
  int best_level = 0;
  int64_t bytes = 0;
  for (int i = 0;; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream level_file(dir + "level"), size_file(dir + "size");
    int level = 0;
    std::string size;
    if (!(level_file >> level) || !(size_file >> size)) break;
    if (level > best_level) {
      best_level = level;
      bytes = cache_size_bytes(size);
    }
  }
  if (bytes > 0) return bytes;
#if defined(_SC_LEVEL3_CACHE_SIZE)
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (l3 > 0) return l3;
#endif
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
