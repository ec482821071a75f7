// Input validation of pointmae::fps, shared by the CPU and CUDA entry points (host code only).
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "common/checks.h"

namespace pointmae {
namespace fps {

constexpr const char* kOp = "pointmae.fps";

// Validates every input and returns the offsets on the host (B+1 values). Raises ValueError with a
// message naming the argument (and the cloud, for per-cloud problems); never aborts.
inline std::vector<int64_t> check_inputs(const at::Tensor& points, const at::Tensor& offsets, int64_t num_samples,
                                         const at::Tensor& start_idx) {
  check_points(kOp, "points", points);
  check_offsets(kOp, "offsets", offsets, points.size(0), points);
  TORCH_CHECK_VALUE(num_samples >= 0, kOp, ": `num_samples` must be >= 0, got ", num_samples);
  const int64_t batch = offsets.size(0) - 1;
  TORCH_CHECK_VALUE(start_idx.dim() == 1 && start_idx.size(0) == batch, kOp,
                    ": `start_idx` must be a 1-D tensor (B,) = (", batch, ",) like offsets (B+1,), got shape ",
                    shape_str(start_idx));
  TORCH_CHECK_VALUE(start_idx.scalar_type() == at::kLong, kOp, ": `start_idx` must be int64, got ",
                    start_idx.scalar_type());
  check_same_device(kOp, "start_idx", start_idx, points, "points");

  const auto offsets_host = offsets.to(at::kCPU).contiguous();
  std::vector<int64_t> off(offsets_host.data_ptr<int64_t>(), offsets_host.data_ptr<int64_t>() + batch + 1);
  // Non-finite coordinates have no farthest point; report the first offending cloud.
  // Fast path: a finite sum proves every coordinate finite (NaN and Inf propagate through a sum);
  // only a non-finite sum (which a finite but huge cloud can also give) pays for the full scan.
  if (points.numel() > 0 && !at::isfinite(points.sum()).item<bool>()) {
    const auto finite_rows = at::isfinite(points).all(1);
    if (!finite_rows.all().item<bool>()) {
      const int64_t row = finite_rows.logical_not().nonzero().min().item<int64_t>();
      int64_t cloud = 0;
      while (cloud + 1 < batch && off[cloud + 1] <= row) ++cloud;
      TORCH_CHECK_VALUE(false, kOp, ": `points` must be finite, but cloud ", cloud, " has a NaN/Inf coordinate at row ",
                        row, " (local index ", row - off[cloud], ")");
    }
  }
  if (num_samples == 0) return off;  // nothing is sampled: empty clouds and any start_idx are fine

  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = off[b + 1] - off[b];
    TORCH_CHECK_VALUE(n >= num_samples, kOp, ": cloud ", b, " has ", n, " points, fewer than num_samples = ",
                      num_samples, " (FPS picks distinct points)");
  }
  const auto start_host = start_idx.to(at::kCPU).contiguous();
  const int64_t* s = start_host.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = off[b + 1] - off[b];
    TORCH_CHECK_VALUE(s[b] >= 0 && s[b] < n, kOp, ": `start_idx`[", b, "] = ", s[b],
                      " is outside cloud ", b, " of ", n, " points (expected a local index in [0, ", n, "))");
  }
  return off;
}

}  // namespace fps
}  // namespace pointmae
