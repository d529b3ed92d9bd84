// Times the CPU kernel's C entry points (csrc/cpu/flashmask_cpu.h) without Paddle: the
// "kernel-only" numbers of docs/cpu-kernel.md, on any machine with a C++ compiler. Built and
// driven by benchmarks/cpu_kernels.py, which writes the mask files and reads the output.
//
//   cpu_kernel_timing DTYPE SEQLEN HEADS HEAD_DIM ROUNDS MASK_FILE...
//
// DTYPE float32 or bfloat16; B = 1, seqlen_q = seqlen_k, no GQA. A mask file holds three
// int32 (num_mask_heads, num_bounds, causal) and then the bounds, int32 [1, num_mask_heads,
// SEQLEN, num_bounds]. The masks share one set of random normal inputs. Each is warmed up
// (kWarmupCalls calls and kWarmupSeconds, as bench_cpu.py), then every round calls the
// masks in turns (forward, then backward), so that load drifting over the run moves them
// alike. Prints one JSON line per mask: its file and the forward and backward milliseconds
// of every round.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/convert.h"
#include "cpu/flashmask_cpu.h"

namespace {

using flashmask::AttentionShape;
using flashmask::BwdParams;
using flashmask::DType;
using flashmask::FwdParams;
using flashmask::MaskParams;
using flashmask::TensorStrides;
using Clock = std::chrono::steady_clock;

constexpr int kWarmupCalls = 3;
constexpr double kWarmupSeconds = 1.0;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "cpu_kernel_timing: %s\n", what.c_str());
  std::exit(2);
}

int positive(const char* arg, const char* name) {
  char* end = nullptr;
  const long v = std::strtol(arg, &end, 10);
  if (*end != '\0' || v <= 0 || v > INT32_MAX) fail(std::string(name) + " must be a positive integer, got " + arg);
  return static_cast<int>(v);
}

struct Mask {
  std::string file;
  std::vector<int32_t> bounds;
  MaskParams params;
  std::vector<double> fwd_ms, bwd_ms;
};

Mask read_mask(const char* file, int seqlen) {
  Mask m;
  m.file = file;
  FILE* f = std::fopen(file, "rb");
  if (f == nullptr) fail(std::string("cannot open ") + file);
  int32_t header[3];
  if (std::fread(header, sizeof(int32_t), 3, f) != 3) fail(std::string(file) + ": no header");
  m.bounds.resize(static_cast<size_t>(header[0]) * seqlen * header[1]);
  if (std::fread(m.bounds.data(), sizeof(int32_t), m.bounds.size(), f) != m.bounds.size())
    fail(std::string(file) + ": fewer bounds than num_mask_heads x SEQLEN x num_bounds");
  std::fclose(f);
  m.params = MaskParams{m.bounds.data(), header[1], header[0], header[2] != 0, nullptr};
  return m;
}

// One tensor [1, seqlen, heads, head_dim] of random normal values in the given type.
std::vector<char> random_tensor(size_t elements, DType dtype, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  const size_t size = dtype == DType::kFloat32 ? 4 : 2;
  std::vector<char> t(elements * size);
  for (size_t i = 0; i < elements; ++i) {
    const float x = normal(rng);
    if (dtype == DType::kFloat32)
      std::memcpy(t.data() + i * size, &x, size);
    else
      reinterpret_cast<flashmask::cpu::BFloat16*>(t.data())[i] = flashmask::cpu::from_float<flashmask::cpu::BFloat16>(x);
  }
  return t;
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) fail("usage: cpu_kernel_timing DTYPE SEQLEN HEADS HEAD_DIM ROUNDS MASK_FILE...");
  const std::string dtype_name = argv[1];
  if (dtype_name != "float32" && dtype_name != "bfloat16") fail("DTYPE must be float32 or bfloat16, got " + dtype_name);
  const DType dtype = dtype_name == "float32" ? DType::kFloat32 : DType::kBFloat16;
  const int seqlen = positive(argv[2], "SEQLEN"), heads = positive(argv[3], "HEADS");
  const int head_dim = positive(argv[4], "HEAD_DIM"), rounds = positive(argv[5], "ROUNDS");
  std::vector<Mask> masks;
  for (int i = 6; i < argc; ++i) masks.push_back(read_mask(argv[i], seqlen));

  const size_t elements = static_cast<size_t>(seqlen) * heads * head_dim;
  std::mt19937 rng(0);
  const auto q = random_tensor(elements, dtype, rng), k = random_tensor(elements, dtype, rng);
  const auto v = random_tensor(elements, dtype, rng), dout = random_tensor(elements, dtype, rng);
  std::vector<char> out(q.size()), dq(q.size()), dk(q.size()), dv(q.size());
  std::vector<float> lse(static_cast<size_t>(heads) * seqlen);
  const TensorStrides st{static_cast<int64_t>(seqlen) * heads * head_dim, static_cast<int64_t>(heads) * head_dim,
                         head_dim};
  const AttentionShape shape{1, seqlen, seqlen, heads, heads, head_dim};
  const float scale = 1.f / std::sqrt(static_cast<float>(head_dim));

  // One call of each pass; adds their times to the mask's lists when `record`.
  const auto call = [&](Mask& m, bool record) {
    const FwdParams fp{shape, m.params, dtype, scale, q.data(), k.data(), v.data(), out.data(), lse.data(),
                       st, st, st, st};
    const BwdParams bp{shape, m.params, dtype, scale, false, q.data(), k.data(), v.data(), out.data(), dout.data(),
                       lse.data(), dq.data(), dk.data(), dv.data(), st, st, st, st, st, st, st, st};
    auto start = Clock::now();
    flashmask::flashmask_fwd_cpu(fp);
    const double fwd = ms_since(start);
    start = Clock::now();
    flashmask::flashmask_bwd_cpu(bp);
    const double bwd = ms_since(start);
    if (record) {
      m.fwd_ms.push_back(fwd);
      m.bwd_ms.push_back(bwd);
    }
  };
  for (Mask& m : masks) {
    const auto start = Clock::now();
    for (int calls = 0; calls < kWarmupCalls || ms_since(start) < kWarmupSeconds * 1e3; ++calls) call(m, false);
  }
  for (int r = 0; r < rounds; ++r)
    for (Mask& m : masks) call(m, true);

  for (const Mask& m : masks) {
    std::printf("{\"file\": \"%s\", \"fwd_ms\": [", m.file.c_str());
    for (size_t i = 0; i < m.fwd_ms.size(); ++i) std::printf("%s%.4f", i ? ", " : "", m.fwd_ms[i]);
    std::printf("], \"bwd_ms\": [");
    for (size_t i = 0; i < m.bwd_ms.size(); ++i) std::printf("%s%.4f", i ? ", " : "", m.bwd_ms[i]);
    std::printf("]}\n");
  }
  return 0;
}
