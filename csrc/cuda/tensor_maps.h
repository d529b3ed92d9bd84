// TMA descriptors (CUtensorMap) of the tensors the Hopper kernels load and store, built
// on the host before each launch.
#pragma once

#include <cuda.h>

#include "flashmask/params.h"

namespace flashmask {
namespace cuda {

// Whether the driver's cuTensorMapEncodeTiled can be reached (the Hopper kernels need it).
bool tensor_map_encoding_available();

// TMA descriptor of a [batch, rows, heads, head_dim] tensor with the given
// element strides, box {64, box_rows, 1, 1}, 128-byte swizzle.
int make_tile_tensor_map(CUtensorMap* map, const void* base, DType dtype, const AttentionShape& s,
                         int rows, int heads, const TensorStrides& strides, int box_rows);

}  // namespace cuda
}  // namespace flashmask
