// Large per-call buffers (packed operands, dq partial sums) taken from a
// small process-wide cache instead of fresh allocations: glibc serves blocks
// of this size with mmap, so every call would otherwise fault in and zero
// tens of MB of new pages (5-6% of a 4K fwd+bwd, measured with perf: 
// clear_page_erms and exc_page_fault). The cache holds at most
// kWorkspaceCacheSize blocks, so the memory kept is about one call's worth.
#pragma once

#include <cstddef>
#include <memory>

namespace flashmask {
namespace cpu {

constexpr int kWorkspaceCacheSize = 8;

class RawWorkspace {
 public:
  explicit RawWorkspace(size_t bytes);
  ~RawWorkspace();
  RawWorkspace(const RawWorkspace&) = delete;
  RawWorkspace& operator=(const RawWorkspace&) = delete;
  void* data() const { return block_.get(); }

 private:
  struct Free {
    void operator()(char* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  std::unique_ptr<char[], Free> block_;
  size_t capacity_ = 0;
};

// Uninitialised storage for count trivially constructible T.
template <typename T>
class Workspace {
 public:
  explicit Workspace(size_t count) : raw_(count * sizeof(T)) {}
  T* get() const { return static_cast<T*>(raw_.data()); }

 private:
  RawWorkspace raw_;
};

// Asks the OS to back [data, data + bytes) with huge pages when they are
// first touched (Linux transparent huge pages in "madvise" mode; elsewhere a
// no-op). For the op's outputs, which the framework allocates fresh for
// every call: 4 KiB pages cost one fault and page clearing each on first
// write (20 ms of a 60 ms fixed cost at N=8K, perf), 2 MiB pages 1/512 of the
// faults. Only the whole huge pages inside the range are advised.
void advise_huge_pages(void* data, size_t bytes);

}  // namespace cpu
}  // namespace flashmask
