// Input validation shared by every op. Every check raises a c10::Error (a Python RuntimeError or
// ValueError), never aborts the process, and names the argument, what was expected and what was
// received, e.g. "pointmae.knn: `points` must be a 2-D tensor (N, 3), got shape [4, 5, 3]".
#pragma once

#include <ATen/ATen.h>

#include <limits>
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

// Two packed point sets matched cloud by cloud (chamfer_distance's x and y, knn / ball_query's query and
// points): both (N, 3) floating with one dtype and device, valid offsets, the same number of clouds B,
// and fewer than 2^31 - 1 rows each (the kernels keep indices local to a cloud in 32 bits). Returns B.
inline int64_t check_point_pair(const char* op, const char* a_name, const at::Tensor& a, const char* a_offsets_name,
                                const at::Tensor& a_offsets, const char* b_name, const at::Tensor& b,
                                const char* b_offsets_name, const at::Tensor& b_offsets) {
  check_points(op, a_name, a);
  check_points(op, b_name, b);
  check_same_device(op, b_name, b, a, a_name);
  check_same_dtype(op, b_name, b, a, a_name);
  check_offsets(op, a_offsets_name, a_offsets, a.size(0), a);
  check_offsets(op, b_offsets_name, b_offsets, b.size(0), b);
  TORCH_CHECK_VALUE(a_offsets.size(0) == b_offsets.size(0), op, ": `", a_offsets_name, "` and `", b_offsets_name,
                    "` must describe the same number of clouds B (cloud b of `", a_name, "` goes with cloud b of `",
                    b_name, "`), got ", a_offsets.size(0) - 1, " and ", b_offsets.size(0) - 1, " clouds (lengths ",
                    a_offsets.size(0), " and ", b_offsets.size(0), ")");
  constexpr int64_t kMaxRows = std::numeric_limits<int32_t>::max();
  TORCH_CHECK_VALUE(a.size(0) < kMaxRows && b.size(0) < kMaxRows, op, ": `", a_name, "` and `", b_name,
                    "` must have fewer than 2^31 - 1 rows each, got shapes ", shape_str(a), " and ", shape_str(b));
  return a_offsets.size(0) - 1;
}

}  // namespace pointmae
