// Farthest point sampling on CUDA, exact (the same indices as the CPU kernel and the naive
// reference: dist2 and the argmax order come from fps_core.h).
//
// Two schedules, both deterministic (the argmax reduction orders candidates by (min_dist desc,
// index asc), an associative rule, so the tree shape never changes the winner):
//  - many clouds, none large: one thread block per cloud runs the whole sampling loop (no launch
//    per sample; the batch fills the GPU).
//  - a few large clouds (a LiDAR sweep at batch size 1 would leave all but one SM idle with one block
//    per cloud): one launch per sample over a grid of (blocks per cloud, clouds). Every block updates
//    min_dist over its slice of the cloud and writes its best candidate; the last block of a cloud to
//    finish (an atomic counter, the "threadfence reduction" pattern of the CUDA samples) reduces the
//    per-block candidates to the next sample, so a sample costs one launch and no host sync.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "fps/fps_checks.h"
#include "fps/fps_core.h"

namespace pointmae {
namespace fps {
namespace {

constexpr int kThreads = 256;          // threads per block, both schedules (a multiple of 32)
constexpr int kPointsPerThread = 8;    // multi-block schedule: points per thread per sample
constexpr int64_t kMultiBlockMinPoints = 16384;  // smaller clouds use one block each

// (min_dist, local index) candidate of the argmax.
template <typename acc_t>
struct Candidate {
  acc_t dist;
  int64_t index;  // -1: none
};

template <typename acc_t>
__device__ __forceinline__ Candidate<acc_t> pick(Candidate<acc_t> a, Candidate<acc_t> b) {
  if (b.index < 0) return a;
  if (a.index < 0) return b;
  return better(b.dist, b.index, a.dist, a.index) ? b : a;
}

// Block-wide argmax; every thread receives the winner. `shared` holds kThreads / 32 candidates.
template <typename acc_t>
__device__ Candidate<acc_t> block_argmax(Candidate<acc_t> c, Candidate<acc_t>* shared) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1) {
    Candidate<acc_t> other;
    other.dist = __shfl_down_sync(0xffffffffu, c.dist, offset);
    other.index = __shfl_down_sync(0xffffffffu, c.index, offset);
    c = pick(c, other);
  }
  __syncthreads();  // `shared` may still be read from the previous call
  if (lane == 0) shared[warp] = c;
  __syncthreads();
  Candidate<acc_t> best = shared[0];
  for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) best = pick(best, shared[w]);
  return best;
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t coord(const scalar_t* points, int64_t row, int axis) {
  return static_cast<acc_t>(points[3 * row + axis]);
}

// Applies sample s to min_dist[i] (the sample itself becomes kSelected) and returns the new value.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t update_point(const scalar_t* cloud, acc_t* min_dist, int64_t i, int64_t sample,
                                              acc_t sx, acc_t sy, acc_t sz) {
  const acc_t d = dist2<acc_t>(coord<scalar_t, acc_t>(cloud, i, 0), coord<scalar_t, acc_t>(cloud, i, 1),
                               coord<scalar_t, acc_t>(cloud, i, 2), sx, sy, sz);
  const acc_t old = min_dist[i];
  acc_t m = d < old ? d : old;
  if (i == sample) m = static_cast<acc_t>(kSelected);
  min_dist[i] = m;
  return m;
}

// ---------------------------------------------------------------- one block per cloud
template <typename scalar_t, typename acc_t>
__global__ void fps_block_per_cloud_kernel(const scalar_t* __restrict__ points, const int64_t* __restrict__ offsets,
                                           const int64_t* __restrict__ start_idx, int64_t num_samples,
                                           acc_t* __restrict__ min_dist, int64_t* __restrict__ out) {
  __shared__ Candidate<acc_t> shared[kThreads / 32];
  const int64_t b = blockIdx.x;
  const int64_t base = offsets[b];
  const int64_t n = offsets[b + 1] - base;
  const scalar_t* cloud = points + 3 * base;
  acc_t* md = min_dist + base;
  int64_t* row = out + b * num_samples;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) md[i] = std::numeric_limits<acc_t>::infinity();
  int64_t sample = start_idx[b];
  for (int64_t k = 0; k < num_samples; ++k) {
    if (threadIdx.x == 0) row[k] = base + sample;
    if (k + 1 == num_samples) break;
    const acc_t sx = coord<scalar_t, acc_t>(cloud, sample, 0);
    const acc_t sy = coord<scalar_t, acc_t>(cloud, sample, 1);
    const acc_t sz = coord<scalar_t, acc_t>(cloud, sample, 2);
    Candidate<acc_t> best{static_cast<acc_t>(kSelected), -1};
    // Each thread owns the same indices every iteration, so its min_dist writes need no sync.
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const acc_t m = update_point<scalar_t, acc_t>(cloud, md, i, sample, sx, sy, sz);
      if (m > static_cast<acc_t>(kSelected)) best = pick(best, Candidate<acc_t>{m, i});
    }
    sample = block_argmax(best, shared).index;
  }
}

// ---------------------------------------------------------------- many blocks per cloud
template <typename acc_t>
__global__ void fps_multi_block_init_kernel(const int64_t* __restrict__ offsets, const int64_t* __restrict__ start_idx,
                                            int64_t batch, int64_t total, int64_t num_samples,
                                            acc_t* __restrict__ min_dist, int64_t* __restrict__ current,
                                            int* __restrict__ counters, int64_t* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total; i += stride) {
    min_dist[i] = std::numeric_limits<acc_t>::infinity();
  }
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < batch; b += stride) {
    current[b] = start_idx[b];
    counters[b] = 0;
    out[b * num_samples] = offsets[b] + start_idx[b];
  }
}

// One sample step for every cloud: blockIdx.y = cloud, blockIdx.x = slice of `slice` points.
template <typename scalar_t, typename acc_t>
__global__ void fps_multi_block_step_kernel(const scalar_t* __restrict__ points, const int64_t* __restrict__ offsets,
                                            int64_t slice, int64_t num_samples, int64_t k,
                                            acc_t* __restrict__ min_dist, int64_t* __restrict__ current,
                                            acc_t* __restrict__ partial_dist, int64_t* __restrict__ partial_index,
                                            int* __restrict__ counters, int64_t* __restrict__ out) {
  __shared__ Candidate<acc_t> shared[kThreads / 32];
  __shared__ bool is_last;
  const int64_t b = blockIdx.y;
  const int64_t base = offsets[b];
  const int64_t n = offsets[b + 1] - base;
  const scalar_t* cloud = points + 3 * base;
  acc_t* md = min_dist + base;
  const int64_t sample = current[b];
  const acc_t sx = coord<scalar_t, acc_t>(cloud, sample, 0);
  const acc_t sy = coord<scalar_t, acc_t>(cloud, sample, 1);
  const acc_t sz = coord<scalar_t, acc_t>(cloud, sample, 2);

  Candidate<acc_t> best{static_cast<acc_t>(kSelected), -1};
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * slice;
  const int64_t end = begin + slice < n ? begin + slice : n;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const acc_t m = update_point<scalar_t, acc_t>(cloud, md, i, sample, sx, sy, sz);
    if (m > static_cast<acc_t>(kSelected)) best = pick(best, Candidate<acc_t>{m, i});
  }
  best = block_argmax(best, shared);

  const int64_t slot = b * gridDim.x + blockIdx.x;
  if (threadIdx.x == 0) {
    partial_dist[slot] = best.dist;
    partial_index[slot] = best.index;
    __threadfence();  // publish the candidate before announcing it
    is_last = atomicAdd(&counters[b], 1) == static_cast<int>(gridDim.x) - 1;
  }
  __syncthreads();
  if (!is_last) return;

  // The last block of cloud b: reduce the per-block candidates (read past L1: other SMs wrote them).
  __threadfence();
  Candidate<acc_t> winner{static_cast<acc_t>(kSelected), -1};
  for (int64_t j = threadIdx.x; j < gridDim.x; j += blockDim.x) {
    const Candidate<acc_t> c{__ldcg(partial_dist + b * gridDim.x + j), __ldcg(partial_index + b * gridDim.x + j)};
    winner = pick(winner, c);
  }
  winner = block_argmax(winner, shared);
  if (threadIdx.x == 0) {
    current[b] = winner.index;
    out[b * num_samples + k + 1] = base + winner.index;
    counters[b] = 0;  // ready for the next launch (kernel boundaries order it)
  }
}

at::Tensor fps_cuda(const at::Tensor& points, const at::Tensor& offsets, int64_t num_samples,
                    const at::Tensor& start_idx) {
  const std::vector<int64_t> off = check_inputs(points, offsets, num_samples, start_idx);
  TORCH_CHECK(points.is_cuda(), kOp, ": CUDA kernel called with `points` on ", points.device());
  const c10::cuda::CUDAGuard guard(points.device());
  const int64_t batch = static_cast<int64_t>(off.size()) - 1;
  auto out = at::empty({batch, num_samples}, points.options().dtype(at::kLong));
  if (batch == 0 || num_samples == 0) return out;

  int64_t max_n = 0;
  for (int64_t b = 0; b < batch; ++b) max_n = std::max(max_n, off[b + 1] - off[b]);
  const auto pts = points.contiguous();
  const auto offs = offsets.contiguous();
  const auto start = start_idx.contiguous();
  const int64_t total = pts.size(0);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  // One block per cloud when the batch alone fills the GPU or no cloud is large.
  const bool block_per_cloud = max_n < kMultiBlockMinPoints || batch >= 2 * sms;

  AT_DISPATCH_FLOATING_TYPES_AND_HALF(pts.scalar_type(), "pointmae_fps_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto min_dist = at::empty({total}, pts.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    if (block_per_cloud) {
      TORCH_CHECK(batch <= std::numeric_limits<int32_t>::max(), kOp, ": too many clouds for one launch: ", batch);
      fps_block_per_cloud_kernel<scalar_t, acc_t><<<static_cast<unsigned>(batch), kThreads, 0, stream>>>(
          pts.data_ptr<scalar_t>(), offs.data_ptr<int64_t>(), start.data_ptr<int64_t>(), num_samples,
          min_dist.data_ptr<acc_t>(), out.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const int64_t slice = static_cast<int64_t>(kThreads) * kPointsPerThread;
    const int64_t blocks_per_cloud = (max_n + slice - 1) / slice;
    TORCH_CHECK(batch <= 65535 && blocks_per_cloud <= std::numeric_limits<int32_t>::max(), kOp,
                ": launch too large (", batch, " clouds x ", blocks_per_cloud, " blocks)");
    auto current = at::empty({batch}, pts.options().dtype(at::kLong));
    auto counters = at::empty({batch}, pts.options().dtype(at::kInt));
    auto partial_dist = at::empty({batch * blocks_per_cloud}, min_dist.options());
    auto partial_index = at::empty({batch * blocks_per_cloud}, pts.options().dtype(at::kLong));
    const int64_t init_work = std::max(total, batch);
    const unsigned init_blocks =
        static_cast<unsigned>(std::min<int64_t>((init_work + kThreads - 1) / kThreads, 65535));
    fps_multi_block_init_kernel<acc_t><<<init_blocks, kThreads, 0, stream>>>(
        offs.data_ptr<int64_t>(), start.data_ptr<int64_t>(), batch, total, num_samples, min_dist.data_ptr<acc_t>(),
        current.data_ptr<int64_t>(), counters.data_ptr<int>(), out.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const dim3 grid(static_cast<unsigned>(blocks_per_cloud), static_cast<unsigned>(batch));
    for (int64_t k = 0; k + 1 < num_samples; ++k) {
      fps_multi_block_step_kernel<scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(
          pts.data_ptr<scalar_t>(), offs.data_ptr<int64_t>(), slice, num_samples, k, min_dist.data_ptr<acc_t>(),
          current.data_ptr<int64_t>(), partial_dist.data_ptr<acc_t>(), partial_index.data_ptr<int64_t>(),
          counters.data_ptr<int>(), out.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return out;
}

}  // namespace
}  // namespace fps
}  // namespace pointmae

TORCH_LIBRARY_IMPL(pointmae, CUDA, m) { m.impl("fps", &pointmae::fps::fps_cuda); }
