// Input validation shared by every op. Every check raises a c10::Error (a Python RuntimeError or
// ValueError), never aborts the process, and names the argument, what was expected and what was
// received, e.g. "pointmae.knn: `points` must be a 2-D tensor (N, 3), got shape [4, 5, 3]".
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace pointmae {

inline std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(t.size(i));
  }
  return s + "]";
}

// `t` is (N, dim) with a floating dtype.
inline void check_points(const char* op, const char* name, const at::Tensor& t, int64_t dim = 3) {
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(1) == dim, op, ": `", name, "` must be a 2-D tensor (N, ", dim,
                    "), got shape ", shape_str(t));
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble ||
                        t.scalar_type() == at::kHalf,
                    op, ": `", name, "` must be float32, float64 or float16, got ", t.scalar_type());
}

// `offsets` is int64 (B+1,), on the same device as `like`, starts at 0, is non-decreasing and ends at
// `total`. The monotonicity check reads the (small) offsets tensor on the host.
inline void check_offsets(const char* op, const char* name, const at::Tensor& offsets, int64_t total,
                          const at::Tensor& like) {
  TORCH_CHECK_VALUE(offsets.dim() == 1 && offsets.size(0) >= 1, op, ": `", name,
                    "` must be a 1-D int64 tensor of length B+1, got shape ", shape_str(offsets));
  TORCH_CHECK_VALUE(offsets.scalar_type() == at::kLong, op, ": `", name, "` must be int64, got ",
                    offsets.scalar_type());
  TORCH_CHECK_VALUE(offsets.device() == like.device(), op, ": `", name, "` must be on ", like.device(),
                    " like the points, got ", offsets.device());
  const auto host = offsets.to(at::kCPU).contiguous();
  const int64_t* o = host.data_ptr<int64_t>();
  const int64_t n = host.size(0);
  TORCH_CHECK_VALUE(o[0] == 0, op, ": `", name, "` must start at 0, got ", o[0]);
  for (int64_t i = 1; i < n; ++i) {
    TORCH_CHECK_VALUE(o[i] >= o[i - 1], op, ": `", name, "` must be non-decreasing, but ", name, "[", i,
                      "] = ", o[i], " < ", name, "[", i - 1, "] = ", o[i - 1]);
  }
  TORCH_CHECK_VALUE(o[n - 1] == total, op, ": `", name, "` must end at the number of points ", total,
                    ", got ", o[n - 1]);
}

inline void check_same_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like,
                              const char* like_name) {
  TORCH_CHECK_VALUE(t.device() == like.device(), op, ": `", name, "` must be on the same device as `",
                    like_name, "` (", like.device(), "), got ", t.device());
}

inline void check_same_dtype(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like,
                             const char* like_name) {
  TORCH_CHECK_VALUE(t.scalar_type() == like.scalar_type(), op, ": `", name, "` must have the dtype of `",
                    like_name, "` (", like.scalar_type(), "), got ", t.scalar_type());
}

}  // namespace pointmae
