#include "workspace.h"

#include <cstdint>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace flashmask {
namespace cpu {
namespace {

struct CachedBlock {
  char* data;
  size_t capacity;
};

std::mutex cache_mutex;
std::vector<CachedBlock>& cache() {
  static auto* blocks = new std::vector<CachedBlock>();  // never destroyed: no exit-order issues
  return *blocks;
}

}  // namespace

RawWorkspace::RawWorkspace(size_t bytes) {
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto& blocks = cache();
    // The smallest cached block that fits.
    size_t best = blocks.size();
    for (size_t i = 0; i < blocks.size(); ++i) {
      if (blocks[i].capacity >= bytes &&
          (best == blocks.size() || blocks[i].capacity < blocks[best].capacity)) {
        best = i;
      }
    }
    if (best != blocks.size()) {
      block_.reset(blocks[best].data);
      capacity_ = blocks[best].capacity;
      blocks.erase(blocks.begin() + best);
      return;
    }
  }
  block_.reset(static_cast<char*>(::operator new[](bytes, std::align_val_t{64})));
  capacity_ = bytes;
  advise_huge_pages(block_.get(), bytes);  // fresh memory, as the op's outputs
}

RawWorkspace::~RawWorkspace() {
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto& blocks = cache();
  if (blocks.size() == static_cast<size_t>(kWorkspaceCacheSize)) {
    // Full: give back the smallest block (this one if it is smaller).
    size_t smallest = 0;
    for (size_t i = 1; i < blocks.size(); ++i)
      if (blocks[i].capacity < blocks[smallest].capacity) smallest = i;
    if (blocks[smallest].capacity >= capacity_) return;  // block_ frees this one
    Free()(blocks[smallest].data);
    blocks.erase(blocks.begin() + smallest);
  }
  blocks.push_back({block_.release(), capacity_});
}

void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHugePage - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

}  // namespace cpu
}  // namespace flashmask
