// The constants of the online softmax that the CPU and CUDA kernels share: they work in base
// 2 (the scale folded into exp2 as softmax_scale * log2(e)), report a natural-log LSE, and
// rescale lazily.
#pragma once

namespace flashmask {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// A row's reference maximum moves only when a tile's maximum passes it by more than this
// (log2 units): probabilities stay below 2^8, and the output row is rescaled once per jump
// instead of at every new maximum (docs/cpu-kernel.md "Kept: lazy rescaling", perf-notes v56).
constexpr float kRescaleSlack = 8.f;

}  // namespace flashmask
