// Storage types for fp16/bf16 tensors and their conversion to and from fp32.
//
// Tiles are loaded into fp32 and stored from fp32 through these (the bf16
// products of kernels_avx512.cc convert the fp32 tiles again, with
// vcvtne2ps2bf16). Written with plain integer/float operations (no F16C or
// AVX512-BF16 intrinsics) so the same source builds for any x86/ARM target
// and the loops still vectorise; rounding is round-to-nearest-even, as in
// hardware conversions.
#pragma once

#include <cstdint>
#include <cstring>

#include "flashmask/params.h"

namespace flashmask {
namespace cpu {

struct Float16 {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline float to_float(float x) { return x; }

inline float to_float(BFloat16 x) { return bits_float(static_cast<uint32_t>(x.bits) << 16); }

inline float to_float(Float16 x) {
  const uint32_t sign = static_cast<uint32_t>(x.bits & 0x8000u) << 16;
  const uint32_t magnitude = x.bits & 0x7fffu;
  // Shifting exponent+mantissa into fp32 position gives the value times
  // 2^-112 for normal and subnormal halves alike; one multiply rescales it.
  const float finite = bits_float(magnitude << 13) * 0x1p112f;
  const uint32_t inf_nan = (magnitude << 13) | 0x7f800000u;
  return bits_float(sign | (magnitude >= 0x7c00u ? inf_nan : float_bits(finite)));
}

template <typename T>
T from_float(float x);

template <>
inline float from_float<float>(float x) {
  return x;
}

template <>
inline BFloat16 from_float<BFloat16>(float x) {
  const uint32_t u = float_bits(x);
  const bool is_nan = (u & 0x7fffffffu) > 0x7f800000u;
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return BFloat16{static_cast<uint16_t>(is_nan ? (u >> 16) | 0x40u : rounded)};
}

template <>
inline Float16 from_float<Float16>(float x) {
  const uint32_t u = float_bits(x);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t magnitude = u & 0x7fffffffu;
  uint32_t h;
  if (magnitude > 0x7f800000u) {
    h = 0x7e00u;  // NaN stays a (quiet) NaN
  } else if (magnitude >= 0x477ff000u) {
    h = 0x7c00u;  // at or past the midpoint between 65504 and 65536: inf
  } else if (magnitude < 0x38800000u) {
    // Below the smallest normal half: adding 0.5 lines the half's subnormal
    // ulp (2^-24) up with fp32's last mantissa bit, so the FPU rounds for us.
    h = float_bits(bits_float(magnitude) + 0.5f) - float_bits(0.5f);
  } else {
    const uint32_t odd = (magnitude >> 13) & 1u;
    h = (magnitude + 0xc8000fffu + odd) >> 13;  // rebias exponent 127 -> 15, round to even
  }
  return Float16{static_cast<uint16_t>(sign | h)};
}

// Calls f(T{}) with T the storage type of `dtype`, so one template serves
// all three input types.
template <typename F>
void dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      f(float{});
      break;
    case DType::kFloat16:
      f(Float16{});
      break;
    case DType::kBFloat16:
      f(BFloat16{});
      break;
  }
}

}  // namespace cpu
}  // namespace flashmask
