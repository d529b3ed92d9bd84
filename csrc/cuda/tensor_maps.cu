// TMA descriptor building (tensor_maps.h).
#include "tensor_maps.h"

#include <cudaTypedefs.h>

#include "runtime.h"

namespace flashmask {
namespace cuda {

namespace {

// The swizzle of every box: a box row is 128 bytes wide, so that a row of the smem tile
// is one swizzle atom (the layout the wgmma descriptors in sm90_primitives.cuh assume).
constexpr int kSwizzleBytes = 128;
constexpr int kHalfBytes = 2;   // float16 / bfloat16
// The driver ABI version of cuTensorMapEncodeTiled this file is written against.
constexpr int kEncoderDriverVersion = 12000;

// cuTensorMapEncodeTiled through the runtime's driver entry point, so the library
// does not link libcuda directly.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status;
#if CUDART_VERSION >= 12050
    const cudaError_t e = cudaGetDriverEntryPointByVersion(
        "cuTensorMapEncodeTiled", &ptr, kEncoderDriverVersion, cudaEnableDefault, &status);
#else  // CUDA 12.0-12.4
    const cudaError_t e =
        cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &ptr, cudaEnableDefault, &status);
#endif
    if (e != cudaSuccess || status != cudaDriverEntryPointSuccess) ptr = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
  }();
  return fn;
}

// A 4-D {head_dim, rows, heads, batch} tensor map (element strides), box {box_cols,
// box_rows, 1, 1}, 128-byte swizzle (box_cols * elem_bytes must be kSwizzleBytes).
int encode_tensor_map(CUtensorMap* map, CUtensorMapDataType type, int elem_bytes, const void* base,
                      const AttentionShape& s, int rows, int heads, const TensorStrides& strides,
                      int box_cols, int box_rows) {
  const cuuint64_t elem = elem_bytes;
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(s.head_dim), static_cast<cuuint64_t>(rows),
                              static_cast<cuuint64_t>(heads), static_cast<cuuint64_t>(s.batch)};
  const cuuint64_t byte_strides[3] = {static_cast<cuuint64_t>(strides.row) * elem,
                                      static_cast<cuuint64_t>(strides.head) * elem,
                                      static_cast<cuuint64_t>(strides.batch) * elem};
  const cuuint32_t box[4] = {static_cast<cuuint32_t>(box_cols), static_cast<cuuint32_t>(box_rows), 1, 1};
  const cuuint32_t unit[4] = {1, 1, 1, 1};
  const CUresult r = tensor_map_encoder()(
      map, type, 4, const_cast<void*>(base), dims, byte_strides, box, unit,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return report_error("cuTensorMapEncodeTiled failed (%d) for a [%d, %d, %d, %d] tensor with "
                        "strides (%lld, %lld, %lld)",
                        static_cast<int>(r), s.batch, rows, heads, s.head_dim,
                        static_cast<long long>(strides.batch), static_cast<long long>(strides.row),
                        static_cast<long long>(strides.head));
  return 0;
}

}  // namespace

bool tensor_map_encoding_available() { return tensor_map_encoder() != nullptr; }

int make_tile_tensor_map(CUtensorMap* map, const void* base, DType dtype, const AttentionShape& s,
                         int rows, int heads, const TensorStrides& strides, int box_rows) {
  const CUtensorMapDataType type = dtype == DType::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                             : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  return encode_tensor_map(map, type, kHalfBytes, base, s, rows, heads, strides,
                           kSwizzleBytes / kHalfBytes, box_rows);
}

}  // namespace cuda
}  // namespace flashmask
