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

// Runs make() once for a piece of shared work (a tile packed for every item
// that reads it) inside a parallel loop: the first item to need it runs it,
// items needing it meanwhile wait until it is done. *state, 0 before the
// loop, is its flag. Packing on first use, not in a pass of its own before
// the loop, overlaps the packing's memory traffic with the other threads'
// arithmetic and skips what no item reads.
template <typename Make>
void run_once(uint8_t* state, const Make& make) {
  constexpr uint8_t kNotRun = 0, kRunning = 1, kDone = 2;
  if (__atomic_load_n(state, __ATOMIC_ACQUIRE) == kDone) return;
  uint8_t expected = kNotRun;
  if (__atomic_compare_exchange_n(state, &expected, kRunning, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    make();
    __atomic_store_n(state, kDone, __ATOMIC_RELEASE);
    return;
  }
  while (__atomic_load_n(state, __ATOMIC_ACQUIRE) != kDone) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

}  // namespace cpu
}  // namespace flashmask
