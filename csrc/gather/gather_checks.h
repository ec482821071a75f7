// Validation of gather_points / gather_points_backward, shared by the CPU and CUDA entry points.
#pragma once

#include "common/checks.h"

namespace pointmae {
namespace gather {

// idx: int64 (Q, k), on the device of `like`, every value in [-1, num_points).
inline void check_index(const char* op, const at::Tensor& idx, int64_t num_points, const at::Tensor& like,
                        const char* like_name) {
  TORCH_CHECK_VALUE(idx.dim() == 2, op, ": `idx` must be a 2-D int64 tensor (Q, k), got shape ", shape_str(idx));
  TORCH_CHECK_VALUE(idx.scalar_type() == at::kLong, op, ": `idx` must be int64, got ", idx.scalar_type());
  check_same_device(op, "idx", idx, like, like_name);
  if (idx.numel() == 0) return;
  // A range check costs one reduction (and, on CUDA, one synchronisation) but keeps every kernel
  // in bounds whatever the caller passes.
  const auto extrema = at::aminmax(idx);
  const int64_t lo = std::get<0>(extrema).item<int64_t>();
  const int64_t hi = std::get<1>(extrema).item<int64_t>();
  TORCH_CHECK_VALUE(lo >= -1, op, ": `idx` values must be >= -1 (-1 marks padding), got ", lo);
  TORCH_CHECK_VALUE(hi < num_points, op, ": `idx` values must be < the number of points ", num_points, ", got ",
                    hi);
}

inline void check_features(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble ||
                        t.scalar_type() == at::kHalf,
                    op, ": `", name, "` must be float32, float64 or float16, got ", t.scalar_type());
}

inline void check_forward(const at::Tensor& features, const at::Tensor& idx) {
  const char* op = "pointmae.gather_points";
  TORCH_CHECK_VALUE(features.dim() == 2, op, ": `features` must be a 2-D tensor (N, C), got shape ",
                    shape_str(features));
  check_features(op, "features", features);
  check_index(op, idx, features.size(0), features, "features");
}

inline void check_backward(const at::Tensor& grad_out, const at::Tensor& idx, int64_t num_points) {
  const char* op = "pointmae.gather_points_backward";
  TORCH_CHECK_VALUE(num_points >= 0, op, ": `num_points` must be >= 0, got ", num_points);
  TORCH_CHECK_VALUE(grad_out.dim() == 3, op, ": `grad_out` must be a 3-D tensor (Q, k, C), got shape ",
                    shape_str(grad_out));
  check_features(op, "grad_out", grad_out);
  check_index(op, idx, num_points, grad_out, "grad_out");
  TORCH_CHECK_VALUE(grad_out.size(0) == idx.size(0) && grad_out.size(1) == idx.size(1), op,
                    ": `grad_out` must be (Q, k, C) with (Q, k) = the shape of `idx` ", shape_str(idx), ", got ",
                    shape_str(grad_out));
}

}  // namespace gather
}  // namespace pointmae
