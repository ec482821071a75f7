// Per-element logic of chamfer_distance, shared by the CPU and CUDA kernels (and mirrored, operation
// for operation, by pointmae/ops/reference.py).
//
// Chamfer distance (Fan, Su, Guibas, "A Point Set Generation Network for 3D Object Reconstruction
// from a Single Image", CVPR 2017): for every point of x the squared distance to its nearest point of
// y, and the reverse. The squared distance is defined once, here:
//     d(a, b) = dx*dx + dy*dy + dz*dz,   dx = a.x - b.x, ...,   evaluated left to right,
// in the compute type (the input dtype; float for half inputs), each operation rounded on its own: on
// CUDA the _rn intrinsics stop nvcc from contracting a*b+c into an FMA, so CPU, CUDA and the
// reference give the same bits and hence the same nearest neighbours and ties.
//
// Ordering of candidates: smaller distance first; equal distances go to the lower index; NaN ranks
// after every number (+inf included). A query whose distances are all NaN thus gets NaN and the first
// partner point, so NaN inputs show up in the loss instead of being silently skipped.
#pragma once

#include "common/host_device.h"

#include <cstdint>

// Everything here is force-inlined on the host too: the CPU kernel calls these functions with SIMD
// vector arguments from a function compiled for AVX2 (target_clones), and an out-of-line call
// between code built for different targets would pass those vectors with mismatched ABIs (GCC's
// -Wpsabi note). Inlined, the vectors never cross a call.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define CHAMFER_INLINE HOST_DEVICE_INLINE
#elif defined(__GNUC__)
#define CHAMFER_INLINE inline __attribute__((always_inline))
#else
#define CHAMFER_INLINE inline
#endif

namespace pointmae {
namespace chamfer {

// Products and sums rounded on their own. The templates serve any other type with arithmetic
// operators (the CPU kernel's SIMD vectors); float and double take the overloads below.
template <typename T>
CHAMFER_INLINE T mul_rn(T a, T b) {
  return a * b;
}
template <typename T>
CHAMFER_INLINE T add_rn(T a, T b) {
  return a + b;
}
CHAMFER_INLINE float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
CHAMFER_INLINE float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
CHAMFER_INLINE double mul_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
CHAMFER_INLINE double add_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

// The one definition of the squared distance (see the file comment). T is a scalar, or on the CPU a
// SIMD vector of them (a GCC/Clang vector type), to which the same operations apply lane by lane.
template <typename T>
CHAMFER_INLINE T squared_distance(T ax, T ay, T az, T bx, T by, T bz) {
  const T dx = ax - bx;
  const T dy = ay - by;
  const T dz = az - bz;
  return add_rn(add_rn(mul_rn(dx, dx), mul_rn(dy, dy)), mul_rn(dz, dz));
}

// Whether distance d beats the best so far: strictly smaller, or the best is NaN and d is not.
// Candidates are visited in increasing index, so "strictly" keeps ties at the lowest index.
template <typename T>
CHAMFER_INLINE bool closer(T d, T best) {
  return d < best || (best != best && d == d);
}

// Gradient of g * d(a, b) w.r.t. a, added to (ox, oy, oz): 2 g (a - b). The gradient w.r.t. b is
// the negative, i.e. the same function with a and b swapped.
template <typename T>
CHAMFER_INLINE void add_distance_gradient(T g, T ax, T ay, T az, T bx, T by, T bz, T& ox, T& oy, T& oz) {
  const T two_g = T(2) * g;
  ox += two_g * (ax - bx);
  oy += two_g * (ay - by);
  oz += two_g * (az - bz);
}

}  // namespace chamfer
}  // namespace pointmae
