// Input validation of `knn` and `ball_query`, shared by the CPU and CUDA kernels so that both raise
// the same errors (ValueError through TORCH_CHECK_VALUE) with the argument named.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "common/checks.h"

namespace pointmae {
namespace neighbors {

// Host copies of the two offset tensors after validation (they are small: B+1 entries).
struct Batches {
  std::vector<int64_t> query_offsets;
  std::vector<int64_t> point_offsets;
  int64_t num_clouds() const { return static_cast<int64_t>(point_offsets.size()) - 1; }
};

inline std::vector<int64_t> offsets_to_host(const at::Tensor& offsets) {
  const auto host = offsets.to(at::kCPU).contiguous();
  const int64_t* o = host.data_ptr<int64_t>();
  return std::vector<int64_t>(o, o + host.size(0));
}

// Non-finite coordinates have no meaningful neighbours (a NaN compares false with everything, which
// would silently corrupt the ordering), so they are rejected with the first offending row named.
inline void check_finite(const char* op, const char* name, const at::Tensor& t) {
  if (t.numel() == 0) return;
  const at::Tensor bad_rows = at::logical_not(at::isfinite(t)).any(1);
  if (!bad_rows.any().item<bool>()) return;
  const int64_t row = bad_rows.nonzero().select(1, 0).min().item<int64_t>();
  TORCH_CHECK_VALUE(false, op, ": `", name, "` must hold finite coordinates, but row ", row,
                    " contains NaN or Inf");
}

inline Batches check_neighbor_inputs(const char* op, const at::Tensor& query, const at::Tensor& query_offsets,
                                     const at::Tensor& points, const at::Tensor& point_offsets, int64_t k) {
  check_point_pair(op, "query", query, "query_offsets", query_offsets, "points", points, "point_offsets",
                   point_offsets);
  TORCH_CHECK_VALUE(k >= 0, op, ": `k` must be >= 0, got ", k);
  check_finite(op, "query", query);
  check_finite(op, "points", points);
  return Batches{offsets_to_host(query_offsets), offsets_to_host(point_offsets)};
}

inline void check_radius(const char* op, double radius) {
  TORCH_CHECK_VALUE(std::isfinite(radius) && radius >= 0, op,
                    ": `radius` must be a finite number >= 0, got ", radius);
}

}  // namespace neighbors
}  // namespace pointmae
