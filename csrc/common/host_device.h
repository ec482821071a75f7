// HOST_DEVICE_INLINE marks per-element logic that is compiled for both the CPU kernels (plain C++)
// and the CUDA kernels (nvcc), so that both backends share one implementation of the maths.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define HOST_DEVICE __host__ __device__
#define HOST_DEVICE_INLINE __host__ __device__ __forceinline__
#else
#define HOST_DEVICE
#define HOST_DEVICE_INLINE inline
#endif
