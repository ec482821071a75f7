// CUDA kernels of voxelize / voxelize_dynamic / scatter_to_voxels.
//
// The whole batch is processed by flat grids over points (no block per cloud), and every output is
// independent of thread scheduling:
//  1. keys: every point's batched key batch * cells + cell (or a drop status), and its cloud.
//  2. hash: an open-addressing table (linear probing, capacity >= 2N) is filled with atomicCAS on the
//     key; each voxel's entry keeps the minimum point index that maps to it (atomicMin), which is the
//     same whatever order the threads arrive in.
//  3. order: a point is its voxel's leader when it is that minimum; an inclusive prefix sum of the
//     leader flags over the packed points numbers the voxels by first appearance, cloud after cloud.
//  4. hard voxelization only: a stable sort of the points by voxel number gives each point its rank
//     inside its voxel (position minus the voxel's first position), then max_voxels and
//     max_points_per_voxel are applied and rows are copied.
// Statistics are integer atomics (exact, order independent). Scatter reduces every (voxel, channel)
// in point order over the stably sorted points: no float atomics.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

#include "common/checks.h"
#include "voxelize/voxelize_checks.h"
#include "voxelize/voxelize_core.h"

namespace pointmae {
namespace voxelize {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kEmptyKey = -1;

inline int64_t blocks_for(int64_t n) { return std::max<int64_t>(1, (n + kThreads - 1) / kThreads); }

using ull = unsigned long long;

// Cloud of every point by binary search in the offsets, key, status counts (columns 1 and 2 of stats)
// and in-range count (column `in_range_column`).
template <typename scalar_t>
__global__ void keys_kernel(const scalar_t* __restrict__ points, int64_t n, int64_t channels,
                            const int64_t* __restrict__ offsets, int64_t num_clouds, GridParams grid,
                            int64_t cells, int64_t* __restrict__ batched_key, int64_t* __restrict__ cloud,
                            int64_t* __restrict__ stats, int64_t stats_columns, int64_t in_range_column) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  // Largest b with offsets[b] <= i; empty clouds share an offset, and the last of them is the owner.
  int64_t lo = 0, hi = num_clouds - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (offsets[mid] <= i) lo = mid; else hi = mid - 1;
  }
  const int64_t b = lo;
  cloud[i] = b;
  const scalar_t* row = points + i * channels;
  const int64_t key = voxel_key<scalar_t>(row[0], row[1], row[2], grid);
  if (key >= 0) {
    batched_key[i] = b * cells + key;
    atomicAdd(reinterpret_cast<ull*>(stats + b * stats_columns + in_range_column), 1ULL);
  } else {
    batched_key[i] = key;
    atomicAdd(reinterpret_cast<ull*>(stats + b * stats_columns + (key == kOutsideRange ? 1 : 2)), 1ULL);
  }
}

__global__ void insert_kernel(const int64_t* __restrict__ batched_key, int64_t n, int64_t* table_key,
                              int64_t* table_first, uint64_t mask, int64_t* __restrict__ entry) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t key = batched_key[i];
  if (key < 0) {
    entry[i] = -1;
    return;
  }
  uint64_t at = mix_hash(static_cast<uint64_t>(key)) & mask;
  // Capacity >= 2N keeps the table at most half full, so the probe always ends.
  while (true) {
    const ull prev = atomicCAS(reinterpret_cast<ull*>(table_key + at), static_cast<ull>(kEmptyKey),
                               static_cast<ull>(key));
    if (prev == static_cast<ull>(kEmptyKey) || prev == static_cast<ull>(key)) break;
    at = (at + 1) & mask;
  }
  atomicMin(reinterpret_cast<long long*>(table_first + at), static_cast<long long>(i));
  entry[i] = static_cast<int64_t>(at);
}

__global__ void leader_kernel(const int64_t* __restrict__ entry, const int64_t* __restrict__ table_first, int64_t n,
                              int64_t* __restrict__ is_leader) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t e = entry[i];
  is_leader[i] = (e >= 0 && table_first[e] == i) ? 1 : 0;
}

// Leaders store their voxel number (first-appearance order over the packed batch) in the table.
__global__ void number_kernel(const int64_t* __restrict__ entry, const int64_t* __restrict__ is_leader,
                              const int64_t* __restrict__ leader_rank_inclusive, int64_t n,
                              int64_t* __restrict__ table_voxel) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n || !is_leader[i]) return;
  table_voxel[entry[i]] = leader_rank_inclusive[i] - 1;
}

// point_to_voxel (over all voxels, before max_voxels), and the coordinates of every voxel from its leader.
__global__ void point_to_voxel_kernel(const int64_t* __restrict__ entry, const int64_t* __restrict__ table_voxel,
                                      const int64_t* __restrict__ is_leader, const int64_t* __restrict__ batched_key,
                                      const int64_t* __restrict__ cloud, int64_t n, GridParams grid, int64_t cells,
                                      int64_t* __restrict__ point_to_voxel, int32_t* __restrict__ coords) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t e = entry[i];
  if (e < 0) {
    point_to_voxel[i] = -1;
    return;
  }
  const int64_t v = table_voxel[e];
  point_to_voxel[i] = v;
  if (coords != nullptr && is_leader[i]) {
    const int64_t b = cloud[i];
    coords[v * 4] = static_cast<int32_t>(b);
    key_to_zyx(batched_key[i] - b * cells, grid, coords + v * 4 + 1);
  }
}

// Marks where each voxel's run starts and ends in the points sorted (stably) by voxel number.
__global__ void run_bounds_kernel(const int64_t* __restrict__ sorted_voxel, int64_t n, int64_t* __restrict__ start,
                                  int64_t* __restrict__ end) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  const int64_t v = sorted_voxel[j];
  if (v < 0) return;
  if (j == 0 || sorted_voxel[j - 1] != v) start[v] = j;
  if (j == n - 1 || sorted_voxel[j + 1] != v) end[v] = j + 1;
}

template <typename scalar_t>
__global__ void hard_write_kernel(const scalar_t* __restrict__ points, int64_t channels,
                                  const int64_t* __restrict__ sorted_voxel, const int64_t* __restrict__ order,
                                  const int64_t* __restrict__ run_start, const int64_t* __restrict__ run_end,
                                  const int64_t* __restrict__ cloud, const int64_t* __restrict__ batched_key,
                                  const int64_t* __restrict__ seen_offsets, const int64_t* __restrict__ kept_offsets,
                                  int64_t n, int64_t max_points, int64_t max_voxels, GridParams grid, int64_t cells,
                                  scalar_t* __restrict__ voxels, int32_t* __restrict__ coords,
                                  int32_t* __restrict__ num_points, int64_t* __restrict__ stats) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  const int64_t v = sorted_voxel[j];
  if (v < 0) return;
  const int64_t i = order[j];
  const int64_t slot = j - run_start[v];
  const int64_t b = cloud[i];
  const int64_t local = v - seen_offsets[b];
  if (local >= max_voxels || slot >= max_points) return;
  const int64_t out = kept_offsets[b] + local;
  const scalar_t* src = points + i * channels;
  scalar_t* dst = voxels + (out * max_points + slot) * channels;
  for (int64_t c = 0; c < channels; ++c) dst[c] = src[c];
  atomicAdd(reinterpret_cast<ull*>(stats + b * 4), 1ULL);
  if (slot == 0) {
    coords[out * 4] = static_cast<int32_t>(b);
    key_to_zyx(batched_key[i] - b * cells, grid, coords + out * 4 + 1);
    const int64_t count = run_end[v] - run_start[v];
    num_points[out] = static_cast<int32_t>(count < max_points ? count : max_points);
  }
}

// Steps 1-3, shared by both voxelizations. Returns point_to_voxel over all voxels and fills the rest.
struct Grouping {
  at::Tensor batched_key, cloud, point_to_voxel, seen_offsets;  // seen_offsets: (B+1,) on the device
  int64_t total_voxels = 0;
};

Grouping group_points(const at::Tensor& points, const at::Tensor& offsets, const GridParams& grid, int64_t cells,
                      at::Tensor& stats, int64_t in_range_column, at::Tensor* coords_out) {
  const int64_t n = points.size(0), channels = points.size(1), num_clouds = offsets.size(0) - 1;
  auto stream = at::cuda::getCurrentCUDAStream();
  auto long_opts = points.options().dtype(at::kLong);
  Grouping g;
  g.batched_key = at::empty({n}, long_opts);
  g.cloud = at::empty({n}, long_opts);
  if (n > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(points.scalar_type(), "voxelize_keys_cuda", [&] {
      keys_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
          points.data_ptr<scalar_t>(), n, channels, offsets.data_ptr<int64_t>(), num_clouds, grid, cells,
          g.batched_key.data_ptr<int64_t>(), g.cloud.data_ptr<int64_t>(), stats.data_ptr<int64_t>(), stats.size(1),
          in_range_column);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  uint64_t capacity = 16;
  while (capacity < 2 * static_cast<uint64_t>(n)) capacity <<= 1;
  const int64_t cap = static_cast<int64_t>(capacity);
  auto table_key = at::full({cap}, kEmptyKey, long_opts);
  auto table_first = at::full({cap}, std::numeric_limits<int64_t>::max(), long_opts);
  auto table_voxel = at::empty({cap}, long_opts);
  auto entry = at::empty({n}, long_opts);
  auto is_leader = at::empty({n}, long_opts);
  g.point_to_voxel = at::empty({n}, long_opts);
  at::Tensor rank_inclusive;
  if (n > 0) {
    insert_kernel<<<blocks_for(n), kThreads, 0, stream>>>(g.batched_key.data_ptr<int64_t>(), n,
                                                          table_key.data_ptr<int64_t>(),
                                                          table_first.data_ptr<int64_t>(), capacity - 1,
                                                          entry.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    leader_kernel<<<blocks_for(n), kThreads, 0, stream>>>(entry.data_ptr<int64_t>(), table_first.data_ptr<int64_t>(),
                                                          n, is_leader.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    rank_inclusive = at::cumsum(is_leader, 0);
    number_kernel<<<blocks_for(n), kThreads, 0, stream>>>(entry.data_ptr<int64_t>(), is_leader.data_ptr<int64_t>(),
                                                          rank_inclusive.data_ptr<int64_t>(), n,
                                                          table_voxel.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    rank_inclusive = at::empty({0}, long_opts);
  }
  // seen_offsets[b] = number of voxels whose leader comes before offsets[b].
  auto rank_exclusive = at::cat({at::zeros({1}, long_opts), rank_inclusive});
  g.seen_offsets = rank_exclusive.index_select(0, offsets);
  g.total_voxels = rank_exclusive[n].item<int64_t>();  // one synchronisation: the output size
  if (coords_out != nullptr) *coords_out = at::empty({g.total_voxels, 4}, points.options().dtype(at::kInt));
  if (n > 0) {
    point_to_voxel_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
        entry.data_ptr<int64_t>(), table_voxel.data_ptr<int64_t>(), is_leader.data_ptr<int64_t>(),
        g.batched_key.data_ptr<int64_t>(), g.cloud.data_ptr<int64_t>(), n, grid, cells,
        g.point_to_voxel.data_ptr<int64_t>(), coords_out != nullptr ? coords_out->data_ptr<int32_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return g;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> voxelize_cuda(
    const at::Tensor& points_in, const at::Tensor& offsets_in, at::ArrayRef<double> voxel_size,
    at::ArrayRef<double> point_range, int64_t max_points_per_voxel, int64_t max_voxels) {
  constexpr const char* op = "pointmae.voxelize";
  check_voxel_points(op, points_in);
  check_offsets(op, "offsets", offsets_in, points_in.size(0), points_in);
  check_capacity(op, max_points_per_voxel, max_voxels);
  const int64_t num_clouds = offsets_in.size(0) - 1;
  const GridParams grid = make_grid(op, voxel_size, point_range, num_clouds);
  const int64_t cells = grid_cells(grid);
  c10::cuda::CUDAGuard device_guard(points_in.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  const auto points = points_in.contiguous();
  const auto offsets = offsets_in.contiguous();
  const int64_t n = points.size(0), channels = points.size(1);
  auto long_opts = points.options().dtype(at::kLong);

  // Column 3 first counts the points inside the range; the kept ones are subtracted at the end.
  auto stats = at::zeros({num_clouds, 4}, long_opts);
  Grouping g = group_points(points, offsets, grid, cells, stats, 3, nullptr);

  // Voxels kept per cloud: the first max_voxels by first appearance.
  auto seen_host = g.seen_offsets.cpu();
  const int64_t* seen = seen_host.data_ptr<int64_t>();
  auto kept_host = at::empty({num_clouds + 1}, at::kLong);
  int64_t* kept = kept_host.data_ptr<int64_t>();
  kept[0] = 0;
  for (int64_t b = 0; b < num_clouds; ++b) kept[b + 1] = kept[b] + std::min(seen[b + 1] - seen[b], max_voxels);
  const int64_t total = kept[num_clouds];
  auto voxel_offsets = kept_host.to(points.device());

  auto voxels = at::zeros({total, max_points_per_voxel, channels}, points.options());
  auto coords = at::empty({total, 4}, points.options().dtype(at::kInt));
  auto num_points = at::empty({total}, points.options().dtype(at::kInt));
  if (n > 0 && g.total_voxels > 0) {
    // Stable: equal voxel numbers keep the input order, so a point's rank in its run is its slot.
    auto sorted = at::sort(g.point_to_voxel, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    const auto& sorted_voxel = std::get<0>(sorted);
    const auto& order = std::get<1>(sorted);
    auto run_start = at::zeros({g.total_voxels}, long_opts);
    auto run_end = at::zeros({g.total_voxels}, long_opts);
    run_bounds_kernel<<<blocks_for(n), kThreads, 0, stream>>>(sorted_voxel.data_ptr<int64_t>(), n,
                                                              run_start.data_ptr<int64_t>(),
                                                              run_end.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(points.scalar_type(), "voxelize_write_cuda", [&] {
      hard_write_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
          points.data_ptr<scalar_t>(), channels, sorted_voxel.data_ptr<int64_t>(), order.data_ptr<int64_t>(),
          run_start.data_ptr<int64_t>(), run_end.data_ptr<int64_t>(), g.cloud.data_ptr<int64_t>(),
          g.batched_key.data_ptr<int64_t>(), g.seen_offsets.data_ptr<int64_t>(),
          voxel_offsets.data_ptr<int64_t>(), n, max_points_per_voxel, max_voxels, grid, cells,
          voxels.data_ptr<scalar_t>(), coords.data_ptr<int32_t>(), num_points.data_ptr<int32_t>(),
          stats.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  // Over capacity = inside the range - kept.
  stats.select(1, 3).sub_(stats.select(1, 0));
  return {voxels, coords, num_points, voxel_offsets, stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> voxelize_dynamic_cuda(
    const at::Tensor& points_in, const at::Tensor& offsets_in, at::ArrayRef<double> voxel_size,
    at::ArrayRef<double> point_range) {
  constexpr const char* op = "pointmae.voxelize_dynamic";
  check_voxel_points(op, points_in);
  check_offsets(op, "offsets", offsets_in, points_in.size(0), points_in);
  const int64_t num_clouds = offsets_in.size(0) - 1;
  const GridParams grid = make_grid(op, voxel_size, point_range, num_clouds);
  c10::cuda::CUDAGuard device_guard(points_in.device());
  const auto points = points_in.contiguous();
  const auto offsets = offsets_in.contiguous();
  auto stats = at::zeros({num_clouds, 3}, points.options().dtype(at::kLong));
  at::Tensor coords;
  Grouping g = group_points(points, offsets, grid, grid_cells(grid), stats, 0, &coords);
  return {g.point_to_voxel, coords, g.seen_offsets, stats};
}

// ---------------------------------------------------------------------------------------------------
// scatter_to_voxels
template <typename scalar_t>
__global__ void scatter_forward_kernel(const scalar_t* __restrict__ features, int64_t channels,
                                       const int64_t* __restrict__ order, const int64_t* __restrict__ run_start,
                                       const int64_t* __restrict__ run_end, int64_t num_voxels, bool is_max,
                                       scalar_t* __restrict__ out, int64_t* __restrict__ arg) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= num_voxels * channels) return;
  const int64_t v = t / channels, c = t % channels;
  const int64_t lo = run_start[v], hi = run_end[v];
  if (lo >= hi) return;  // empty voxel: out 0, arg -1 (pre-filled)
  if (is_max) {
    int64_t best_point = order[lo];
    acc_t best = static_cast<acc_t>(features[best_point * channels + c]);
    for (int64_t j = lo + 1; j < hi; ++j) {
      const int64_t p = order[j];
      const acc_t x = static_cast<acc_t>(features[p * channels + c]);
      // Strictly greater: ties keep the lower point index (points are in input order); first NaN wins.
      if (x > best || (x != x && best == best)) {
        best = x;
        best_point = p;
      }
    }
    out[t] = static_cast<scalar_t>(best);
    arg[t] = best_point;
  } else {
    // Starts from the first row, as the CPU kernel does: 0 + (-0.0) would turn a voxel of -0.0
    // features into +0.0.
    acc_t sum = static_cast<acc_t>(features[order[lo] * channels + c]);
    for (int64_t j = lo + 1; j < hi; ++j) sum += static_cast<acc_t>(features[order[j] * channels + c]);
    out[t] = static_cast<scalar_t>(sum / static_cast<acc_t>(hi - lo));
  }
}

std::tuple<at::Tensor, at::Tensor> scatter_to_voxels_cuda(const at::Tensor& features_in,
                                                          const at::Tensor& point_to_voxel_in,
                                                          c10::SymInt num_voxels_sym, c10::string_view reduce) {
  constexpr const char* op = "pointmae.scatter_to_voxels";
  const int64_t num_voxels = num_voxels_sym.guard_int(__FILE__, __LINE__);
  const bool is_max = parse_reduce(op, reduce) == 1;
  check_scatter_inputs(op, features_in, point_to_voxel_in, num_voxels);
  c10::cuda::CUDAGuard device_guard(features_in.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  const auto features = features_in.contiguous();
  const auto p2v = point_to_voxel_in.contiguous();
  const int64_t n = features.size(0), channels = features.size(1);
  auto long_opts = features.options().dtype(at::kLong);
  auto out = at::zeros({num_voxels, channels}, features.options());
  auto arg = is_max ? at::full({num_voxels, channels}, -1, long_opts) : at::empty({0}, long_opts);
  if (n == 0 || num_voxels == 0 || channels == 0) return {out, arg};
  auto sorted = at::sort(p2v, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  auto run_start = at::zeros({num_voxels}, long_opts);
  auto run_end = at::zeros({num_voxels}, long_opts);
  run_bounds_kernel<<<blocks_for(n), kThreads, 0, stream>>>(std::get<0>(sorted).data_ptr<int64_t>(), n,
                                                            run_start.data_ptr<int64_t>(),
                                                            run_end.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(features.scalar_type(), "scatter_to_voxels_cuda", [&] {
    scatter_forward_kernel<scalar_t><<<blocks_for(num_voxels * channels), kThreads, 0, stream>>>(
        features.data_ptr<scalar_t>(), channels, std::get<1>(sorted).data_ptr<int64_t>(),
        run_start.data_ptr<int64_t>(), run_end.data_ptr<int64_t>(), num_voxels, is_max, out.data_ptr<scalar_t>(),
        is_max ? arg.data_ptr<int64_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, arg};
}

__global__ void count_kernel(const int64_t* __restrict__ p2v, int64_t n, int64_t* __restrict__ count) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n || p2v[i] < 0) return;
  atomicAdd(reinterpret_cast<ull*>(count + p2v[i]), 1ULL);  // integer: exact in any order
}

template <typename scalar_t>
__global__ void scatter_backward_kernel(const scalar_t* __restrict__ grad_out, const int64_t* __restrict__ p2v,
                                        const int64_t* __restrict__ arg, const int64_t* __restrict__ count,
                                        int64_t n, int64_t channels, bool is_max, scalar_t* __restrict__ grad_in) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n * channels) return;
  const int64_t i = t / channels, c = t % channels;
  const int64_t v = p2v[i];
  if (v < 0) return;  // pre-filled with 0
  // Every point belongs to one voxel: its gradient is read, never accumulated.
  if (is_max) {
    if (arg[v * channels + c] == i) grad_in[t] = grad_out[v * channels + c];
  } else {
    grad_in[t] = static_cast<scalar_t>(static_cast<acc_t>(grad_out[v * channels + c]) /
                                       static_cast<acc_t>(count[v]));
  }
}

at::Tensor scatter_to_voxels_backward_cuda(const at::Tensor& grad_out_in, const at::Tensor& point_to_voxel_in,
                                           const at::Tensor& arg_in, c10::SymInt num_points_sym,
                                           c10::string_view reduce) {
  constexpr const char* op = "pointmae.scatter_to_voxels_backward";
  const int64_t n = num_points_sym.guard_int(__FILE__, __LINE__);
  const bool is_max = parse_reduce(op, reduce) == 1;
  check_scatter_backward(op, grad_out_in, point_to_voxel_in, arg_in, n, is_max);
  c10::cuda::CUDAGuard device_guard(grad_out_in.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  const auto grad_out = grad_out_in.contiguous();
  const auto p2v = point_to_voxel_in.contiguous();
  const auto arg = is_max ? arg_in.contiguous() : arg_in;
  const int64_t num_voxels = grad_out.size(0), channels = grad_out.size(1);
  auto grad_in = at::zeros({n, channels}, grad_out.options());
  if (n == 0 || channels == 0) return grad_in;
  auto count = at::zeros({std::max<int64_t>(num_voxels, 1)}, grad_out.options().dtype(at::kLong));
  if (!is_max) {
    count_kernel<<<blocks_for(n), kThreads, 0, stream>>>(p2v.data_ptr<int64_t>(), n, count.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(grad_out.scalar_type(), "scatter_to_voxels_backward_cuda", [&] {
    scatter_backward_kernel<scalar_t><<<blocks_for(n * channels), kThreads, 0, stream>>>(
        grad_out.data_ptr<scalar_t>(), p2v.data_ptr<int64_t>(), is_max ? arg.data_ptr<int64_t>() : nullptr,
        count.data_ptr<int64_t>(), n, channels, is_max, grad_in.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_in;
}

}  // namespace
}  // namespace voxelize
}  // namespace pointmae

TORCH_LIBRARY_IMPL(pointmae, CUDA, m) {
  m.impl("voxelize", &pointmae::voxelize::voxelize_cuda);
  m.impl("voxelize_dynamic", &pointmae::voxelize::voxelize_dynamic_cuda);
  m.impl("scatter_to_voxels", &pointmae::voxelize::scatter_to_voxels_cuda);
  m.impl("scatter_to_voxels_backward", &pointmae::voxelize::scatter_to_voxels_backward_cuda);
}
