// Everything forward_impl.h and backward_impl.h use, for kernels_*.cc to
// include BEFORE their `#pragma GCC target`: functions defined after the
// pragma get that ISA, so a non-template (or a template instantiated alike in
// every variant) defined there would exist in several ISA versions under one
// name, and the linker could hand the AVX-512 one to a CPU without AVX-512.
// What is defined here keeps the build's baseline ISA and is inlined into the
// ISA-specific callers (and vectorised for their ISA) where it matters.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "convert.h"
#include "flashmask/params.h"
#include "kernels.h"
#include "parallel.h"
#include "tile_io.h"
#include "tile_mask.h"
#include "tile_math.h"
#include "tiling.h"
#include "workspace.h"
