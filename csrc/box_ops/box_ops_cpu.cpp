// CPU kernels of the rotated box ops: IoU matrices (BEV and 3D) and greedy BEV NMS.
// The per-pair maths is in box_ops_core.h, shared with the CUDA kernels.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "box_ops/box_ops_checks.h"
#include "box_ops/box_ops_core.h"

namespace pointmae {
namespace box_ops {
namespace {

// Boxes (N, >= 7) -> one PreparedBox per row (cos/sin, half extents, areas computed once).
template <typename scalar_t, typename acc_t>
std::vector<PreparedBox<acc_t>> prepare_all(const at::Tensor& boxes) {
  const at::Tensor used = boxes.narrow(1, 0, kBoxDim).contiguous();
  const scalar_t* data = used.data_ptr<scalar_t>();
  const int64_t n = used.size(0);
  std::vector<PreparedBox<acc_t>> prepared(static_cast<size_t>(n));
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) prepared[i] = prepare_box<acc_t>(data + i * kBoxDim);
  });
  return prepared;
}

// The bounding disc of every box, packed (x, y, radius), for the cheap "far apart" test.
template <typename acc_t>
std::vector<acc_t> bounding_discs(const std::vector<PreparedBox<acc_t>>& boxes) {
  std::vector<acc_t> discs(boxes.size() * 3);
  for (size_t i = 0; i < boxes.size(); ++i) {
    discs[3 * i] = boxes[i].cx;
    discs[3 * i + 1] = boxes[i].cy;
    discs[3 * i + 2] = boxes[i].radius;
  }
  return discs;
}

// Columns are visited in tiles so that the tile's discs and boxes stay in L1 across the tile's rows.
constexpr int64_t kColumnTile = 256;

template <bool kIou3d>
at::Tensor pairwise_iou_cpu(const char* op, const at::Tensor& boxes_a, const at::Tensor& boxes_b) {
  check_boxes(op, "boxes_a", boxes_a);
  check_boxes(op, "boxes_b", boxes_b);
  check_same_device(op, "boxes_b", boxes_b, boxes_a, "boxes_a");
  check_same_dtype(op, "boxes_b", boxes_b, boxes_a, "boxes_a");
  const int64_t n = boxes_a.size(0);
  const int64_t m = boxes_b.size(0);
  at::Tensor out = at::empty({n, m}, boxes_a.options());
  if (n == 0 || m == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(boxes_a.scalar_type(), "pointmae.box_iou", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = prepare_all<scalar_t, acc_t>(boxes_a);
    const auto b = prepare_all<scalar_t, acc_t>(boxes_b);
    const auto b_discs = bounding_discs(b);
    scalar_t* out_data = out.data_ptr<scalar_t>();
    // Rows are independent; a grain of ~16k pairs amortises the thread start-up on small matrices.
    const int64_t grain = std::max<int64_t>(1, 16384 / m);
    at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
      for (int64_t j0 = 0; j0 < m; j0 += kColumnTile) {
        const int64_t j1 = std::min(m, j0 + kColumnTile);
        for (int64_t i = begin; i < end; ++i) {
          const PreparedBox<acc_t>& box_a = a[i];
          scalar_t* row = out_data + i * m;
          for (int64_t j = j0; j < j1; ++j) {
            const acc_t* disc = &b_discs[3 * j];
            acc_t v = acc_t(0);
            if (!discs_apart(box_a.cx, box_a.cy, box_a.radius, disc[0], disc[1], disc[2])) {
              v = kIou3d ? iou_3d(box_a, b[j]) : iou_bev(box_a, b[j]);
            }
            row[j] = static_cast<scalar_t>(v);
          }
        }
      }
    });
  });
  return out;
}

at::Tensor box_iou_bev_cpu(const at::Tensor& boxes_a, const at::Tensor& boxes_b) {
  return pairwise_iou_cpu<false>("pointmae.box_iou_bev", boxes_a, boxes_b);
}

at::Tensor box_iou_3d_cpu(const at::Tensor& boxes_a, const at::Tensor& boxes_b) {
  return pairwise_iou_cpu<true>("pointmae.box_iou_3d", boxes_a, boxes_b);
}

// Greedy NMS: visit the boxes by descending score (a stable sort, so equal scores keep the lower
// index first); a visited box that no kept box suppressed is kept and suppresses every later box whose
// BEV IoU with it exceeds the threshold.
// Schedule: first, in ONE parallel region over the boxes, every box's list of later boxes (in score
// order) that it would suppress; then a sequential greedy pass over those lists. Candidates for a
// box come from a window of the boxes sorted by x centre (|dx| < own radius + the largest radius),
// so in a scene each box meets its neighbours only, not all N (the worst case, all boxes in one
// cluster or one huge box, is the full N^2 / 2 pairs, like the CUDA bitmask). Each list is written by
// one task and the greedy pass is sequential, so the result does not depend on the thread count.
// One region instead of one per kept box also matters on busy machines, where every region start
// can wait a scheduler time slice for its worker threads.
template <typename acc_t>
std::vector<int64_t> greedy_nms_sorted(const std::vector<PreparedBox<acc_t>>& b, acc_t threshold) {
  const int64_t n = static_cast<int64_t>(b.size());
  acc_t max_radius = acc_t(0);
  for (const auto& box : b) max_radius = std::max(max_radius, box.radius);
  // Bounding discs ordered by x centre (ties by score position, so the order is fully determined),
  // stored contiguously so that a window scan reads memory in order.
  struct DiscAt {
    acc_t x, y, radius;
    int32_t pos;  // position in the score order
  };
  std::vector<DiscAt> by_x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) by_x[i] = {b[i].cx, b[i].cy, b[i].radius, static_cast<int32_t>(i)};
  std::sort(by_x.begin(), by_x.end(), [](const DiscAt& u, const DiscAt& v) {
    return u.x < v.x || (u.x == v.x && u.pos < v.pos);
  });

  std::vector<std::vector<int32_t>> later_overlaps(static_cast<size_t>(n));
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const PreparedBox<acc_t>& box_i = b[i];
      const acc_t reach = box_i.radius + max_radius;
      // Window of x centres that can reach box i; the exact disc test below decides.
      const auto lo = std::lower_bound(by_x.begin(), by_x.end(), box_i.cx - reach,
                                       [](const DiscAt& d, acc_t x) { return d.x < x; });
      std::vector<int32_t>& row = later_overlaps[i];
      const acc_t x_end = box_i.cx + reach;
      for (auto it = lo; it != by_x.end() && !(it->x > x_end); ++it) {
        if (it->pos <= i) continue;
        if (discs_apart(box_i.cx, box_i.cy, box_i.radius, it->x, it->y, it->radius)) continue;
        if (iou_bev(box_i, b[it->pos]) > threshold) row.push_back(it->pos);
      }
    }
  });
  std::vector<uint8_t> suppressed(static_cast<size_t>(n), 0);
  std::vector<int64_t> kept;  // positions in the score order
  for (int64_t i = 0; i < n; ++i) {
    if (suppressed[i]) continue;
    kept.push_back(i);
    for (int32_t j : later_overlaps[i]) suppressed[j] = 1;
  }
  return kept;
}

at::Tensor nms_bev_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  const char* op = "pointmae.nms_bev";
  check_boxes(op, "boxes", boxes);
  check_scores(op, scores, boxes);
  check_iou_threshold(op, iou_threshold);
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  TORCH_CHECK_VALUE(n <= INT32_MAX, op, ": at most ", INT32_MAX, " boxes are supported, got ", n);
  const at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted_boxes = boxes.index_select(0, order);
  const int64_t* order_data = order.data_ptr<int64_t>();
  std::vector<int64_t> kept;
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(boxes.scalar_type(), "pointmae.nms_bev", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    kept = greedy_nms_sorted(prepare_all<scalar_t, acc_t>(sorted_boxes), static_cast<acc_t>(iou_threshold));
  });
  at::Tensor out = at::empty({static_cast<int64_t>(kept.size())}, boxes.options().dtype(at::kLong));
  int64_t* out_data = out.data_ptr<int64_t>();
  for (size_t k = 0; k < kept.size(); ++k) out_data[k] = order_data[kept[k]];
  return out;
}

}  // namespace
}  // namespace box_ops
}  // namespace pointmae

TORCH_LIBRARY_IMPL(pointmae, CPU, m) {
  m.impl("box_iou_bev", &pointmae::box_ops::box_iou_bev_cpu);
  m.impl("box_iou_3d", &pointmae::box_ops::box_iou_3d_cpu);
  m.impl("nms_bev", &pointmae::box_ops::nms_bev_cpu);
}
