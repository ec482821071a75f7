// CUDA kernels of the rotated box ops: tiled IoU matrices (BEV and 3D) and bitmask BEV NMS.
// The per-pair maths is in box_ops_core.h, shared with the CPU kernels.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "box_ops/box_ops_checks.h"
#include "box_ops/box_ops_core.h"

namespace pointmae {
namespace box_ops {
namespace {

// IoU matrix: one thread per (row, column) pair of a kTile x kTile block. Each block first prepares
// its kTile rows of `a` and kTile columns of `b` into shared memory (cos/sin once per box, not once
// per pair), then every thread computes one pair; consecutive threads write consecutive columns.
constexpr int kTile = 16;

template <typename scalar_t, bool kIou3d>
__global__ void pairwise_iou_kernel(const scalar_t* __restrict__ a, int64_t n, const scalar_t* __restrict__ b,
                                    int64_t m, scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ PreparedBox<acc_t> tile_a[kTile];
  __shared__ PreparedBox<acc_t> tile_b[kTile];
  const int tx = threadIdx.x;  // column within the tile
  const int ty = threadIdx.y;  // row within the tile
  const int flat = ty * kTile + tx;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kTile;
  // Grid-stride over row tiles: gridDim.y is capped at 65535, n is not.
  for (int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTile; row0 < n;
       row0 += static_cast<int64_t>(gridDim.y) * kTile) {
    if (flat < kTile) {
      const int64_t r = row0 + flat;
      if (r < n) tile_a[flat] = prepare_box<acc_t>(a + r * kBoxDim);
    } else if (flat < 2 * kTile) {
      const int64_t c = col0 + (flat - kTile);
      if (c < m) tile_b[flat - kTile] = prepare_box<acc_t>(b + c * kBoxDim);
    }
    __syncthreads();
    const int64_t r = row0 + ty;
    const int64_t c = col0 + tx;
    if (r < n && c < m) {
      const acc_t v = kIou3d ? iou_3d(tile_a[ty], tile_b[tx]) : iou_bev(tile_a[ty], tile_b[tx]);
      out[r * m + c] = static_cast<scalar_t>(v);
    }
    __syncthreads();  // the tiles are overwritten in the next iteration
  }
}

template <bool kIou3d>
at::Tensor pairwise_iou_cuda(const char* op, const at::Tensor& boxes_a, const at::Tensor& boxes_b) {
  check_boxes(op, "boxes_a", boxes_a);
  check_boxes(op, "boxes_b", boxes_b);
  check_same_device(op, "boxes_b", boxes_b, boxes_a, "boxes_a");
  check_same_dtype(op, "boxes_b", boxes_b, boxes_a, "boxes_a");
  const c10::cuda::CUDAGuard guard(boxes_a.device());
  const int64_t n = boxes_a.size(0);
  const int64_t m = boxes_b.size(0);
  at::Tensor out = at::empty({n, m}, boxes_a.options());
  if (n == 0 || m == 0) return out;
  const at::Tensor a = boxes_a.narrow(1, 0, kBoxDim).contiguous();
  const at::Tensor b = boxes_b.narrow(1, 0, kBoxDim).contiguous();
  const int64_t col_tiles = (m + kTile - 1) / kTile;
  const int64_t row_tiles = (n + kTile - 1) / kTile;
  TORCH_CHECK_VALUE(col_tiles <= 2147483647LL, op, ": `boxes_b` has too many rows for one launch, got ", m);
  const dim3 grid(static_cast<unsigned>(col_tiles), static_cast<unsigned>(std::min<int64_t>(row_tiles, 65535)));
  const dim3 block(kTile, kTile);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(boxes_a.scalar_type(), "pointmae.box_iou", [&] {
    pairwise_iou_kernel<scalar_t, kIou3d><<<grid, block, 0, stream>>>(
        a.data_ptr<scalar_t>(), n, b.data_ptr<scalar_t>(), m, out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor box_iou_bev_cuda(const at::Tensor& boxes_a, const at::Tensor& boxes_b) {
  return pairwise_iou_cuda<false>("pointmae.box_iou_bev", boxes_a, boxes_b);
}

at::Tensor box_iou_3d_cuda(const at::Tensor& boxes_a, const at::Tensor& boxes_b) {
  return pairwise_iou_cuda<true>("pointmae.box_iou_3d", boxes_a, boxes_b);
}

// NMS, bitmask formulation: boxes sorted by descending score are cut into blocks of 64. Block
// (row block rb, column block cb) with cb >= rb writes, for each of its 64 rows i, one 64-bit word
// whose bit k says "IoU(i, cb*64 + k) > threshold and cb*64 + k > i". A sequential pass over the
// sorted boxes then keeps a box when no earlier kept box has its bit set. Every word is computed by
// exactly one thread and the pass is sequential, so the result is deterministic.
constexpr int kNmsBlock = 64;

template <typename scalar_t>
__global__ void nms_mask_kernel(const scalar_t* __restrict__ sorted_boxes, int64_t n, int64_t col_blocks,
                                at::opmath_type<scalar_t> threshold, uint64_t* __restrict__ mask) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row_block = blockIdx.y;
  const int64_t col_block = blockIdx.x;
  if (col_block < row_block) return;  // only j > i matters; those words stay zero
  __shared__ PreparedBox<acc_t> cols[kNmsBlock];
  const int t = threadIdx.x;
  const int64_t col_start = col_block * kNmsBlock;
  const int col_count = static_cast<int>(min(static_cast<int64_t>(kNmsBlock), n - col_start));
  if (t < col_count) cols[t] = prepare_box<acc_t>(sorted_boxes + (col_start + t) * kBoxDim);
  __syncthreads();
  const int64_t i = row_block * kNmsBlock + t;
  if (i >= n) return;
  const PreparedBox<acc_t> row = prepare_box<acc_t>(sorted_boxes + i * kBoxDim);
  uint64_t bits = 0;
  // On the diagonal block only the columns after row i are compared.
  const int first = (col_block == row_block) ? t + 1 : 0;
  for (int k = first; k < col_count; ++k) {
    if (iou_bev(row, cols[k]) > threshold) bits |= (uint64_t(1) << k);
  }
  mask[i * col_blocks + col_block] = bits;
}

at::Tensor nms_bev_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  const char* op = "pointmae.nms_bev";
  check_boxes(op, "boxes", boxes);
  check_scores(op, scores, boxes);
  check_iou_threshold(op, iou_threshold);
  const c10::cuda::CUDAGuard guard(boxes.device());
  const int64_t n = boxes.size(0);
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const int64_t col_blocks = (n + kNmsBlock - 1) / kNmsBlock;
  TORCH_CHECK_VALUE(col_blocks <= 65535, op, ": at most ", 65535LL * kNmsBlock,
                    " boxes are supported on CUDA, got ", n);
  // Stable sort: equal scores keep the lower index first, as on the CPU.
  const at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted_boxes = boxes.narrow(1, 0, kBoxDim).index_select(0, order).contiguous();
  at::Tensor mask = at::zeros({n * col_blocks}, boxes.options().dtype(at::kLong));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(col_blocks));
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(boxes.scalar_type(), "pointmae.nms_bev", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    nms_mask_kernel<scalar_t><<<grid, kNmsBlock, 0, stream>>>(
        sorted_boxes.data_ptr<scalar_t>(), n, col_blocks, static_cast<acc_t>(iou_threshold),
        reinterpret_cast<uint64_t*>(mask.data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // Sequential pass on the host (the mask is n * n / 8 bytes: 2 MiB for 4096 boxes).
  const at::Tensor mask_host = mask.to(at::kCPU);
  const at::Tensor order_host = order.to(at::kCPU);
  const uint64_t* mask_data = reinterpret_cast<const uint64_t*>(mask_host.data_ptr<int64_t>());
  const int64_t* order_data = order_host.data_ptr<int64_t>();
  std::vector<uint64_t> removed(static_cast<size_t>(col_blocks), 0);
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t block = i / kNmsBlock;
    const int bit = static_cast<int>(i % kNmsBlock);
    if (removed[block] & (uint64_t(1) << bit)) continue;
    kept.push_back(order_data[i]);
    const uint64_t* row = mask_data + i * col_blocks;
    for (int64_t cb = block; cb < col_blocks; ++cb) removed[cb] |= row[cb];
  }
  at::Tensor kept_host = at::empty({static_cast<int64_t>(kept.size())}, at::TensorOptions().dtype(at::kLong));
  std::copy(kept.begin(), kept.end(), kept_host.data_ptr<int64_t>());
  return kept_host.to(boxes.device());
}

}  // namespace
}  // namespace box_ops
}  // namespace pointmae

TORCH_LIBRARY_IMPL(pointmae, CUDA, m) {
  m.impl("box_iou_bev", &pointmae::box_ops::box_iou_bev_cuda);
  m.impl("box_iou_3d", &pointmae::box_ops::box_iou_3d_cuda);
  m.impl("nms_bev", &pointmae::box_ops::nms_bev_cuda);
}
