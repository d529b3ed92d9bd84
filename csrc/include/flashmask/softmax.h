// The constants of the online softmax that the CPU and CUDA kernels share: they work in base
// 2 (the scale folded into exp2 as softmax_scale * log2(e)), report a natural-log LSE, and
// rescale lazily.
#pragma once

namespace flashmask {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Probabilities stay below 2^kRescaleSlack against a row's reference maximum, which moves
// only when they would not (log2 units), so the output row is rescaled once per jump instead
// of at every new maximum. The CPU kernel moves it when a tile's maximum passes it by more
// than this (docs/cpu-kernel.md "Kept: lazy rescaling"); the Hopper forwards when a thread's
// partial sum of a row's probabilities, taken against it without the tile's maximum, reaches
// 2^kRescaleSlack (perf-notes v58).
constexpr float kRescaleSlack = 8.f;

}  // namespace flashmask
