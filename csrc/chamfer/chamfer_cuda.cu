// CUDA kernels of chamfer_distance and its deterministic backward.
//
// Forward: one thread per query point, over the whole packed batch, so that even a single cloud
// fills the GPU. A block's queries may span several (small) clouds: the block walks the union of
// their partner ranges in tiles staged through shared memory, and every thread only compares against
// the part of each tile that belongs to its own cloud. Partner points are visited in increasing index
// with a strict `<`, which keeps ties at the lowest index; queries whose distances are never below
// +inf (overflow, NaN) get a scalar pass with the full ordering of chamfer_core.h. Memory O(Nx + Ny).
// Launched once per direction.
//
// Backward: one thread per point: its own term plus the terms of the partner points that chose it,
// visited in increasing order through an inverse index (stable sort of the nearest indices), so the
// sums are deterministic and no atomics are used.
#include "chamfer/chamfer_checks.h"
#include "chamfer/chamfer_core.h"
#include "gather/inverse_index.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>

namespace pointmae {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 512;

// The cloud b with offsets[b] <= row < offsets[b + 1] (empty clouds are skipped), for 0 <= row < N.
__device__ __forceinline__ int64_t cloud_of(const int64_t* __restrict__ offsets, int64_t clouds, int64_t row) {
  int64_t lo = 0, hi = clouds - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (offsets[mid + 1] <= row) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

template <typename scalar_t>
__global__ void nearest_kernel(const scalar_t* __restrict__ query, const int64_t* __restrict__ query_offsets,
                               int64_t num_queries, const scalar_t* __restrict__ partner,
                               const int64_t* __restrict__ partner_offsets, int64_t clouds,
                               scalar_t* __restrict__ out_dist, int64_t* __restrict__ out_index) {
  using T = at::opmath_type<scalar_t>;
  __shared__ T tile_x[kTile];
  __shared__ T tile_y[kTile];
  __shared__ T tile_z[kTile];
  const int64_t block_first = blockIdx.x * int64_t(blockDim.x);
  if (block_first >= num_queries) return;  // uniform across the block
  const int64_t block_last = min(block_first + int64_t(blockDim.x), num_queries) - 1;
  const int64_t span_begin = partner_offsets[cloud_of(query_offsets, clouds, block_first)];
  const int64_t span_end = partner_offsets[cloud_of(query_offsets, clouds, block_last) + 1];

  const int64_t q = block_first + threadIdx.x;
  const bool active = q < num_queries;
  T qx = T(0), qy = T(0), qz = T(0);
  int64_t lo = 0, hi = 0;
  if (active) {
    const int64_t b = cloud_of(query_offsets, clouds, q);
    lo = partner_offsets[b];
    hi = partner_offsets[b + 1];
    qx = static_cast<T>(query[3 * q]);
    qy = static_cast<T>(query[3 * q + 1]);
    qz = static_cast<T>(query[3 * q + 2]);
  }
  T best = std::numeric_limits<T>::infinity();
  int64_t best_j = -1;
  for (int64_t t0 = span_begin; t0 < span_end; t0 += kTile) {
    const int64_t count = min(int64_t(kTile), span_end - t0);
    for (int64_t s = threadIdx.x; s < count; s += blockDim.x) {
      tile_x[s] = static_cast<T>(partner[3 * (t0 + s)]);
      tile_y[s] = static_cast<T>(partner[3 * (t0 + s) + 1]);
      tile_z[s] = static_cast<T>(partner[3 * (t0 + s) + 2]);
    }
    __syncthreads();
    const int64_t j_begin = max(t0, lo);
    const int64_t j_end = min(t0 + count, hi);
    for (int64_t j = j_begin; j < j_end; ++j) {
      const T d = squared_distance(qx, qy, qz, tile_x[j - t0], tile_y[j - t0], tile_z[j - t0]);
      // `best` holds a number throughout, so `<` is chamfer::closer here (NaN never taken).
      if (d < best) {
        best = d;
        best_j = j;
      }
    }
    __syncthreads();
  }
  if (!active) return;
  if (best_j < 0 && hi > lo) {
    // No distance below +inf: the full ordering (first +inf, else the first point with NaN).
    for (int64_t j = lo; j < hi; ++j) {
      const T d = squared_distance(qx, qy, qz, static_cast<T>(partner[3 * j]),
                                            static_cast<T>(partner[3 * j + 1]), static_cast<T>(partner[3 * j + 2]));
      if (best_j < 0 || chamfer::closer(d, best)) {
        best = d;
        best_j = j;
      }
    }
  }
  out_dist[q] = static_cast<scalar_t>(best);
  out_index[q] = best_j;
}

template <typename scalar_t>
__global__ void distance_backward_kernel(const scalar_t* __restrict__ self, const scalar_t* __restrict__ partner,
                                         const scalar_t* __restrict__ grad_self,
                                         const scalar_t* __restrict__ grad_partner,
                                         const int64_t* __restrict__ nearest, const int64_t* __restrict__ row_ptr,
                                         const int64_t* __restrict__ entries, int64_t n,
                                         scalar_t* __restrict__ out) {
  using T = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const T ax = static_cast<T>(self[3 * i]), ay = static_cast<T>(self[3 * i + 1]), az = static_cast<T>(self[3 * i + 2]);
    T gx = T(0), gy = T(0), gz = T(0);
    const int64_t own = nearest[i];
    if (own >= 0) {
      chamfer::add_distance_gradient<T>(static_cast<T>(grad_self[i]), ax, ay, az, static_cast<T>(partner[3 * own]),
                                        static_cast<T>(partner[3 * own + 1]), static_cast<T>(partner[3 * own + 2]),
                                        gx, gy, gz);
    }
    for (int64_t k = row_ptr[i]; k < row_ptr[i + 1]; ++k) {
      const int64_t j = entries[k];
      chamfer::add_distance_gradient<T>(static_cast<T>(grad_partner[j]), ax, ay, az, static_cast<T>(partner[3 * j]),
                                        static_cast<T>(partner[3 * j + 1]), static_cast<T>(partner[3 * j + 2]), gx,
                                        gy, gz);
    }
    out[3 * i] = static_cast<scalar_t>(gx);
    out[3 * i + 1] = static_cast<scalar_t>(gy);
    out[3 * i + 2] = static_cast<scalar_t>(gz);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> chamfer_distance_cuda(const at::Tensor& x_in,
                                                                                 const at::Tensor& x_offsets_in,
                                                                                 const at::Tensor& y_in,
                                                                                 const at::Tensor& y_offsets_in) {
  const int64_t clouds = check_point_pair("pointmae.chamfer_distance", "x", x_in, "x_offsets", x_offsets_in, "y",
                                          y_in, "y_offsets", y_offsets_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous(), y = y_in.contiguous();
  const auto xo = x_offsets_in.contiguous(), yo = y_offsets_in.contiguous();
  const int64_t nx = x.size(0), ny = y.size(0);
  auto dist_x = at::empty({nx}, x.options());
  auto dist_y = at::empty({ny}, y.options());
  auto idx_x = at::empty({nx}, x.options().dtype(at::kLong));
  auto idx_y = at::empty({ny}, y.options().dtype(at::kLong));
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "chamfer_distance_cuda", [&] {
    if (nx > 0) {
      nearest_kernel<scalar_t><<<(nx + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
          x.data_ptr<scalar_t>(), xo.data_ptr<int64_t>(), nx, y.data_ptr<scalar_t>(), yo.data_ptr<int64_t>(), clouds,
          dist_x.data_ptr<scalar_t>(), idx_x.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (ny > 0) {
      nearest_kernel<scalar_t><<<(ny + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
          y.data_ptr<scalar_t>(), yo.data_ptr<int64_t>(), ny, x.data_ptr<scalar_t>(), xo.data_ptr<int64_t>(), clouds,
          dist_y.data_ptr<scalar_t>(), idx_y.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {dist_x, idx_x, dist_y, idx_y};
}

std::tuple<at::Tensor, at::Tensor> chamfer_distance_backward_cuda(const at::Tensor& grad_dist_x_in,
                                                                   const at::Tensor& grad_dist_y_in,
                                                                   const at::Tensor& x_in, const at::Tensor& y_in,
                                                                   const at::Tensor& idx_x_in,
                                                                   const at::Tensor& idx_y_in) {
  chamfer::check_backward(grad_dist_x_in, grad_dist_y_in, x_in, y_in, idx_x_in, idx_y_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous(), y = y_in.contiguous();
  const auto gdx = grad_dist_x_in.contiguous(), gdy = grad_dist_y_in.contiguous();
  const auto idx_x = idx_x_in.contiguous(), idx_y = idx_y_in.contiguous();
  const int64_t nx = x.size(0), ny = y.size(0);
  auto grad_x = at::empty_like(x);
  auto grad_y = at::empty_like(y);
  // For every x point, the y points whose nearest it is (and the reverse), in increasing order.
  const auto chosen_by_y = inverse_index_aten(idx_y, nx);
  const auto chosen_by_x = inverse_index_aten(idx_x, ny);
  const auto stream = at::cuda::getCurrentCUDAStream();
  const auto blocks = [](int64_t n) { return std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 20); };
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "chamfer_distance_backward_cuda", [&] {
    if (nx > 0) {
      distance_backward_kernel<scalar_t><<<blocks(nx), kThreads, 0, stream>>>(
          x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), gdx.data_ptr<scalar_t>(), gdy.data_ptr<scalar_t>(),
          idx_x.data_ptr<int64_t>(), chosen_by_y.first.data_ptr<int64_t>(), chosen_by_y.second.data_ptr<int64_t>(), nx,
          grad_x.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (ny > 0) {
      distance_backward_kernel<scalar_t><<<blocks(ny), kThreads, 0, stream>>>(
          y.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), gdy.data_ptr<scalar_t>(), gdx.data_ptr<scalar_t>(),
          idx_y.data_ptr<int64_t>(), chosen_by_x.first.data_ptr<int64_t>(), chosen_by_x.second.data_ptr<int64_t>(), ny,
          grad_y.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {grad_x, grad_y};
}

}  // namespace

TORCH_LIBRARY_IMPL(pointmae, CUDA, m) {
  m.impl("chamfer_distance", &chamfer_distance_cuda);
  m.impl("chamfer_distance_backward", &chamfer_distance_backward_cuda);
}

}  // namespace pointmae
