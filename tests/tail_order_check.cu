// The persistent kernels' tail order (csrc/cuda/tail_order.cuh). Host part (run by
// .ci/check_cuda_build.sh): an order built by the definition (each item of the last
// kTailWindow moved where moved_to_front says of its length, the work after it and the items
// after it; the moved ones first, each group in its order) is read back by tail_ordered_item
// as a permutation of every item, and the rule moves what it is meant to: nothing where the
// items have one length, the long items of the last heads on a global_sliding_window-like
// schedule, nothing where every long item has enough work after it. Device part (where a GPU
// is present; tests/gpu/test_flashmask_cuda.py::test_tail_order_kernel runs it on the H200):
// tail_order_kernel writes exactly that order, on those schedules and on random ones of every
// size up to past the window.
#include <cstdio>
#include <random>
#include <vector>

#include "tail_order.cuh"

using namespace flashmask::cuda;

namespace {

constexpr int kSms = 132;

// The order by the definition, in the layout tail_order_kernel writes.
std::vector<int> expected_order(const std::vector<int>& len) {
  const int items = static_cast<int>(len.size()), window = tail_window(items);
  const int begin = items - window;
  std::vector<int> moved, kept;
  std::vector<bool> is_moved(items, false);
  long long after = 0;
  for (int i = items - 1; i >= begin; --i) {
    is_moved[i] = moved_to_front(len[i], after, items - 1 - i, kSms);
    after += len[i];
  }
  for (int i = begin; i < items; ++i) (is_moved[i] ? moved : kept).push_back(i);
  std::vector<int> order{begin, static_cast<int>(moved.size())};
  order.insert(order.end(), moved.begin(), moved.end());
  order.insert(order.end(), kept.begin(), kept.end());
  order.resize(kTailOrderInts, -1);
  return order;
}

int check_permutation(const std::vector<int>& order, int items, const char* what) {
  std::vector<int> seen(items, 0);
  for (int k = 0; k < items; ++k) {
    const int item = tail_ordered_item(order.data(), k);
    if (item < 0 || item >= items || seen[item]++) {
      std::printf("FAIL %s: take %d runs item %d, out of range or twice\n", what, k, item);
      return 1;
    }
  }
  return 0;
}

// Heads of `per_head` items: the first `long_items` of each head `long_len` tiles, the rest `len`.
std::vector<int> heads(int count, int per_head, int long_items, int long_len, int len) {
  std::vector<int> v;
  for (int h = 0; h < count; ++h)
    for (int i = 0; i < per_head; ++i) v.push_back(i < long_items ? long_len : len);
  return v;
}

struct Case {
  const char* name;
  std::vector<int> lengths;
  int min_moved, max_moved;
};

std::vector<Case> cases() {
  std::vector<Case> c;
  c.push_back({"one length", std::vector<int>(65536, 64), 0, 0});
  // global_sliding_window's backward at 32K, D=64: 256 key blocks a head, the first two
  // every query tile (256), the others ~20; about 6 heads' worth of work after the last
  // long items is needed, so the long items of the last 6-7 heads move (2 each).
  c.push_back({"global rows, 32K", heads(256, 256, 2, 256, 20), 10, 16});
  // A long item with more work after it than it takes times the SMs.
  std::vector<int> early(5001, 10);
  early[0] = 300;
  c.push_back({"long item early enough", early, 0, 0});
  c.push_back({"fewer items than SMs", heads(1, 100, 2, 50, 5), 2, 2});
  c.push_back({"zero lengths", std::vector<int>(5000, 0), 0, 0});
  return c;
}

std::vector<int> random_lengths(std::mt19937& rng) {
  std::uniform_int_distribution<int> size(1, 3 * kTailWindow), pick(0, 9), len(0, 400);
  std::vector<int> v(size(rng));
  for (int& x : v) x = pick(rng) == 0 ? len(rng) : len(rng) / 20;
  return v;
}

int host_checks() {
  int bad = 0;
  for (const Case& c : cases()) {
    const std::vector<int> order = expected_order(c.lengths);
    bad += check_permutation(order, static_cast<int>(c.lengths.size()), c.name);
    if (order[1] < c.min_moved || order[1] > c.max_moved) {
      std::printf("FAIL %s: %d items moved, expected %d to %d\n", c.name, order[1], c.min_moved, c.max_moved);
      ++bad;
    }
  }
  std::mt19937 rng(7);
  for (int r = 0; r < 50; ++r) {
    const std::vector<int> v = random_lengths(rng);
    bad += check_permutation(expected_order(v), static_cast<int>(v.size()), "random");
  }
  return bad;
}

struct ArrayLength {
  const int* lengths;
  __device__ int operator()(int w) const { return lengths[w]; }
};

int device_check(const std::vector<int>& len, const char* what) {
  const int items = static_cast<int>(len.size());
  int *d_len = nullptr, *d_order = nullptr;
  cudaMalloc(&d_len, items * sizeof(int));
  cudaMalloc(&d_order, kTailOrderInts * sizeof(int));
  cudaMemcpy(d_len, len.data(), items * sizeof(int), cudaMemcpyHostToDevice);
  cudaMemset(d_order, 0xff, kTailOrderInts * sizeof(int));  // -1: what the kernel does not write
  launch_tail_order(ArrayLength{d_len}, items, kSms, d_order, nullptr);
  std::vector<int> got(kTailOrderInts);
  const cudaError_t e = cudaMemcpy(got.data(), d_order, kTailOrderInts * sizeof(int), cudaMemcpyDeviceToHost);
  cudaFree(d_len);
  cudaFree(d_order);
  if (e != cudaSuccess) {
    std::printf("FAIL %s: %s\n", what, cudaGetErrorString(e));
    return 1;
  }
  if (got != expected_order(len)) {
    std::printf("FAIL %s: the kernel's order differs from the definition's (%d items, %d moved, kernel %d)\n", what,
                items, expected_order(len)[1], got[1]);
    return 1;
  }
  return 0;
}

int device_checks() {
  int bad = 0;
  for (const Case& c : cases()) bad += device_check(c.lengths, c.name);
  std::mt19937 rng(11);
  for (int r = 0; r < 200; ++r) bad += device_check(random_lengths(rng), "random");
  return bad;
}

}  // namespace

int main() {
  int bad = host_checks();
  int devices = 0;
  const bool gpu = cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0;
  if (gpu) bad += device_checks();
  std::printf("tail_order_check: %s (%s)\n", bad ? "FAILED" : "ok", gpu ? "host and device" : "host only");
  return bad ? 1 : 0;
}
