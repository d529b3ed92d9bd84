// Lets the mask logic be shared verbatim by the C++ and the CUDA kernels.
#pragma once

#if defined(__CUDACC__)
#define FM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FM_HOST_DEVICE inline
#endif
