// Per-element logic shared by the CPU (k-d tree) and CUDA (tiled brute force) neighbour searches
// of `knn` and `ball_query`, and mirrored by pointmae/ops/reference.py.
//
// Exactness contract. Both backends and the reference must return bit-identical distances and the
// same order, so the squared distance is defined once, here:
//     dist2(q, p) = ((dx*dx) + (dy*dy)) + (dz*dz),  dx = q.x - p.x, ...
// every operation rounded once in the compute type (the input dtype; float32 for float16 inputs on
// CUDA). No fused multiply-add: nvcc contracts a*b+c into an FMA by default, which rounds once instead
// of twice and would break ties differently from the reference, so the device path spells the
// operations with the round-to-nearest intrinsics, which nvcc never contracts.
//
// Order: candidates are compared by (dist2, packed index) lexicographically, so equal distances go to
// the lowest index whatever order a search visits the points in.
#pragma once

#include "common/host_device.h"

#include <cstdint>

namespace pointmae {
namespace neighbors {

#if defined(__CUDA_ARCH__)
HOST_DEVICE_INLINE float mul_exact(float a, float b) { return __fmul_rn(a, b); }
HOST_DEVICE_INLINE float add_exact(float a, float b) { return __fadd_rn(a, b); }
HOST_DEVICE_INLINE float sub_exact(float a, float b) { return __fsub_rn(a, b); }
HOST_DEVICE_INLINE double mul_exact(double a, double b) { return __dmul_rn(a, b); }
HOST_DEVICE_INLINE double add_exact(double a, double b) { return __dadd_rn(a, b); }
HOST_DEVICE_INLINE double sub_exact(double a, double b) { return __dsub_rn(a, b); }
#else
// On the host, contraction can only happen where the target has FMA instructions (not baseline
// x86-64, which this project builds for). GCC contracts across statements by default
// (-ffp-contract=fast), so on such targets these functions are compiled with contraction off; GCC
// then declines to inline them into code with other options, which costs speed, not exactness.
#if defined(__GNUC__) && !defined(__clang__) && (defined(__FP_FAST_FMA) || defined(__FP_FAST_FMAF))
#define POINTMAE_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define POINTMAE_NO_FP_CONTRACT
#endif
template <typename T>
POINTMAE_NO_FP_CONTRACT HOST_DEVICE_INLINE T mul_exact(T a, T b) { return a * b; }
template <typename T>
POINTMAE_NO_FP_CONTRACT HOST_DEVICE_INLINE T add_exact(T a, T b) { return a + b; }
template <typename T>
POINTMAE_NO_FP_CONTRACT HOST_DEVICE_INLINE T sub_exact(T a, T b) { return a - b; }
#endif

// The one definition of the squared distance from per-axis differences (or per-axis gaps).
template <typename T>
HOST_DEVICE_INLINE T dist2_from_deltas(T dx, T dy, T dz) {
  return add_exact(add_exact(mul_exact(dx, dx), mul_exact(dy, dy)), mul_exact(dz, dz));
}

template <typename T>
HOST_DEVICE_INLINE T squared_distance(T qx, T qy, T qz, T px, T py, T pz) {
  return dist2_from_deltas(sub_exact(qx, px), sub_exact(qy, py), sub_exact(qz, pz));
}

// Gap along one axis between the coordinate q and the interval [lo, hi]: 0 inside, else the distance
// to the nearer end, computed as one rounded subtraction. Rounding is monotone, so for any p in
// [lo, hi] the gap is <= |q - p| as computed by squared_distance; summed in the same order, the
// resulting box bound is <= dist2 of every point in the box, bit for bit. That makes pruning with
// `bound > worst` exact: no point that could enter the result is ever skipped.
template <typename T>
HOST_DEVICE_INLINE T axis_gap(T q, T lo, T hi) {
  if (q < lo) return sub_exact(lo, q);
  if (q > hi) return sub_exact(q, hi);
  return T(0);
}

// (da, ia) comes strictly before (db, ib) in the result order.
template <typename T>
HOST_DEVICE_INLINE bool candidate_before(T da, int64_t ia, T db, int64_t ib) {
  return da < db || (da == db && ia < ib);
}

// A sorted buffer of the best `capacity` candidates so far, ascending by (dist2, index). The arrays
// live wherever the caller puts them (registers/local memory on CUDA, the output rows on the host).
// Insertion sort: O(capacity) per accepted candidate, but candidates are rarely accepted once the
// buffer is full, and the buffer stays in L1.
template <typename T, typename I>
struct SortedCandidates {
  T* dist;
  I* index;
  int64_t capacity;
  int64_t count;

  HOST_DEVICE_INLINE bool full() const { return count == capacity; }

  // The distance a new candidate must not exceed to have a chance to enter. Only meaningful when full.
  HOST_DEVICE_INLINE T worst() const { return dist[capacity - 1]; }

  HOST_DEVICE_INLINE void offer(T d, I i) {
    if (capacity == 0) return;
    int64_t pos;
    if (count < capacity) {
      pos = count++;
    } else {
      if (!candidate_before<T>(d, static_cast<int64_t>(i), dist[capacity - 1],
                               static_cast<int64_t>(index[capacity - 1]))) {
        return;
      }
      pos = capacity - 1;
    }
    // Shift larger entries up by one and drop the candidate into its place.
    while (pos > 0 && candidate_before<T>(d, static_cast<int64_t>(i), dist[pos - 1],
                                          static_cast<int64_t>(index[pos - 1]))) {
      dist[pos] = dist[pos - 1];
      index[pos] = index[pos - 1];
      --pos;
    }
    dist[pos] = d;
    index[pos] = i;
  }

  // Whether a region whose distance lower bound is `bound` may still hold a result. A region at
  // exactly the worst distance may hold an equal-distance point of lower index, so only a strictly
  // larger bound prunes.
  HOST_DEVICE_INLINE bool may_improve(T bound, T max_dist2) const {
    if (bound > max_dist2) return false;
    return !full() || !(bound > worst());
  }
};

}  // namespace neighbors
}  // namespace pointmae
