// Per-element logic shared by the CPU (k-d tree) and CUDA (tiled brute force) neighbour searches
// of `knn` and `ball_query`, and mirrored by pointmae/ops/reference.py.
//
// Exactness contract. Both backends and the reference must return bit-identical distances and the
// same order, so the squared distance is defined once, here:
//     dist2(q, p) = ((dx*dx) + (dy*dy)) + (dz*dz),  dx = q.x - p.x, ...
// every operation rounded once in the compute type (the input dtype; float32 for float16 inputs on
// CUDA): pointmae::squared_distance, and pointmae::sum_of_squares for box bounds (common/exact_arith.h,
// which also explains how fused multiply-adds, which would break ties differently from the
// reference, are kept out on the GPU and the host).
//
// Order: candidates are compared by (dist2, packed index) lexicographically, so equal distances go to
// the lowest index whatever order a search visits the points in.
#pragma once

#include "common/exact_arith.h"
#include "common/host_device.h"

#include <cstdint>

namespace pointmae {
namespace neighbors {

// Gap along one axis between the coordinate q and the interval [lo, hi]: 0 inside, else the distance
// to the nearer end, computed as one rounded subtraction. Rounding is monotone, so for any p in
// [lo, hi] the gap is <= |q - p| as computed by squared_distance (both use sub_rn); summed in the same order, the
// resulting box bound is <= dist2 of every point in the box, bit for bit. That makes pruning with
// `bound > worst` exact: no point that could enter the result is ever skipped.
template <typename T>
HOST_DEVICE_INLINE T axis_gap(T q, T lo, T hi) {
  if (q < lo) return sub_rn(lo, q);
  if (q > hi) return sub_rn(q, hi);
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
