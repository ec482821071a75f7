// CUDA kernels of gather_points and its deterministic adjoint.
//
// Forward: one thread per output value. Backward: the inverse index of idx (a stable sort, see
// inverse_index.h) lists every point's entries in increasing order; one thread per (point, channel)
// sums them in that order. No floating-point atomics, so the result is the same on every run.
#include "gather/gather_checks.h"
#include "gather/gather_core.h"
#include "gather/inverse_index.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

namespace pointmae {
namespace {

constexpr int kThreads = 256;

inline int64_t blocks_for(int64_t n) {
  // Grid-stride loops below cover any n; the cap keeps the grid within limits.
  return std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 20);
}

template <typename scalar_t>
__global__ void gather_points_kernel(const scalar_t* __restrict__ features, const int64_t* __restrict__ idx,
                                     int64_t entries, int64_t channels, scalar_t* __restrict__ out) {
  const int64_t total = entries * channels;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(blockDim.x) * gridDim.x) {
    const int64_t e = t / channels;
    const int64_t c = t - e * channels;
    out[t] = gather::gathered_value(features, channels, idx[e], c);
  }
}

template <typename scalar_t>
__global__ void gather_points_backward_kernel(const scalar_t* __restrict__ grad_out,
                                              const int64_t* __restrict__ row_ptr,
                                              const int64_t* __restrict__ entries, int64_t num_points,
                                              int64_t channels, scalar_t* __restrict__ grad_features) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = num_points * channels;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(blockDim.x) * gridDim.x) {
    const int64_t p = t / channels;
    const int64_t c = t - p * channels;
    grad_features[t] = static_cast<scalar_t>(
        gather::ordered_entry_sum<scalar_t, acc_t>(grad_out, channels, entries, row_ptr[p], row_ptr[p + 1], c));
  }
}

at::Tensor gather_points_cuda(const at::Tensor& features_in, const at::Tensor& idx_in) {
  gather::check_forward(features_in, idx_in);
  const c10::cuda::CUDAGuard guard(features_in.device());
  const auto features = features_in.contiguous();
  const auto idx = idx_in.contiguous();
  const int64_t entries = idx.numel();
  const int64_t channels = features.size(1);
  auto out = at::empty({idx.size(0), idx.size(1), channels}, features.options());
  if (entries == 0 || channels == 0) return out;
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(features.scalar_type(), "gather_points_cuda", [&] {
    gather_points_kernel<scalar_t><<<blocks_for(entries * channels), kThreads, 0, stream>>>(
        features.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), entries, channels, out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor gather_points_backward_cuda(const at::Tensor& grad_out_in, const at::Tensor& idx_in, int64_t num_points) {
  gather::check_backward(grad_out_in, idx_in, num_points);
  const c10::cuda::CUDAGuard guard(grad_out_in.device());
  const auto grad_out = grad_out_in.contiguous();
  const auto idx = idx_in.contiguous();
  const int64_t channels = grad_out.size(2);
  auto grad_features = at::zeros({num_points, channels}, grad_out.options());
  if (idx.numel() == 0 || channels == 0 || num_points == 0) return grad_features;
  const auto inverse = inverse_index_aten(idx.view({-1}), num_points);
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(grad_out.scalar_type(), "gather_points_backward_cuda", [&] {
    gather_points_backward_kernel<scalar_t><<<blocks_for(num_points * channels), kThreads, 0, stream>>>(
        grad_out.data_ptr<scalar_t>(), inverse.first.data_ptr<int64_t>(), inverse.second.data_ptr<int64_t>(),
        num_points, channels, grad_features.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_features;
}

}  // namespace

TORCH_LIBRARY_IMPL(pointmae, CUDA, m) {
  m.impl("gather_points", &gather_points_cuda);
  m.impl("gather_points_backward", &gather_points_backward_cuda);
}

}  // namespace pointmae
