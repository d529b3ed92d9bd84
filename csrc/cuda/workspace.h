// Carving one caller-allocated workspace into 256-byte aligned regions.
#pragma once

#include <cstddef>

namespace flashmask {
namespace cuda {

inline size_t align256(size_t x) { return (x + 255) & ~static_cast<size_t>(255); }

// Hands out consecutive aligned regions of `base`. With base == nullptr it only
// counts, so the workspace size and the pointers come from the same code.
class WorkspaceCarver {
 public:
  explicit WorkspaceCarver(void* base) : base_(static_cast<char*>(base)) {}
  void* take(size_t bytes) {
    char* p = base_ == nullptr ? nullptr : base_ + used_;
    used_ += align256(bytes);
    return p;
  }
  size_t used() const { return used_; }

 private:
  char* base_;
  size_t used_ = 0;
};

}  // namespace cuda
}  // namespace flashmask
