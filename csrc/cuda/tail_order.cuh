// The persistent Hopper kernels' items at the call's tail: the long ones moved to the front.
//
// The Hopper forward and backward take their work items from a global counter in a fixed
// order: heads in order (the CTAs in flight share a head's K/V or Q/dO in L2), inside a head
// the forward's long query blocks first and the backward's key blocks in order. So the last
// items taken are the last heads'. Where one of them is much longer than the work left after
// it spread over the SMs (global_sliding_window's global rows and columns: every tile of a
// head in one item, 2-4x the SMs' share of a head's work at 8K, 8-13x at 32K), it starts
// when the other SMs are about to run out of items and they idle until it ends (0.4-0.6% of
// that mask's calls at 8K, 1.7-2.6% at 32K by tools/schedule_sim.py; measured: the forward
// +2.1% at 32K, the backward level; perf-notes v81).
//
// tail_order_kernel looks at the last kTailWindow items and moves an item to the front of
// the order where both hold (moved_to_front):
//  - its length times the SMs exceeds the work after it: it would outlast that work;
//  - it is at least kTailLongFactor times the mean length from it to the end, itself included:
//    items of one length (the full mask's, whose last wave no order shortens) keep their order.
//    So the very last item never moves (it is its own mean), nor the one before it unless the
//    last is much shorter. The forward's heads end on their shortest blocks; a backward whose
//    last key block is a head's longest item keeps it last.
// The moved items run first, in their order; every other item keeps its place relative to
// the rest. The kernels read the order through TailOrder::item. The lengths are tiles
// visited (the forward's from its rank keys, the backward's from bwd_item_lengths_kernel).
#pragma once

#include <cub/block/block_scan.cuh>

namespace flashmask {
namespace cuda {

constexpr int kTailWindow = 4096;  // the last items that may move
constexpr int kTailOrderThreads = 1024;
constexpr int kTailItemsPerThread = kTailWindow / kTailOrderThreads;
static_assert(kTailItemsPerThread * kTailOrderThreads == kTailWindow && kTailItemsPerThread <= 32,
              "a thread's items are one bit each of a 32-bit word");
constexpr int kTailLongFactor = 2;
// The order in the workspace: the window's first item, the number moved, then the window's
// items in their new order (the moved ones first).
constexpr int kTailStateInts = 2;
constexpr int kTailOrderInts = kTailStateInts + kTailWindow;

// How many of `items` the order looks at: the last ones, from items - tail_window(items).
__host__ __device__ inline int tail_window(int items) { return items < kTailWindow ? items : kTailWindow; }

__host__ __device__ inline bool moved_to_front(long long length, long long after, int items_after, int sms) {
  return length * sms > after && length * (items_after - 1) >= kTailLongFactor * after;
}

// The item the k-th take of the work counter runs (k < items).
__host__ __device__ inline int tail_ordered_item(const int* order, int k) {
  const int begin = order[0], moved = order[1];
  if (k < moved) return order[kTailStateInts + k];
  if (k < moved + begin) return k - moved;
  return order[kTailStateInts + k - begin];
}

// The kernels' view of the order in the workspace (kTailOrderInts ints), which
// tail_order_kernel writes before they run.
struct TailOrder {
  int* order;
  __device__ __forceinline__ int item(int k) const { return tail_ordered_item(order, k); }
};

// One CTA of kTailOrderThreads threads: the order of `items` items (TailOrder), length(w)
// the tiles item w visits, `sms` the persistent grid. Thread t takes window chunk
// kTailOrderThreads - 1 - t, so that an exclusive scan over the threads sums the chunks after
// each thread's.
template <typename Length>
__global__ void __launch_bounds__(kTailOrderThreads) tail_order_kernel(Length length, int items, int sms, int* order) {
  using Scan = cub::BlockScan<long long, kTailOrderThreads>;
  __shared__ typename Scan::TempStorage scan;
  __shared__ int lengths[kTailWindow];
  const int window = tail_window(items), begin = items - window;
  for (int i = threadIdx.x; i < window; i += kTailOrderThreads) lengths[i] = length(begin + i);
  __syncthreads();
  const int chunk = kTailOrderThreads - 1 - static_cast<int>(threadIdx.x);
  const int first = min(window, chunk * kTailItemsPerThread), last = min(window, first + kTailItemsPerThread);
  long long work = 0, after;
  for (int i = first; i < last; ++i) work += lengths[i];
  Scan(scan).ExclusiveSum(work, after);
  unsigned moved_bits = 0;
  long long moved = 0;
  for (int i = last - 1; i >= first; --i) {
    if (moved_to_front(lengths[i], after, window - 1 - i, sms)) moved_bits |= 1u << (i - first), ++moved;
    after += lengths[i];
  }
  __syncthreads();  // the scan's storage is reused
  long long moved_later, moved_total;
  Scan(scan).ExclusiveSum(moved, moved_later, moved_total);
  int front = static_cast<int>(moved_total - moved_later - moved);  // moved items before this chunk
  int rest = static_cast<int>(moved_total) + first - front;          // its first unmoved item's place
  for (int i = first; i < last; ++i) order[kTailStateInts + ((moved_bits >> (i - first)) & 1u ? front++ : rest++)] = begin + i;
  if (threadIdx.x == 0) order[0] = begin, order[1] = static_cast<int>(moved_total);
}

// Lengths from an array of the window's (the last kTailWindow of `items`).
struct WindowLengths {
  const int* lengths;
  int items;
  __device__ int operator()(int w) const { return lengths[w - (items - tail_window(items))]; }
};

template <typename Length>
void launch_tail_order(const Length& length, int items, int sms, int* order, cudaStream_t stream) {
  tail_order_kernel<Length><<<1, kTailOrderThreads, 0, stream>>>(length, items, sms, order);
}

}  // namespace cuda
}  // namespace flashmask
