// Input validation of the box ops, shared by the CPU and the CUDA implementations.
#pragma once

#include <ATen/ATen.h>

#include "box_ops/box_ops_core.h"
#include "common/checks.h"

namespace pointmae {
namespace box_ops {

// `boxes` is (N, >= 7), float32/float64/float16, with finite first 7 columns and non-negative sizes.
// The value check is one reduction plus one device-to-host read (a sync on CUDA); only when it fails
// is the first offending row looked up, to name it in the message. NaN or infinite boxes have no
// meaningful overlap, so they are an error rather than a silent NaN or 0 in the output.
inline void check_boxes(const char* op, const char* name, const at::Tensor& boxes) {
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) >= kBoxDim, op, ": `", name,
                    "` must be a 2-D tensor (N, >=7) of (x, y, z, dx, dy, dz, heading, ...), got shape ",
                    shape_str(boxes));
  TORCH_CHECK_VALUE(boxes.scalar_type() == at::kFloat || boxes.scalar_type() == at::kDouble ||
                        boxes.scalar_type() == at::kHalf,
                    op, ": `", name, "` must be float32, float64 or float16, got ", boxes.scalar_type());
  if (boxes.size(0) == 0) return;
  const at::Tensor used = boxes.narrow(1, 0, kBoxDim);
  const at::Tensor sizes = used.narrow(1, 3, 3);
  const at::Tensor bad_row = at::logical_not(at::isfinite(used)).any(1).logical_or_((sizes < 0).any(1));
  if (!bad_row.any().item<bool>()) return;
  const int64_t row = bad_row.nonzero().select(1, 0).min().item<int64_t>();
  const at::Tensor values = used.select(0, row).to(at::kCPU, at::kDouble).contiguous();
  const double* v = values.data_ptr<double>();
  std::string text = "[";
  for (int k = 0; k < kBoxDim; ++k) text += (k ? ", " : "") + std::to_string(v[k]);
  text += "]";
  const bool finite = at::isfinite(values).all().item<bool>();
  TORCH_CHECK_VALUE(finite, op, ": `", name, "` must hold finite values in its first 7 columns, but row ", row,
                    " is ", text);
  TORCH_CHECK_VALUE(false, op, ": `", name, "` must have non-negative sizes (dx, dy, dz), but row ", row,
                    " is ", text);
}

// `scores` is a floating (N,) tensor without NaN, beside `boxes` (N, ...).
inline void check_scores(const char* op, const at::Tensor& scores, const at::Tensor& boxes) {
  TORCH_CHECK_VALUE(scores.dim() == 1 && scores.size(0) == boxes.size(0), op,
                    ": `scores` must be a 1-D tensor (N,) with N = boxes.size(0) = ", boxes.size(0),
                    ", got shape ", shape_str(scores));
  TORCH_CHECK_VALUE(at::isFloatingType(scores.scalar_type()), op,
                    ": `scores` must be a floating-point tensor, got ", scores.scalar_type());
  check_same_device(op, "scores", scores, boxes, "boxes");
  if (scores.size(0) == 0) return;
  // NaN has no place in a descending order; +-inf is a fine score.
  TORCH_CHECK_VALUE(!at::isnan(scores).any().item<bool>(), op, ": `scores` must not contain NaN, got ",
                    at::isnan(scores).sum().item<int64_t>(), " NaN value(s)");
}

inline void check_iou_threshold(const char* op, double iou_threshold) {
  TORCH_CHECK_VALUE(iou_threshold >= 0.0 && iou_threshold <= 1.0, op,
                    ": `iou_threshold` must be in [0, 1], got ", iou_threshold);
}

}  // namespace box_ops
}  // namespace pointmae
