// CUDA `knn` and `ball_query`: tiled brute force, one thread per query.
//
// Work split: every block serves up to kThreads queries of ONE cloud (the host cuts each cloud's
// query range into blocks), so a single large cloud still fills the GPU with Q / kThreads blocks.
// The block streams its cloud's points through shared memory in tiles of kThreads points; every
// thread scans the tile against its query and keeps its best k candidates in a sorted insertion
// buffer (neighbors_core.h). For k <= 128 the buffer is a per-thread array sized by a template bucket
// (16/32/64/128; local memory, L1-resident); for larger k the buffer is the thread's output row in
// global memory, slower but with no limit on k.
//
// Exactness: distances use the shared non-contracted formula, candidates are ordered by
// (dist2, index), so the result is bit-identical to the CPU k-d tree and the reference, and
// deterministic (no atomics, no order-dependent reductions). float16 inputs are computed in float32
// and the distances rounded to float16 on output.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "neighbors/neighbors_checks.h"
#include "neighbors/neighbors_core.h"

namespace pointmae {
namespace neighbors {
namespace {

constexpr int kThreads = 128;

template <typename T>
struct ComputeType {
  using type = T;
};
template <>
struct ComputeType<at::Half> {
  using type = float;
};

// kBuffer > 0: the candidates live in a per-thread array of that size (k <= kBuffer).
// kBuffer == 0: they live in the output row itself (any k).
template <typename scalar_t, int kBuffer>
__global__ void neighbors_kernel(const scalar_t* __restrict__ query, const scalar_t* __restrict__ points,
                                 const int64_t* __restrict__ block_cloud, const int64_t* __restrict__ block_first_query,
                                 const int64_t* __restrict__ query_offsets, const int64_t* __restrict__ point_offsets,
                                 typename ComputeType<scalar_t>::type max_dist2, int64_t k,
                                 scalar_t* __restrict__ out_dist, int64_t* __restrict__ out_index) {
  using acc_t = typename ComputeType<scalar_t>::type;
  __shared__ acc_t tile[3 * kThreads];

  const int64_t cloud = block_cloud[blockIdx.x];
  const int64_t q = block_first_query[blockIdx.x] + threadIdx.x;
  const bool active = q < query_offsets[cloud + 1];
  const int64_t point_begin = point_offsets[cloud];
  const int64_t point_end = point_offsets[cloud + 1];

  acc_t qx = 0, qy = 0, qz = 0;
  if (active) {
    qx = static_cast<acc_t>(query[3 * q]);
    qy = static_cast<acc_t>(query[3 * q + 1]);
    qz = static_cast<acc_t>(query[3 * q + 2]);
  }

  // Local buffer for small k; for kBuffer == 0 these one-element arrays are unused.
  acc_t local_dist[kBuffer > 0 ? kBuffer : 1];
  int32_t local_index[kBuffer > 0 ? kBuffer : 1];
  // For kBuffer == 0 the output row is the buffer: store acc_t there only when it is the output
  // dtype (the host only takes that path for float and double).
  acc_t* row_dist = reinterpret_cast<acc_t*>(out_dist + (active ? q : 0) * k);
  int64_t* row_index = out_index + (active ? q : 0) * k;

  SortedCandidates<acc_t, int32_t> small{local_dist, local_index, k, 0};
  SortedCandidates<acc_t, int64_t> large{row_dist, row_index, k, 0};

  for (int64_t tile_begin = point_begin; tile_begin < point_end; tile_begin += kThreads) {
    const int64_t tile_count = point_end - tile_begin < kThreads ? point_end - tile_begin : kThreads;
    // Every thread of the block helps loading, active or not, and reaches both barriers.
    if (threadIdx.x < tile_count) {
      const int64_t p = tile_begin + threadIdx.x;
      tile[3 * threadIdx.x] = static_cast<acc_t>(points[3 * p]);
      tile[3 * threadIdx.x + 1] = static_cast<acc_t>(points[3 * p + 1]);
      tile[3 * threadIdx.x + 2] = static_cast<acc_t>(points[3 * p + 2]);
    }
    __syncthreads();
    if (active) {
      for (int j = 0; j < tile_count; ++j) {
        const acc_t d = squared_distance(qx, qy, qz, tile[3 * j], tile[3 * j + 1], tile[3 * j + 2]);
        if (d > max_dist2) continue;
        // Points are scanned in increasing index, so a candidate tying the worst one loses: the
        // early rejection below agrees with the (dist2, index) order of offer().
        if (kBuffer > 0) {
          if (small.full() && !(d < small.worst())) continue;
          small.offer(d, static_cast<int32_t>(tile_begin + j - point_begin));
        } else {
          if (large.full() && !(d < large.worst())) continue;
          large.offer(d, tile_begin + j);
        }
      }
    }
    __syncthreads();
  }

  if (!active) return;
  scalar_t* dist_row = out_dist + q * k;
  int64_t* index_row = out_index + q * k;
  if (kBuffer > 0) {
    for (int64_t j = 0; j < k; ++j) {
      if (j < small.count) {
        dist_row[j] = static_cast<scalar_t>(local_dist[j]);
        index_row[j] = point_begin + local_index[j];
      } else {
        dist_row[j] = static_cast<scalar_t>(INFINITY);
        index_row[j] = -1;
      }
    }
  } else {
    for (int64_t j = large.count; j < k; ++j) {
      dist_row[j] = static_cast<scalar_t>(INFINITY);
      index_row[j] = -1;
    }
  }
}

template <typename scalar_t, int kBuffer>
void launch(const at::Tensor& query, const at::Tensor& points, const at::Tensor& block_cloud,
            const at::Tensor& block_first_query, const at::Tensor& query_offsets, const at::Tensor& point_offsets,
            typename ComputeType<scalar_t>::type max_dist2, int64_t k, at::Tensor& dist, at::Tensor& index) {
  const int64_t num_blocks = block_cloud.size(0);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  neighbors_kernel<scalar_t, kBuffer><<<static_cast<unsigned int>(num_blocks), kThreads, 0, stream>>>(
      query.data_ptr<scalar_t>(), points.data_ptr<scalar_t>(), block_cloud.data_ptr<int64_t>(),
      block_first_query.data_ptr<int64_t>(), query_offsets.data_ptr<int64_t>(), point_offsets.data_ptr<int64_t>(),
      max_dist2, k, dist.data_ptr<scalar_t>(), index.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> search(const char* op, const at::Tensor& query_in, const at::Tensor& query_offsets_in,
                                          const at::Tensor& points_in, const at::Tensor& point_offsets_in,
                                          double radius, bool use_radius, int64_t k) {
  const Batches batches = check_neighbor_inputs(op, query_in, query_offsets_in, points_in, point_offsets_in, k);
  if (use_radius) check_radius(op, radius);
  // The output-row buffer stores the compute type in the output; float16 has no room for it. Checked
  // before the empty-input return, so the error does not depend on the number of queries.
  TORCH_CHECK_VALUE(k <= 128 || query_in.scalar_type() != at::kHalf, op,
                    ": float16 supports `k` <= 128 on CUDA; pass float32 for larger k, got k = ", k);
  const c10::cuda::CUDAGuard guard(query_in.device());
  const at::Tensor query = query_in.contiguous();
  const at::Tensor points = points_in.contiguous();
  const at::Tensor query_offsets = query_offsets_in.contiguous();
  const at::Tensor point_offsets = point_offsets_in.contiguous();
  at::Tensor dist = at::empty({query.size(0), k}, query.options());
  at::Tensor index = at::empty({query.size(0), k}, query.options().dtype(at::kLong));
  if (query.size(0) == 0 || k == 0) return {dist, index};

  // Cut every cloud's queries into blocks of kThreads; blocks never straddle two clouds.
  std::vector<int64_t> cloud_of_block, first_query_of_block;
  const auto& qoff = batches.query_offsets;
  for (int64_t b = 0; b + 1 < static_cast<int64_t>(qoff.size()); ++b) {
    for (int64_t first = qoff[b]; first < qoff[b + 1]; first += kThreads) {
      cloud_of_block.push_back(b);
      first_query_of_block.push_back(first);
    }
  }
  TORCH_CHECK(cloud_of_block.size() < (size_t(1) << 31), op, ": too many queries for one launch");
  const auto long_opts = at::TensorOptions().dtype(at::kLong);
  const at::Tensor block_cloud =
      at::from_blob(cloud_of_block.data(), {static_cast<int64_t>(cloud_of_block.size())}, long_opts)
          .to(query.device());
  const at::Tensor block_first_query =
      at::from_blob(first_query_of_block.data(), {static_cast<int64_t>(first_query_of_block.size())}, long_opts)
          .to(query.device());

  AT_DISPATCH_FLOATING_TYPES_AND_HALF(query.scalar_type(), "pointmae_neighbors_cuda", [&] {
    using acc_t = typename ComputeType<scalar_t>::type;
    // The radius is squared in double and rounded once to the compute type, as in the reference.
    const acc_t max_dist2 =
        use_radius ? static_cast<acc_t>(radius * radius) : std::numeric_limits<acc_t>::infinity();
    if (k <= 16) {
      launch<scalar_t, 16>(query, points, block_cloud, block_first_query, query_offsets, point_offsets, max_dist2, k,
                           dist, index);
    } else if (k <= 32) {
      launch<scalar_t, 32>(query, points, block_cloud, block_first_query, query_offsets, point_offsets, max_dist2, k,
                           dist, index);
    } else if (k <= 64) {
      launch<scalar_t, 64>(query, points, block_cloud, block_first_query, query_offsets, point_offsets, max_dist2, k,
                           dist, index);
    } else if (k <= 128) {
      launch<scalar_t, 128>(query, points, block_cloud, block_first_query, query_offsets, point_offsets, max_dist2,
                            k, dist, index);
    } else {
      launch<scalar_t, 0>(query, points, block_cloud, block_first_query, query_offsets, point_offsets, max_dist2, k,
                          dist, index);
    }
  });
  return {dist, index};
}

std::tuple<at::Tensor, at::Tensor> knn_cuda(const at::Tensor& query, const at::Tensor& query_offsets,
                                            const at::Tensor& points, const at::Tensor& point_offsets, int64_t k) {
  return search("pointmae.knn", query, query_offsets, points, point_offsets, 0.0, false, k);
}

std::tuple<at::Tensor, at::Tensor> ball_query_cuda(const at::Tensor& query, const at::Tensor& query_offsets,
                                                   const at::Tensor& points, const at::Tensor& point_offsets,
                                                   double radius, int64_t k) {
  return search("pointmae.ball_query", query, query_offsets, points, point_offsets, radius, true, k);
}

}  // namespace
}  // namespace neighbors
}  // namespace pointmae

TORCH_LIBRARY_IMPL(pointmae, CUDA, m) {
  m.impl("knn", &pointmae::neighbors::knn_cuda);
  m.impl("ball_query", &pointmae::neighbors::ball_query_cuda);
}
