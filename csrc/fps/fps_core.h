// Farthest point sampling: the per-element maths shared by the CPU and CUDA kernels.
//
// FPS (Eldar et al., "The farthest point strategy for progressive image sampling", IEEE TIP 1997)
// keeps, for every point p, min_dist[p] = min over the samples s chosen so far of dist2(p, s), and
// picks as the next sample the unselected point with the largest min_dist (ties: lowest index).
//
// Exactness contract: the reference (pointmae/ops/reference.py), the CPU kernel and the CUDA kernel
// must choose the same indices bit for bit, so the squared distance is defined once, here:
//     dist2 = (dx*dx + dy*dy) + dz*dz,   dx = p.x - s.x, ...
// evaluated left to right in the accumulation type (the input dtype; float32 for float16 input),
// every operation rounded separately: pointmae::squared_distance (common/exact_arith.h, which also
// explains how fused multiply-adds are kept out on the GPU and the host).
//
// Already selected points carry the sentinel kSelected (-1) as their min_dist. Real squared
// distances are >= 0, so a selected point can never win the argmax, and min(-1, d) keeps it at -1.
#pragma once

#include "common/exact_arith.h"
#include "common/host_device.h"

namespace pointmae {
namespace fps {

// min_dist value of a point that is already a sample (below every real squared distance).
constexpr double kSelected = -1.0;

// THE distance of the op (see the contract above).
template <typename acc_t>
HOST_DEVICE_INLINE acc_t dist2(acc_t px, acc_t py, acc_t pz, acc_t sx, acc_t sy, acc_t sz) {
  return squared_distance<acc_t>(px, py, pz, sx, sy, sz);
}

// Gap between coordinate s and the interval [lo, hi] along one axis: 0 inside, else the distance to
// the nearer end, computed with the same subtraction as dist2 would use for the nearest possible
// coordinate. Rounding is monotone, so for every p in [lo, hi]: |fl(p - s)| >= gap.
template <typename acc_t>
HOST_DEVICE_INLINE acc_t axis_gap(acc_t s, acc_t lo, acc_t hi) {
  if (s < lo) return lo - s;
  if (s > hi) return s - hi;
  return acc_t(0);
}

// A lower bound of dist2(p, s) over every p in the box [lo, hi], valid for the rounded arithmetic
// of dist2 itself (monotone rounding of monotone operations on larger-or-equal operands), so that
// "bound >= current max min_dist of the box" proves that no point of the box can get closer to s
// than it already is: the box can be skipped without changing the result (QuickFPS pruning, Han et
// al., IEEE TCAD 2023).
template <typename acc_t>
HOST_DEVICE_INLINE acc_t box_dist2_lower_bound(acc_t sx, acc_t sy, acc_t sz, const acc_t* lo, const acc_t* hi) {
  return sum_of_squares<acc_t>(axis_gap(sx, lo[0], hi[0]), axis_gap(sy, lo[1], hi[1]), axis_gap(sz, lo[2], hi[2]));
}

// The argmax order of FPS: larger min_dist first, then lower index. Returns true when candidate
// (d, i) beats the incumbent (best_d, best_i). Deterministic and associative, so any reduction tree
// (threads, blocks) picks the same winner as a left-to-right scan.
template <typename acc_t, typename index_t>
HOST_DEVICE_INLINE bool better(acc_t d, index_t i, acc_t best_d, index_t best_i) {
  return d > best_d || (d == best_d && i < best_i);
}

}  // namespace fps
}  // namespace pointmae
