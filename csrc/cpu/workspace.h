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

}  // namespace cpu
}  // namespace flashmask
