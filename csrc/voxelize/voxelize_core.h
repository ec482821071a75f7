// Per-point logic of voxelization, shared by the CPU and CUDA kernels so that both backends assign
// every point to exactly the same voxel.
//
// Voxel index rule (the reference in pointmae/ops/reference.py does the same arithmetic):
//   all arithmetic is in float64, whatever the point dtype (a float32 coordinate is exact in float64);
//   a point is inside the range when x0 <= x < x1 (same for y, z);
//   its voxel index is ix = floor((x - x0) / vx), and it is kept only when 0 <= ix < gx, where the grid
//   size is gx = round((x1 - x0) / vx) (round half away from zero, std::round). The second test matters
//   when (x1 - x0) / vx is not an integer: the last, partial cell is then either dropped or the grid is
//   extended, exactly like spconv / OpenPCDet.
//   A point with any non-finite x, y or z is dropped and counted as non-finite (checked first).
// The linear key of a voxel inside one cloud is (iz * gy + iy) * gx + ix, int64; the caller checks
// that gx * gy * gz * B fits in int64 so that (batch * cells + key) is a unique int64 across a batch.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace pointmae {
namespace voxelize {

// Status codes written per point next to its key.
constexpr int64_t kOutsideRange = -1;
constexpr int64_t kNonFinite = -2;

struct GridParams {
  double origin[3];  // x0, y0, z0
  double upper[3];   // x1, y1, z1
  double size[3];    // vx, vy, vz
  double inv_size[3];     // 1 / vx, ...: see voxel_key
  double half_window[3];  // 0.5 - near_integer: q is "far from a face" when |frac(q) - 0.5| < this
  int64_t dims[3];   // gx, gy, gz
};

HOST_DEVICE_INLINE bool is_finite_double(double v) {
  // v - v is NaN for +-inf and NaN, 0 otherwise: avoids std::isfinite, which differs in host/device headers.
  return (v - v) == 0.0;
}

// Returns the linear key (>= 0) of the voxel that holds point (x, y, z), or kOutsideRange / kNonFinite.
//
// floor((p - x0) / v) is computed bit-identically to the float64 division but usually without one
// (division throughput is the cost of voxelizing a sweep on a CPU: 3 per point): q = (p - x0) * (1 / v)
// differs from the correctly rounded quotient by a few ulp (relative error below 2^-51), so their
// floors can only differ when q is that close to an integer. Only then (a point within
// `near_integer` of a voxel face, see make_grid) are the divisions done.
template <typename scalar_t>
HOST_DEVICE_INLINE int64_t voxel_key(scalar_t px, scalar_t py, scalar_t pz, const GridParams& g) {
  const double p[3] = {static_cast<double>(px), static_cast<double>(py), static_cast<double>(pz)};
  // NaN fails every comparison and +-inf fails one of the two, so a non-finite point is never inside:
  // the finiteness test is only needed to classify a point that is not.
  bool inside = true;
  for (int d = 0; d < 3; ++d) inside &= (p[d] >= g.origin[d]) & (p[d] < g.upper[d]);
  if (!inside) {
    const bool finite = is_finite_double(p[0]) & is_finite_double(p[1]) & is_finite_double(p[2]);
    return finite ? kOutsideRange : kNonFinite;
  }
  // p >= x0 makes p - x0 >= 0 (IEEE subtraction is monotone), so quotients are >= 0: truncation is
  // floor; and they are bounded by about the grid size, so the casts are in range.
  double diff[3];
  int64_t cell[3];
  bool far_from_faces = true;
  for (int d = 0; d < 3; ++d) {
    diff[d] = p[d] - g.origin[d];
    const double q = diff[d] * g.inv_size[d];
    cell[d] = static_cast<int64_t>(q);
    const double frac = q - static_cast<double>(cell[d]);
    far_from_faces &= fabs(frac - 0.5) < g.half_window[d];
  }
  if (!far_from_faces) {
    for (int d = 0; d < 3; ++d) cell[d] = static_cast<int64_t>(diff[d] / g.size[d]);
  }
  // floor(c) < gx <=> the integer cell < gx.
  if ((cell[0] >= g.dims[0]) | (cell[1] >= g.dims[1]) | (cell[2] >= g.dims[2])) return kOutsideRange;
  return (cell[2] * g.dims[1] + cell[1]) * g.dims[0] + cell[0];
}

// Inverse of the key: writes (z, y, x) as int32, the spconv / OpenPCDet order of voxel coordinates.
HOST_DEVICE_INLINE void key_to_zyx(int64_t key, const GridParams& g, int32_t* zyx) {
  const int64_t x = key % g.dims[0];
  const int64_t rest = key / g.dims[0];
  const int64_t y = rest % g.dims[1];
  const int64_t z = rest / g.dims[1];
  zyx[0] = static_cast<int32_t>(z);
  zyx[1] = static_cast<int32_t>(y);
  zyx[2] = static_cast<int32_t>(x);
}

// 64-bit finaliser of MurmurHash3 (Appleby, public domain algorithm): spreads neighbouring keys of
// the linear grid over the open-addressing table so that linear probing stays short.
HOST_DEVICE_INLINE uint64_t mix_hash(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

}  // namespace voxelize
}  // namespace pointmae
