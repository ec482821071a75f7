// CPU kernels of voxelize / voxelize_dynamic / scatter_to_voxels.
//
// Voxelization runs in four steps, all deterministic whatever the thread count:
//  A. keys: every point's voxel key (or a drop status), in parallel over all points.
//  B. grouping: an open-addressing hash table (linear probing) per (cloud, shard) maps a key to its
//     first point and counts the points seen so far. A large cloud is split into shards by a hash of
//     the key: every thread walks the whole cloud in point order but handles only the keys of its own
//     shard, so every voxel is owned by one thread, which sees its points in input order. This gives
//     each point its voxel's first point and its rank inside the voxel (slot) with no locks, and the
//     result does not depend on the number of shards. Memory is O(points), never O(grid cells).
//  C. ordering: one pass per cloud numbers the voxels by first appearance (a voxel is numbered at
//     its first point), applies max_voxels and counts the statistics.
//  D. output: every point is copied to (voxel, slot) in parallel; slots >= max_points_per_voxel and
//     voxels numbered >= max_voxels are dropped ("over capacity").
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/checks.h"
#include "voxelize/voxelize_checks.h"
#include "voxelize/voxelize_core.h"

namespace pointmae {
namespace voxelize {
namespace {

// A cloud is split into shards for step B only when it has at least this many points per shard:
// below that, the walk over the whole cloud that every shard does costs more than it saves.
constexpr int64_t kPointsPerShard = 16384;

struct Assignment {
  std::vector<int64_t> keys;             // (N,) voxel key, or kOutsideRange / kNonFinite
  std::vector<int64_t> first;            // (N,) packed index of the first point of the voxel, -1 if dropped
  std::vector<int32_t> slot;             // (N,) rank of the point among its voxel's points, input order
  std::vector<int32_t> count_at_leader;  // (N,) number of points of the voxel, stored at its first point
  std::vector<int64_t> rank;             // (N,) voxel number in its cloud, stored at its first point
};

template <typename scalar_t>
void compute_keys(const at::Tensor& points, const GridParams& grid, Assignment& a) {
  const scalar_t* p = points.data_ptr<scalar_t>();
  const int64_t n = points.size(0), c = points.size(1);
  int64_t* keys = a.keys.data();
  int64_t* first = a.first.data();
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* row = p + i * c;
      keys[i] = voxel_key<scalar_t>(row[0], row[1], row[2], grid);
      first[i] = -1;
    }
  });
}

inline int64_t shard_of(uint64_t hash, int64_t num_shards) {
  // Multiply-shift on the high half of the hash: uniform over [0, num_shards), and independent of the
  // low bits that index the table.
  return static_cast<int64_t>(((hash >> 32) * static_cast<uint64_t>(num_shards)) >> 32);
}

// Step B for the keys of one shard of the cloud [begin, end).
void group_shard(Assignment& a, int64_t begin, int64_t end, int64_t shard, int64_t num_shards) {
  const int64_t* keys = a.keys.data();
  int64_t members = 0;
  for (int64_t i = begin; i < end; ++i) {
    if (keys[i] >= 0 && (num_shards == 1 || shard_of(mix_hash(keys[i]), num_shards) == shard)) ++members;
  }
  if (members == 0) return;
  uint64_t capacity = 16;
  while (capacity < 2 * static_cast<uint64_t>(members)) capacity <<= 1;  // load factor <= 1/2
  const uint64_t mask = capacity - 1;
  std::vector<int64_t> table_key(capacity, -1);
  std::vector<int64_t> table_first(capacity);
  std::vector<int32_t> table_count(capacity);
  int64_t* first = a.first.data();
  int32_t* slot = a.slot.data();
  for (int64_t i = begin; i < end; ++i) {
    const int64_t key = keys[i];
    if (key < 0) continue;
    const uint64_t h = mix_hash(static_cast<uint64_t>(key));
    if (num_shards > 1 && shard_of(h, num_shards) != shard) continue;
    uint64_t at = h & mask;
    while (table_key[at] != -1 && table_key[at] != key) at = (at + 1) & mask;
    if (table_key[at] == -1) {
      table_key[at] = key;
      table_first[at] = i;
      table_count[at] = 1;
      first[i] = i;
      slot[i] = 0;
    } else {
      first[i] = table_first[at];
      slot[i] = table_count[at]++;
    }
  }
  for (uint64_t at = 0; at < capacity; ++at) {
    if (table_key[at] != -1) a.count_at_leader[table_first[at]] = table_count[at];
  }
}

struct CloudSummary {
  int64_t voxels_seen = 0;  // distinct voxels with a point inside the range
  int64_t voxels_kept = 0;  // min(voxels_seen, max_voxels)
  int64_t stats[4] = {0, 0, 0, 0};  // kept points, outside range, non-finite, over capacity
};

// Steps A-C. max_points / max_voxels = INT64_MAX for dynamic voxelization.
template <typename scalar_t>
std::vector<CloudSummary> assign(const at::Tensor& points, const int64_t* offs, int64_t num_clouds,
                                 const GridParams& grid, int64_t max_points, int64_t max_voxels, Assignment& a) {
  const int64_t n = points.size(0);
  TORCH_CHECK_VALUE(n < std::numeric_limits<int32_t>::max(), "pointmae.voxelize: at most 2^31 - 1 points, got ", n);
  a.keys.resize(n);
  a.first.resize(n);
  a.slot.resize(n);
  a.count_at_leader.resize(n);
  a.rank.resize(n);
  compute_keys<scalar_t>(points, grid, a);

  // Step B: tasks are (cloud, shard); a large cloud gets up to one shard per thread.
  struct Task { int64_t begin, end, shard, num_shards; };
  std::vector<Task> tasks;
  const int64_t threads = at::get_num_threads();
  for (int64_t b = 0; b < num_clouds; ++b) {
    const int64_t size = offs[b + 1] - offs[b];
    if (size == 0) continue;
    const int64_t shards = std::max<int64_t>(1, std::min<int64_t>(threads, size / kPointsPerShard));
    for (int64_t s = 0; s < shards; ++s) tasks.push_back({offs[b], offs[b + 1], s, shards});
  }
  at::parallel_for(0, static_cast<int64_t>(tasks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) group_shard(a, tasks[t].begin, tasks[t].end, tasks[t].shard, tasks[t].num_shards);
  });

  // Step C: number voxels by first appearance, per cloud.
  std::vector<CloudSummary> summary(num_clouds);
  at::parallel_for(0, num_clouds, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      CloudSummary& s = summary[b];
      for (int64_t i = offs[b]; i < offs[b + 1]; ++i) {
        const int64_t key = a.keys[i];
        if (key == kOutsideRange) {
          ++s.stats[1];
        } else if (key == kNonFinite) {
          ++s.stats[2];
        } else if (a.first[i] == i) {
          a.rank[i] = s.voxels_seen;
          if (s.voxels_seen < max_voxels) s.stats[0] += std::min<int64_t>(a.count_at_leader[i], max_points);
          ++s.voxels_seen;
        }
      }
      s.voxels_kept = std::min(s.voxels_seen, max_voxels);
      s.stats[3] = (offs[b + 1] - offs[b]) - s.stats[0] - s.stats[1] - s.stats[2];
    }
  });
  return summary;
}

at::Tensor summary_offsets(const std::vector<CloudSummary>& summary, std::vector<int64_t>& base) {
  const int64_t num_clouds = static_cast<int64_t>(summary.size());
  auto voxel_offsets = at::empty({num_clouds + 1}, at::kLong);
  int64_t* vo = voxel_offsets.data_ptr<int64_t>();
  base.resize(num_clouds + 1);
  base[0] = 0;
  for (int64_t b = 0; b < num_clouds; ++b) base[b + 1] = base[b] + summary[b].voxels_kept;
  std::copy(base.begin(), base.end(), vo);
  return voxel_offsets;
}

at::Tensor summary_stats(const std::vector<CloudSummary>& summary, int64_t columns) {
  const int64_t num_clouds = static_cast<int64_t>(summary.size());
  auto stats = at::empty({num_clouds, columns}, at::kLong);
  int64_t* st = stats.data_ptr<int64_t>();
  for (int64_t b = 0; b < num_clouds; ++b) {
    for (int64_t j = 0; j < columns; ++j) st[b * columns + j] = summary[b].stats[j];
  }
  return stats;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> voxelize_cpu(
    const at::Tensor& points_in, const at::Tensor& offsets, at::ArrayRef<double> voxel_size,
    at::ArrayRef<double> point_range, int64_t max_points_per_voxel, int64_t max_voxels) {
  constexpr const char* op = "pointmae.voxelize";
  check_voxel_points(op, points_in);
  check_offsets(op, "offsets", offsets, points_in.size(0), points_in);
  check_capacity(op, max_points_per_voxel, max_voxels);
  const int64_t num_clouds = offsets.size(0) - 1;
  const GridParams grid = make_grid(op, voxel_size, point_range, num_clouds);
  const auto points = points_in.contiguous();
  const auto offs_t = offsets.contiguous();
  const int64_t* offs = offs_t.data_ptr<int64_t>();
  const int64_t channels = points.size(1);

  at::Tensor voxels, coords, num_points, voxel_offsets, stats;
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(points.scalar_type(), "voxelize_cpu", [&] {
    Assignment a;
    const auto summary = assign<scalar_t>(points, offs, num_clouds, grid, max_points_per_voxel, max_voxels, a);
    std::vector<int64_t> base;
    voxel_offsets = summary_offsets(summary, base);
    stats = summary_stats(summary, 4);
    const int64_t total = base[num_clouds];
    voxels = at::zeros({total, max_points_per_voxel, channels}, points.options());
    coords = at::empty({total, 4}, points.options().dtype(at::kInt));
    num_points = at::empty({total}, points.options().dtype(at::kInt));
    const scalar_t* src = points.data_ptr<scalar_t>();
    scalar_t* dst = voxels.data_ptr<scalar_t>();
    int32_t* co = coords.data_ptr<int32_t>();
    int32_t* np = num_points.data_ptr<int32_t>();
    // Step D, cloud by cloud (each in parallel over its points).
    for (int64_t b = 0; b < num_clouds; ++b) {
      at::parallel_for(offs[b], offs[b + 1], 2048, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t f = a.first[i];
          if (f < 0) continue;
          const int64_t r = a.rank[f];
          const int64_t s = a.slot[i];
          if (r >= max_voxels || s >= max_points_per_voxel) continue;
          const int64_t v = base[b] + r;
          std::copy(src + i * channels, src + (i + 1) * channels, dst + (v * max_points_per_voxel + s) * channels);
          if (s == 0) {
            co[v * 4] = static_cast<int32_t>(b);
            key_to_zyx(a.keys[i], grid, co + v * 4 + 1);
            np[v] = static_cast<int32_t>(std::min<int64_t>(a.count_at_leader[i], max_points_per_voxel));
          }
        }
      });
    }
  });
  return {voxels, coords, num_points, voxel_offsets, stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> voxelize_dynamic_cpu(
    const at::Tensor& points_in, const at::Tensor& offsets, at::ArrayRef<double> voxel_size,
    at::ArrayRef<double> point_range) {
  constexpr const char* op = "pointmae.voxelize_dynamic";
  check_voxel_points(op, points_in);
  check_offsets(op, "offsets", offsets, points_in.size(0), points_in);
  const int64_t num_clouds = offsets.size(0) - 1;
  const GridParams grid = make_grid(op, voxel_size, point_range, num_clouds);
  const auto points = points_in.contiguous();
  const auto offs_t = offsets.contiguous();
  const int64_t* offs = offs_t.data_ptr<int64_t>();
  constexpr int64_t unlimited = std::numeric_limits<int64_t>::max();

  at::Tensor point_to_voxel, coords, voxel_offsets, stats;
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(points.scalar_type(), "voxelize_dynamic_cpu", [&] {
    Assignment a;
    const auto summary = assign<scalar_t>(points, offs, num_clouds, grid, unlimited, unlimited, a);
    std::vector<int64_t> base;
    voxel_offsets = summary_offsets(summary, base);
    stats = summary_stats(summary, 3);
    const int64_t total = base[num_clouds];
    point_to_voxel = at::empty({points.size(0)}, points.options().dtype(at::kLong));
    coords = at::empty({total, 4}, points.options().dtype(at::kInt));
    int64_t* p2v = point_to_voxel.data_ptr<int64_t>();
    int32_t* co = coords.data_ptr<int32_t>();
    for (int64_t b = 0; b < num_clouds; ++b) {
      at::parallel_for(offs[b], offs[b + 1], 4096, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t f = a.first[i];
          if (f < 0) {
            p2v[i] = -1;
            continue;
          }
          const int64_t v = base[b] + a.rank[f];
          p2v[i] = v;
          if (f == i) {
            co[v * 4] = static_cast<int32_t>(b);
            key_to_zyx(a.keys[i], grid, co + v * 4 + 1);
          }
        }
      });
    }
  });
  return {point_to_voxel, coords, voxel_offsets, stats};
}

// ---------------------------------------------------------------------------------------------------
// scatter_to_voxels: the points of every voxel are listed in input order (a stable counting sort), and
// every voxel is reduced by one thread in that order, so sums are bit-identical run to run.
struct VoxelLists {
  std::vector<int64_t> start;  // (V+1,) CSR offsets
  std::vector<int64_t> order;  // point indices grouped by voxel, input order inside a voxel
};

VoxelLists list_points(const int64_t* p2v, int64_t n, int64_t num_voxels) {
  VoxelLists l;
  l.start.assign(num_voxels + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (p2v[i] >= 0) ++l.start[p2v[i] + 1];
  }
  for (int64_t v = 0; v < num_voxels; ++v) l.start[v + 1] += l.start[v];
  l.order.resize(l.start[num_voxels]);
  std::vector<int64_t> cursor(l.start.begin(), l.start.end() - 1);
  for (int64_t i = 0; i < n; ++i) {
    if (p2v[i] >= 0) l.order[cursor[p2v[i]]++] = i;
  }
  return l;
}

std::tuple<at::Tensor, at::Tensor> scatter_to_voxels_cpu(const at::Tensor& features_in,
                                                         const at::Tensor& point_to_voxel_in,
                                                         c10::SymInt num_voxels_sym, c10::string_view reduce) {
  constexpr const char* op = "pointmae.scatter_to_voxels";
  const int64_t num_voxels = num_voxels_sym.guard_int(__FILE__, __LINE__);
  const bool is_max = parse_reduce(op, reduce) == 1;
  check_scatter_inputs(op, features_in, point_to_voxel_in, num_voxels);
  const auto features = features_in.contiguous();
  const auto p2v_t = point_to_voxel_in.contiguous();
  const int64_t n = features.size(0), channels = features.size(1);
  const int64_t* p2v = p2v_t.data_ptr<int64_t>();
  const VoxelLists lists = list_points(p2v, n, num_voxels);

  auto out = at::zeros({num_voxels, channels}, features.options());
  auto arg = is_max ? at::full({num_voxels, channels}, -1, features.options().dtype(at::kLong))
                    : at::empty({0}, features.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(features.scalar_type(), "scatter_to_voxels_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* f = features.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    int64_t* ar = is_max ? arg.data_ptr<int64_t>() : nullptr;
    at::parallel_for(0, num_voxels, 256, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(channels);
      for (int64_t v = begin; v < end; ++v) {
        const int64_t lo = lists.start[v], hi = lists.start[v + 1];
        if (lo == hi) continue;  // empty voxel: 0 (and arg -1)
        if (is_max) {
          const int64_t p0 = lists.order[lo];
          for (int64_t c = 0; c < channels; ++c) {
            acc[c] = static_cast<acc_t>(f[p0 * channels + c]);
            ar[v * channels + c] = p0;
          }
          for (int64_t j = lo + 1; j < hi; ++j) {
            const int64_t p = lists.order[j];
            for (int64_t c = 0; c < channels; ++c) {
              const acc_t x = static_cast<acc_t>(f[p * channels + c]);
              // Strictly greater: ties keep the lower point index. The first NaN wins, like torch.max.
              if (x > acc[c] || (std::isnan(x) && !std::isnan(acc[c]))) {
                acc[c] = x;
                ar[v * channels + c] = p;
              }
            }
          }
          for (int64_t c = 0; c < channels; ++c) o[v * channels + c] = static_cast<scalar_t>(acc[c]);
        } else {
          std::fill(acc.begin(), acc.end(), acc_t(0));
          for (int64_t j = lo; j < hi; ++j) {
            const int64_t p = lists.order[j];
            for (int64_t c = 0; c < channels; ++c) acc[c] += static_cast<acc_t>(f[p * channels + c]);
          }
          const acc_t count = static_cast<acc_t>(hi - lo);
          for (int64_t c = 0; c < channels; ++c) o[v * channels + c] = static_cast<scalar_t>(acc[c] / count);
        }
      }
    });
  });
  return {out, arg};
}

void check_scatter_backward(const char* op, const at::Tensor& grad_out, const at::Tensor& point_to_voxel,
                            const at::Tensor& arg, int64_t num_points, bool is_max) {
  TORCH_CHECK_VALUE(grad_out.dim() == 2, op, ": `grad_out` must be a 2-D tensor (V, C), got shape ",
                    shape_str(grad_out));
  TORCH_CHECK_VALUE(point_to_voxel.dim() == 1 && point_to_voxel.size(0) == num_points &&
                        point_to_voxel.scalar_type() == at::kLong,
                    op, ": `point_to_voxel` must be an int64 tensor (", num_points, ",), got ",
                    point_to_voxel.scalar_type(), " of shape ", shape_str(point_to_voxel));
  check_same_device(op, "point_to_voxel", point_to_voxel, grad_out, "grad_out");
  if (is_max) {
    TORCH_CHECK_VALUE(arg.sizes() == grad_out.sizes() && arg.scalar_type() == at::kLong, op,
                      ": `arg` must be an int64 tensor of the shape of `grad_out` ", shape_str(grad_out), ", got ",
                      arg.scalar_type(), " of shape ", shape_str(arg));
    check_same_device(op, "arg", arg, grad_out, "grad_out");
  }
}

at::Tensor scatter_to_voxels_backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& point_to_voxel_in,
                                          const at::Tensor& arg_in, c10::SymInt num_points_sym,
                                          c10::string_view reduce) {
  constexpr const char* op = "pointmae.scatter_to_voxels_backward";
  const int64_t n = num_points_sym.guard_int(__FILE__, __LINE__);
  const bool is_max = parse_reduce(op, reduce) == 1;
  check_scatter_backward(op, grad_out_in, point_to_voxel_in, arg_in, n, is_max);
  const auto grad_out = grad_out_in.contiguous();
  const auto p2v_t = point_to_voxel_in.contiguous();
  const int64_t num_voxels = grad_out.size(0), channels = grad_out.size(1);
  const int64_t* p2v = p2v_t.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK_VALUE(p2v[i] >= -1 && p2v[i] < num_voxels, op, ": `point_to_voxel` values must be in [-1, ",
                      num_voxels, "), got ", p2v[i], " at ", i);
  }
  auto grad_in = at::zeros({n, channels}, grad_out.options());
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(grad_out.scalar_type(), "scatter_to_voxels_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad_out.data_ptr<scalar_t>();
    scalar_t* gi = grad_in.data_ptr<scalar_t>();
    if (is_max) {
      // Every point belongs to one voxel, so its gradient is read, not accumulated: no races.
      const auto arg = arg_in.contiguous();
      const int64_t* ar = arg.data_ptr<int64_t>();
      at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t v = p2v[i];
          if (v < 0) continue;
          for (int64_t c = 0; c < channels; ++c) {
            if (ar[v * channels + c] == i) gi[i * channels + c] = g[v * channels + c];
          }
        }
      });
    } else {
      std::vector<int64_t> count(num_voxels, 0);
      for (int64_t i = 0; i < n; ++i) {
        if (p2v[i] >= 0) ++count[p2v[i]];
      }
      at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t v = p2v[i];
          if (v < 0) continue;
          const acc_t cnt = static_cast<acc_t>(count[v]);
          for (int64_t c = 0; c < channels; ++c) {
            gi[i * channels + c] = static_cast<scalar_t>(static_cast<acc_t>(g[v * channels + c]) / cnt);
          }
        }
      });
    }
  });
  return grad_in;
}

}  // namespace
}  // namespace voxelize
}  // namespace pointmae

TORCH_LIBRARY_IMPL(pointmae, CPU, m) {
  m.impl("voxelize", &pointmae::voxelize::voxelize_cpu);
  m.impl("voxelize_dynamic", &pointmae::voxelize::voxelize_dynamic_cpu);
  m.impl("scatter_to_voxels", &pointmae::voxelize::scatter_to_voxels_cpu);
  m.impl("scatter_to_voxels_backward", &pointmae::voxelize::scatter_to_voxels_backward_cpu);
}
