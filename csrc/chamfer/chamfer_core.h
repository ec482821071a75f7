// Per-element logic of chamfer_distance, shared by the CPU and CUDA kernels (and mirrored, operation
// for operation, by pointmae/ops/reference.py).
//
// Chamfer distance (Fan, Su, Guibas, "A Point Set Generation Network for 3D Object Reconstruction
// from a Single Image", CVPR 2017): for every point of x the squared distance to its nearest point of
// y, and the reverse. The squared distance is pointmae::squared_distance (common/exact_arith.h):
//     d(a, b) = dx*dx + dy*dy + dz*dz,   dx = a.x - b.x, ...,   evaluated left to right,
// in the compute type (the input dtype; float for half inputs), each operation rounded on its own and
// never contracted into an FMA, so CPU, CUDA and the reference give the same bits and hence the same
// nearest neighbours and ties. On the CPU it is also evaluated on SIMD vectors, lane by lane.
//
// Ordering of candidates: smaller distance first; equal distances go to the lower index; NaN ranks
// after every number (+inf included). A query whose distances are all NaN thus gets NaN and the first
// partner point, so NaN inputs show up in the loss instead of being silently skipped.
#pragma once

#include "common/exact_arith.h"
#include "common/host_device.h"

#include <cstdint>

// Everything here is force-inlined on the host too (POINTMAE_FORCE_INLINE, common/exact_arith.h): the
// CPU kernel calls these functions with SIMD vector arguments from AVX2 target_clones code.

namespace pointmae {
namespace chamfer {

// Whether distance d beats the best so far: strictly smaller, or the best is NaN and d is not.
// Candidates are visited in increasing index, so "strictly" keeps ties at the lowest index.
template <typename T>
POINTMAE_FORCE_INLINE bool closer(T d, T best) {
  return d < best || (best != best && d == d);
}

// Gradient of g * d(a, b) w.r.t. a, added to (ox, oy, oz): 2 g (a - b). The gradient w.r.t. b is
// the negative, i.e. the same function with a and b swapped. Every operation is rounded on its own
// (exact_arith.h): nvcc would otherwise fuse `o + two_g * (a - b)` into one fma.rn, and the CUDA
// gradients would differ from the CPU ones in the last bit.
template <typename T>
POINTMAE_FORCE_INLINE void add_distance_gradient(T g, T ax, T ay, T az, T bx, T by, T bz, T& ox, T& oy, T& oz) {
  const T two_g = mul_rn(T(2), g);
  ox = add_rn(ox, mul_rn(two_g, sub_rn(ax, bx)));
  oy = add_rn(oy, mul_rn(two_g, sub_rn(ay, by)));
  oz = add_rn(oz, mul_rn(two_g, sub_rn(az, bz)));
}

}  // namespace chamfer
}  // namespace pointmae
