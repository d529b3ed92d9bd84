// Compares the CPU kernel's ISA variants on one machine without Paddle:
// forward and backward on random bf16 inputs (several masks, odd sizes,
// GQA) under FLASHMASK_CPU_ISA=<reference> and =<candidate>; prints the
// largest difference relative to each output's scale and the time of each.
// Used to check the AMX-BF16 path on a CPU that has it (the CI machine has
// not; there the Python tests cover the other variants):
//
//   g++ -O2 -fopenmp -std=c++17 -Icsrc/include -Icsrc csrc/cpu/*.cc \
//       tests/cpu_isa_compare.cc -o /tmp/cpu_isa_compare
//   /tmp/cpu_isa_compare avx512_bf16 amx_bf16      # exit status 1 if out of tolerance
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/convert.h"
#include "cpu/flashmask_cpu.h"

namespace {

using flashmask::cpu::BFloat16;
using flashmask::cpu::from_float;
using flashmask::cpu::to_float;

constexpr double kTolerance = 1.5e-2;  // as LOW_PRECISION_TOL["bfloat16"] in test_cpu_kernel.py

struct Case {
  const char* name;
  int seqlen, heads, heads_k, head_dim;
  bool causal;
  int num_bounds;
  int doc;  // document length of the bounds (0: no document boundaries)
};

std::vector<BFloat16> random_bf16(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<BFloat16> x(n);
  for (auto& v : x) v = from_float<BFloat16>(normal(rng));
  return x;
}

// Bounds of a (causal) document mask: column j's rows from the end of its
// document on are masked (LTS); non-causal adds UTE = start of the document.
std::vector<int32_t> bounds(const Case& c) {
  std::vector<int32_t> idx(static_cast<size_t>(c.seqlen) * c.num_bounds);
  for (int j = 0; j < c.seqlen; ++j) {
    const int start = c.doc ? j / c.doc * c.doc : 0;
    const int end = c.doc ? std::min(c.seqlen, start + c.doc) : c.seqlen;
    idx[j * c.num_bounds] = end;
    if (!c.causal) idx[j * c.num_bounds + 1] = start;
  }
  return idx;
}

struct Outputs {
  std::vector<BFloat16> out, dq, dk, dv;
  std::vector<float> lse;
  double seconds;
};

Outputs run(const Case& c, const char* isa, const std::vector<BFloat16>& q,
            const std::vector<BFloat16>& k, const std::vector<BFloat16>& v,
            const std::vector<BFloat16>& dout, const std::vector<int32_t>& idx) {
  setenv("FLASHMASK_CPU_ISA", isa, 1);
  const flashmask::AttentionShape shape{1, c.seqlen, c.seqlen, c.heads, c.heads_k, c.head_dim};
  const flashmask::MaskParams mask{idx.data(), c.num_bounds, 1, c.causal, nullptr};
  const flashmask::TensorStrides sq{int64_t{c.seqlen} * c.heads * c.head_dim,
                                    int64_t{c.heads} * c.head_dim, c.head_dim};
  const flashmask::TensorStrides sk{int64_t{c.seqlen} * c.heads_k * c.head_dim,
                                    int64_t{c.heads_k} * c.head_dim, c.head_dim};
  Outputs o;
  o.out.resize(q.size());
  o.dq.resize(q.size());
  o.dk.resize(k.size());
  o.dv.resize(v.size());
  o.lse.resize(static_cast<size_t>(c.heads) * c.seqlen);
  const float scale = 1.f / std::sqrt(static_cast<float>(c.head_dim));
  const auto start = std::chrono::steady_clock::now();
  flashmask::FwdParams f{shape, mask, flashmask::DType::kBFloat16, scale,
                         q.data(), k.data(), v.data(), o.out.data(), o.lse.data(),
                         sq, sk, sk, sq};
  flashmask::flashmask_fwd_cpu(f);
  flashmask::BwdParams b{shape, mask, flashmask::DType::kBFloat16, scale, true,
                         q.data(), k.data(), v.data(), o.out.data(), dout.data(), o.lse.data(),
                         o.dq.data(), o.dk.data(), o.dv.data(),
                         sq, sk, sk, sq, sq, sq, sk, sk};
  flashmask::flashmask_bwd_cpu(b);
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return o;
}

template <typename T>
double rel_diff(const std::vector<T>& a, const std::vector<T>& b) {
  double scale = 1.0, diff = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = to_float(a[i]), y = to_float(b[i]);
    if (std::isinf(x) && x == y) continue;  // lse of fully masked rows
    scale = std::max(scale, std::fabs(y));
    diff = std::max(diff, std::fabs(x - y));
  }
  return diff / scale;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s REFERENCE_ISA CANDIDATE_ISA\n", argv[0]);
    return 2;
  }
  const Case cases[] = {
      {"causal 1000 D=64 GQA", 1000, 4, 2, 64, true, 1, 0},
      {"causal documents 777 D=128", 777, 2, 2, 128, true, 1, 100},
      {"documents 515 D=40", 515, 2, 1, 40, false, 2, 129},
      {"causal 4096 D=64 (timing)", 4096, 8, 8, 64, true, 1, 0},
  };
  std::mt19937 rng(1234);
  bool ok = true;
  for (const Case& c : cases) {
    const size_t nq = static_cast<size_t>(c.seqlen) * c.heads * c.head_dim;
    const size_t nk = static_cast<size_t>(c.seqlen) * c.heads_k * c.head_dim;
    const auto q = random_bf16(nq, rng), k = random_bf16(nk, rng), v = random_bf16(nk, rng);
    const auto dout = random_bf16(nq, rng);
    const auto idx = bounds(c);
    const Outputs ref = run(c, argv[1], q, k, v, dout, idx);
    const Outputs got = run(c, argv[2], q, k, v, dout, idx);
    const double worst = std::max({rel_diff(got.out, ref.out), rel_diff(got.lse, ref.lse),
                                   rel_diff(got.dq, ref.dq), rel_diff(got.dk, ref.dk),
                                   rel_diff(got.dv, ref.dv)});
    ok = ok && worst <= kTolerance;
    std::printf("%-28s max rel diff %.2e  %s %.3f s  %s %.3f s\n", c.name, worst, argv[1],
                ref.seconds, argv[2], got.seconds);
  }
  std::printf("%s\n", ok ? "OK" : "OUT OF TOLERANCE");
  return ok ? 0 : 1;
}
