// Host-side validation of the voxelization ops' arguments, shared by the CPU and CUDA entry points so
// that both backends reject exactly the same inputs with the same messages.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/checks.h"
#include "voxelize/voxelize_core.h"

namespace pointmae {
namespace voxelize {

// points (N, C >= 3), float32 / float64 / float16.
inline void check_voxel_points(const char* op, const at::Tensor& points) {
  TORCH_CHECK_VALUE(points.dim() == 2 && points.size(1) >= 3, op,
                    ": `points` must be a 2-D tensor (N, C) with C >= 3 (x, y, z first), got shape ",
                    shape_str(points));
  TORCH_CHECK_VALUE(points.scalar_type() == at::kFloat || points.scalar_type() == at::kDouble ||
                        points.scalar_type() == at::kHalf,
                    op, ": `points` must be float32, float64 or float16, got ", points.scalar_type());
}

// Validates voxel_size / point_range and derives the grid. num_clouds is B: the batched key
// batch * cells + key must fit in int64.
inline GridParams make_grid(const char* op, at::ArrayRef<double> voxel_size, at::ArrayRef<double> point_range,
                            int64_t num_clouds) {
  TORCH_CHECK_VALUE(voxel_size.size() == 3, op, ": `voxel_size` must have 3 values [vx, vy, vz], got ",
                    voxel_size.size());
  TORCH_CHECK_VALUE(point_range.size() == 6, op,
                    ": `point_range` must have 6 values [x0, y0, z0, x1, y1, z1], got ", point_range.size());
  static const char* axis[3] = {"x", "y", "z"};
  GridParams g;
  double cells = 1.0;
  for (int d = 0; d < 3; ++d) {
    const double v = voxel_size[d];
    TORCH_CHECK_VALUE(std::isfinite(v) && v > 0.0, op, ": `voxel_size` must be finite and positive, got ",
                      axis[d], " size ", v);
    const double lo = point_range[d], hi = point_range[d + 3];
    TORCH_CHECK_VALUE(std::isfinite(lo) && std::isfinite(hi), op, ": `point_range` must be finite, got ",
                      axis[d], " range [", lo, ", ", hi, ")");
    TORCH_CHECK_VALUE(lo < hi, op, ": `point_range` must have min < max on every axis, got ", axis[d], " range [",
                      lo, ", ", hi, ")");
    const double dim = std::round((hi - lo) / v);
    TORCH_CHECK_VALUE(dim >= 1.0, op, ": `point_range` / `voxel_size` give an empty grid on ", axis[d],
                      ": round((", hi, " - ", lo, ") / ", v, ") = ", dim);
    // Coordinates are returned as int32 (spconv / OpenPCDet order), so every axis must fit in int32.
    TORCH_CHECK_VALUE(dim <= static_cast<double>(std::numeric_limits<int32_t>::max()), op,
                      ": `point_range` / `voxel_size` give ", dim, " voxels on ", axis[d],
                      ", more than int32 voxel coordinates can hold (", std::numeric_limits<int32_t>::max(), ")");
    g.origin[d] = lo;
    g.upper[d] = hi;
    g.size[d] = v;
    g.inv_size[d] = 1.0 / v;
    g.dims[d] = static_cast<int64_t>(dim);
    // Quotients inside the range are below dim + 1, and q = diff * (1 / v) is within a relative 2^-51 of
    // the rounded quotient: 2^-46 relative to that bound is a 32x safety margin for voxel_key's shortcut.
    g.half_window[d] = 0.5 - (dim + 2.0) * std::ldexp(1.0, -46);
    cells *= dim;
  }
  // Keys are int64: batch * cells + linear cell index must not overflow (2^62 leaves headroom for the
  // exact integer product computed below).
  const double batched = cells * static_cast<double>(std::max<int64_t>(num_clouds, 1));
  TORCH_CHECK_VALUE(batched < 4.0e18, op, ": `point_range` / `voxel_size` give a grid of ", g.dims[0], " x ",
                    g.dims[1], " x ", g.dims[2], " voxels per cloud for ", num_clouds,
                    " clouds, more than int64 voxel keys can index");
  return g;
}

inline int64_t grid_cells(const GridParams& g) { return g.dims[0] * g.dims[1] * g.dims[2]; }

inline void check_capacity(const char* op, int64_t max_points_per_voxel, int64_t max_voxels) {
  TORCH_CHECK_VALUE(max_points_per_voxel >= 1, op, ": `max_points_per_voxel` must be >= 1, got ",
                    max_points_per_voxel);
  TORCH_CHECK_VALUE(max_voxels >= 1, op, ": `max_voxels` must be >= 1, got ", max_voxels);
}

inline int64_t parse_reduce(const char* op, c10::string_view reduce) {
  if (reduce == "mean") return 0;
  if (reduce == "max") return 1;
  TORCH_CHECK_VALUE(false, op, ": `reduce` must be \"mean\" or \"max\", got \"", std::string(reduce), "\"");
  return -1;
}

// point_to_voxel (N,) int64 on `like`'s device with values in [-1, num_voxels). The range check reduces
// on the device (one synchronisation on CUDA): an index out of range would otherwise make the kernels
// read or write out of bounds.
inline void check_point_to_voxel(const char* op, const at::Tensor& point_to_voxel, int64_t num_points,
                                 const at::Tensor& like, const char* like_name, int64_t num_voxels) {
  TORCH_CHECK_VALUE(point_to_voxel.dim() == 1 && point_to_voxel.size(0) == num_points, op,
                    ": `point_to_voxel` must be a 1-D tensor (N,) with N = ", num_points, ", got shape ",
                    shape_str(point_to_voxel));
  TORCH_CHECK_VALUE(point_to_voxel.scalar_type() == at::kLong, op, ": `point_to_voxel` must be int64, got ",
                    point_to_voxel.scalar_type());
  check_same_device(op, "point_to_voxel", point_to_voxel, like, like_name);
  TORCH_CHECK_VALUE(num_voxels >= 0, op, ": `num_voxels` must be >= 0, got ", num_voxels);
  if (point_to_voxel.numel() > 0) {
    const auto mm = at::aminmax(point_to_voxel);
    const int64_t lo = std::get<0>(mm).item<int64_t>();
    const int64_t hi = std::get<1>(mm).item<int64_t>();
    TORCH_CHECK_VALUE(lo >= -1 && hi < num_voxels, op, ": `point_to_voxel` values must be in [-1, num_voxels = ",
                      num_voxels, "), got values in [", lo, ", ", hi, "]");
  }
}

// features (N, C) floating; point_to_voxel as above.
inline void check_scatter_inputs(const char* op, const at::Tensor& features, const at::Tensor& point_to_voxel,
                                 int64_t num_voxels) {
  TORCH_CHECK_VALUE(features.dim() == 2, op, ": `features` must be a 2-D tensor (N, C), got shape ",
                    shape_str(features));
  TORCH_CHECK_VALUE(features.scalar_type() == at::kFloat || features.scalar_type() == at::kDouble ||
                        features.scalar_type() == at::kHalf,
                    op, ": `features` must be float32, float64 or float16, got ", features.scalar_type());
  check_point_to_voxel(op, point_to_voxel, features.size(0), features, "features", num_voxels);
}

// The backward's inputs: grad_out (V, C) floating, point_to_voxel (num_points,), and for "max" the
// forward's arg (V, C) int64.
inline void check_scatter_backward(const char* op, const at::Tensor& grad_out, const at::Tensor& point_to_voxel,
                                   const at::Tensor& arg, int64_t num_points, bool is_max) {
  TORCH_CHECK_VALUE(grad_out.dim() == 2, op, ": `grad_out` must be a 2-D tensor (V, C), got shape ",
                    shape_str(grad_out));
  TORCH_CHECK_VALUE(grad_out.scalar_type() == at::kFloat || grad_out.scalar_type() == at::kDouble ||
                        grad_out.scalar_type() == at::kHalf,
                    op, ": `grad_out` must be float32, float64 or float16, got ", grad_out.scalar_type());
  TORCH_CHECK_VALUE(num_points >= 0, op, ": `num_points` must be >= 0, got ", num_points);
  check_point_to_voxel(op, point_to_voxel, num_points, grad_out, "grad_out", grad_out.size(0));
  if (is_max) {
    TORCH_CHECK_VALUE(arg.sizes() == grad_out.sizes() && arg.scalar_type() == at::kLong, op,
                      ": `arg` must be an int64 tensor of the shape of `grad_out` ", shape_str(grad_out), ", got ",
                      arg.scalar_type(), " of shape ", shape_str(arg));
    check_same_device(op, "arg", arg, grad_out, "grad_out");
  }
}

}  // namespace voxelize
}  // namespace pointmae
