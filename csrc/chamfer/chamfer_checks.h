// Validation of chamfer_distance / chamfer_distance_backward, shared by the CPU and CUDA entry points.
#pragma once

#include "common/checks.h"

namespace pointmae {
namespace chamfer {

inline void check_index_into(const char* op, const char* name, const at::Tensor& idx, int64_t n_rows,
                             int64_t n_targets, const at::Tensor& like) {
  TORCH_CHECK_VALUE(idx.dim() == 1 && idx.size(0) == n_rows, op, ": `", name, "` must be a 1-D int64 tensor (", n_rows,
                    ",), got shape ", shape_str(idx));
  TORCH_CHECK_VALUE(idx.scalar_type() == at::kLong, op, ": `", name, "` must be int64, got ", idx.scalar_type());
  check_same_device(op, name, idx, like, "x");
  if (idx.numel() == 0) return;
  const auto extrema = at::aminmax(idx);
  const int64_t lo = std::get<0>(extrema).item<int64_t>();
  const int64_t hi = std::get<1>(extrema).item<int64_t>();
  TORCH_CHECK_VALUE(lo >= -1 && hi < n_targets, op, ": `", name, "` values must lie in [-1, ", n_targets,
                    "), got values in [", lo, ", ", hi, "]");
}

inline void check_grad(const char* op, const char* name, const at::Tensor& g, const at::Tensor& points,
                       const char* points_name) {
  TORCH_CHECK_VALUE(g.dim() == 1 && g.size(0) == points.size(0), op, ": `", name, "` must be 1-D (",
                    points.size(0), ",) like the rows of `", points_name, "`, got shape ", shape_str(g));
  check_same_device(op, name, g, points, points_name);
  check_same_dtype(op, name, g, points, points_name);
}

inline void check_backward(const at::Tensor& grad_dist_x, const at::Tensor& grad_dist_y, const at::Tensor& x,
                           const at::Tensor& y, const at::Tensor& idx_x, const at::Tensor& idx_y) {
  const char* op = "pointmae.chamfer_distance_backward";
  check_points(op, "x", x);
  check_points(op, "y", y);
  check_same_device(op, "y", y, x, "x");
  check_same_dtype(op, "y", y, x, "x");
  check_grad(op, "grad_dist_x", grad_dist_x, x, "x");
  check_grad(op, "grad_dist_y", grad_dist_y, y, "y");
  check_index_into(op, "idx_x", idx_x, x.size(0), y.size(0), x);
  check_index_into(op, "idx_y", idx_y, y.size(0), x.size(0), x);
}

}  // namespace chamfer
}  // namespace pointmae
