// Spreads independent work items over the OpenMP threads.
#pragma once

#include <cstdint>

namespace flashmask {
namespace cpu {

// Calls body(scratch, i) for every i in [0, n). Each thread builds its own
// scratch once (so tile buffers are allocated per thread, not per item).
// Items are handed out one at a time because their cost varies widely with
// the mask (a skipped row of tiles costs nothing, a dense one the most).
// Without OpenMP the pragmas are ignored and this is a serial loop.
template <typename MakeScratch, typename Body>
void parallel_for(int64_t n, const MakeScratch& make_scratch, const Body& body) {
#pragma omp parallel
  {
    auto scratch = make_scratch();
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) body(scratch, i);
  }
}

}  // namespace cpu
}  // namespace flashmask
