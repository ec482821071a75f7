// CPU kernels of chamfer_distance and its deterministic backward.
//
// Forward: a brute-force nearest-neighbour scan per cloud, which for the clouds that matter here
// (Point-MAE patches of 32 points, objects of up to a few thousand points) beats any spatial index.
// Both clouds are first copied to structure-of-arrays form (xs, ys, zs) in the compute type, so the
// scan over partner points is a unit-stride loop over GCC/Clang vector types: kLanes independent
// running minima (one per SIMD lane, each with its own index), merged at the end with the tie rule of
// chamfer_core.h. Memory is O(Nx + Ny): no distance matrix is ever formed. (Built with -mfma, the
// compiler could contract the distance into FMAs and break bit-parity with the reference: the
// build flags in setup.py do not enable it; the AVX2 clone below does not either.)
// Work is split into tasks (direction, cloud, block of queries) of similar cost, run in parallel.
//
// Backward: per point, its own term 2 g (p - nearest) plus the terms of the partner points that chose
// it, visited in increasing order through an inverse index (a counting sort), so no two threads ever
// write the same gradient and the sums are deterministic.

// The SIMD vector types only live inside inlined functions of this file: the ABI note about passing
// them by value does not apply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include "chamfer/chamfer_checks.h"
#include "chamfer/chamfer_core.h"
#include "gather/inverse_index.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <tuple>
#include <vector>

namespace pointmae {
namespace {

// 32-byte GCC/Clang vector types (8 floats or 4 doubles): the compiler lowers them to whatever SIMD
// width the target has (two SSE registers, one AVX register). Index lanes have the width of T so that
// masks from comparing distances select indices directly.
template <typename T>
struct Lanes {
  static constexpr int kLanes = 32 / sizeof(T);
  using Index = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  typedef T Value __attribute__((vector_size(kLanes * sizeof(T))));
  typedef Index Indices __attribute__((vector_size(kLanes * sizeof(T))));
};

// Nearest of `n` partner points (SoA px, py, pz) to each of the Q queries (qx[k], qy[k], qz[k]), with
// the ordering of chamfer_core.h: writes out_d[k] and the local index out_j[k] (-1 when n = 0).
// Q queries share every partner load, and their Q independent dependency chains (compare, select)
// overlap in the pipeline, which matters most for tiny partner clouds.
template <typename T, int Q>
__attribute__((always_inline)) inline void nearest_partners(const T* qx, const T* qy, const T* qz, const T* px,
                                                            const T* py, const T* pz, int64_t n, T* out_d,
                                                            int64_t* out_j) {
  using Value = typename Lanes<T>::Value;
  using Indices = typename Lanes<T>::Indices;
  using Index = typename Lanes<T>::Index;
  constexpr int kLanes = Lanes<T>::kLanes;
  constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  // Hot loop: kLanes running minima per query with plain `<`. As long as `best` holds a number (it
  // starts at +inf and only takes values that compared smaller), `d < best` is exactly
  // closer(d, best): NaN distances are never taken, and ties keep the lane's first (lowest) index.
  Value best[Q], vqx[Q], vqy[Q], vqz[Q];
  Indices best_j[Q];
  for (int k = 0; k < Q; ++k) {
    best[k] = Value{} + std::numeric_limits<T>::infinity();
    best_j[k] = Indices{} - 1;
    vqx[k] = Value{} + qx[k];
    vqy[k] = Value{} + qy[k];
    vqz[k] = Value{} + qz[k];
  }
  Indices lane;
  for (int l = 0; l < kLanes; ++l) lane[l] = l;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    Value bx, by, bz;
    std::memcpy(&bx, px + j, sizeof(Value));
    std::memcpy(&by, py + j, sizeof(Value));
    std::memcpy(&bz, pz + j, sizeof(Value));
    const Indices index = lane + static_cast<Index>(j);
    for (int k = 0; k < Q; ++k) {
      const Value d = squared_distance(vqx[k], vqy[k], vqz[k], bx, by, bz);
      const auto take = d < best[k];
      best[k] = take ? d : best[k];
      best_j[k] = take ? index : best_j[k];
    }
  }
  for (int k = 0; k < Q; ++k) {
    // Merge the lanes without branches: the smallest distance, then the smallest index among the
    // lanes holding it. Lanes that took nothing hold +inf / -1; if all do, d = +inf and jbest = -1.
    T d = best[k][0];
    for (int l = 1; l < kLanes; ++l) d = best[k][l] < d ? best[k][l] : d;
    int64_t jbest = kNone;
    for (int l = 0; l < kLanes; ++l) {
      const int64_t candidate = best[k][l] == d && best_j[k][l] >= 0 ? static_cast<int64_t>(best_j[k][l]) : kNone;
      jbest = candidate < jbest ? candidate : jbest;
    }
    if (jbest == kNone) jbest = -1;
    // The remainder, whose indices are all higher.
    for (int64_t r = j; r < n; ++r) {
      const T dr = squared_distance(qx[k], qy[k], qz[k], px[r], py[r], pz[r]);
      if (dr < d) {
        d = dr;
        jbest = r;
      }
    }
    if (jbest < 0 && n > 0) {
      // No distance below +inf (overflowing coordinates, NaN): a scalar pass with the full ordering,
      // which takes the first +inf, else (all NaN) index 0 with NaN.
      for (int64_t r = 0; r < n; ++r) {
        const T dr = squared_distance(qx[k], qy[k], qz[k], px[r], py[r], pz[r]);
        if (jbest < 0 || chamfer::closer(dr, d)) {
          d = dr;
          jbest = r;
        }
      }
    }
    if (n == 0) d = std::numeric_limits<T>::infinity();
    out_d[k] = d;
    out_j[k] = jbest;
  }
}

struct ScanTask {
  int direction;  // 0: x -> y, 1: y -> x
  int64_t query_begin, query_end;      // packed rows of the query cloud
  int64_t partner_begin, partner_end;  // packed rows of the partner cloud
};

// Splits every (direction, cloud) scan into blocks of queries of about kPairsPerTask distance
// evaluations, so tasks cost about the same whatever the cloud sizes.
constexpr int64_t kPairsPerTask = 1 << 16;

std::vector<ScanTask> make_tasks(const int64_t* xo, const int64_t* yo, int64_t clouds) {
  std::vector<ScanTask> tasks;
  for (int direction = 0; direction < 2; ++direction) {
    const int64_t* qo = direction == 0 ? xo : yo;
    const int64_t* po = direction == 0 ? yo : xo;
    for (int64_t b = 0; b < clouds; ++b) {
      const int64_t partner = po[b + 1] - po[b];
      const int64_t block = std::max<int64_t>(1, kPairsPerTask / std::max<int64_t>(1, partner));
      for (int64_t q = qo[b]; q < qo[b + 1]; q += block) {
        tasks.push_back({direction, q, std::min(q + block, qo[b + 1]), po[b], po[b + 1]});
      }
    }
  }
  return tasks;
}

// One task: the nearest partner of every query in [query_begin, query_end). `q` and `p` are SoA
// arrays (x, y, z) of the query and partner clouds; results go to packed partner indices.
template <typename T, typename scalar_t>
__attribute__((always_inline)) inline void scan_task(const ScanTask& task, const T* const* q, const T* const* p,
                                                     scalar_t* dist, int64_t* index) {
  const int64_t pb = task.partner_begin;
  const int64_t n = task.partner_end - pb;
  constexpr int kBlock = 4;  // queries per partner pass
  T d[kBlock];
  int64_t j[kBlock];
  int64_t i = task.query_begin;
  for (; i + kBlock <= task.query_end; i += kBlock) {
    nearest_partners<T, kBlock>(q[0] + i, q[1] + i, q[2] + i, p[0] + pb, p[1] + pb, p[2] + pb, n, d, j);
    for (int k = 0; k < kBlock; ++k) {
      dist[i + k] = static_cast<scalar_t>(d[k]);
      index[i + k] = j[k] < 0 ? -1 : pb + j[k];
    }
  }
  for (; i < task.query_end; ++i) {
    nearest_partners<T, 1>(q[0] + i, q[1] + i, q[2] + i, p[0] + pb, p[1] + pb, p[2] + pb, n, d, j);
    dist[i] = static_cast<scalar_t>(d[0]);
    index[i] = j[0] < 0 ? -1 : pb + j[0];
  }
}

// The scan compiled twice on x86-64 (AVX2 and baseline), picked at load time from the CPU's
// features. "avx2" does not enable FMA, so the distance keeps its separately rounded operations.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define POINTMAE_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define POINTMAE_SIMD_CLONES
#endif

#define POINTMAE_DEFINE_SCAN(T, scalar_t, name)                                                   \
  POINTMAE_SIMD_CLONES void name(const ScanTask& task, const T* const* q, const T* const* p,      \
                                 scalar_t* dist, int64_t* index) {                                \
    scan_task<T, scalar_t>(task, q, p, dist, index);                                              \
  }
POINTMAE_DEFINE_SCAN(float, float, scan_task_float)
POINTMAE_DEFINE_SCAN(double, double, scan_task_double)
POINTMAE_DEFINE_SCAN(float, c10::Half, scan_task_half)
#undef POINTMAE_DEFINE_SCAN

inline void scan(const ScanTask& t, const float* const* q, const float* const* p, float* d, int64_t* i) {
  scan_task_float(t, q, p, d, i);
}
inline void scan(const ScanTask& t, const double* const* q, const double* const* p, double* d, int64_t* i) {
  scan_task_double(t, q, p, d, i);
}
inline void scan(const ScanTask& t, const float* const* q, const float* const* p, c10::Half* d, int64_t* i) {
  scan_task_half(t, q, p, d, i);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> chamfer_distance_cpu(const at::Tensor& x,
                                                                                const at::Tensor& x_offsets,
                                                                                const at::Tensor& y,
                                                                                const at::Tensor& y_offsets) {
  const int64_t clouds = check_point_pair("pointmae.chamfer_distance", "x", x, "x_offsets", x_offsets, "y", y,
                                          "y_offsets", y_offsets);
  const int64_t nx = x.size(0), ny = y.size(0);
  auto dist_x = at::empty({nx}, x.options());
  auto dist_y = at::empty({ny}, y.options());
  auto idx_x = at::empty({nx}, x.options().dtype(at::kLong));
  auto idx_y = at::empty({ny}, y.options().dtype(at::kLong));
  if (nx == 0 && ny == 0) return {dist_x, idx_x, dist_y, idx_y};
  const auto xo_t = x_offsets.contiguous();
  const auto yo_t = y_offsets.contiguous();
  const std::vector<ScanTask> tasks = make_tasks(xo_t.data_ptr<int64_t>(), yo_t.data_ptr<int64_t>(), clouds);

  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "chamfer_distance_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    // (3, N) structure-of-arrays copies in the compute type.
    const auto xs = x.to(c10::CppTypeToScalarType<T>::value).t().contiguous();
    const auto ys = y.to(c10::CppTypeToScalarType<T>::value).t().contiguous();
    const T* xp[3] = {xs.data_ptr<T>(), xs.data_ptr<T>() + nx, xs.data_ptr<T>() + 2 * nx};
    const T* yp[3] = {ys.data_ptr<T>(), ys.data_ptr<T>() + ny, ys.data_ptr<T>() + 2 * ny};
    scalar_t* dist[2] = {dist_x.data_ptr<scalar_t>(), dist_y.data_ptr<scalar_t>()};
    int64_t* index[2] = {idx_x.data_ptr<int64_t>(), idx_y.data_ptr<int64_t>()};
    // Tasks of tiny clouds (Point-MAE patches: 32 x 32 pairs) are batched so that every chunk handed
    // to a thread is worth at least kPairsPerTask distance evaluations.
    int64_t total_pairs = 0;
    for (const ScanTask& t : tasks) total_pairs += (t.query_end - t.query_begin) * (t.partner_end - t.partner_begin);
    const int64_t num_tasks = static_cast<int64_t>(tasks.size());
    const int64_t mean_pairs = std::max<int64_t>(1, total_pairs / std::max<int64_t>(1, num_tasks));
    const int64_t grain = std::max<int64_t>(1, kPairsPerTask / mean_pairs);
    at::parallel_for(0, num_tasks, grain, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const ScanTask& task = tasks[t];
        const int dir = task.direction;
        scan(task, dir == 0 ? xp : yp, dir == 0 ? yp : xp, dist[dir], index[dir]);
      }
    });
  });
  return {dist_x, idx_x, dist_y, idx_y};
}

std::tuple<at::Tensor, at::Tensor> chamfer_distance_backward_cpu(const at::Tensor& grad_dist_x_in,
                                                                  const at::Tensor& grad_dist_y_in,
                                                                  const at::Tensor& x_in, const at::Tensor& y_in,
                                                                  const at::Tensor& idx_x_in,
                                                                  const at::Tensor& idx_y_in) {
  chamfer::check_backward(grad_dist_x_in, grad_dist_y_in, x_in, y_in, idx_x_in, idx_y_in);
  const auto x = x_in.contiguous(), y = y_in.contiguous();
  const auto gdx = grad_dist_x_in.contiguous(), gdy = grad_dist_y_in.contiguous();
  const auto idx_x = idx_x_in.contiguous(), idx_y = idx_y_in.contiguous();
  const int64_t nx = x.size(0), ny = y.size(0);
  auto grad_x = at::empty_like(x);
  auto grad_y = at::empty_like(y);
  // For every x point, the y points whose nearest it is (and the reverse), in increasing order.
  std::vector<int64_t> rows_of_x, chosen_by_y, rows_of_y, chosen_by_x;
  inverse_index_host(idx_y.data_ptr<int64_t>(), ny, nx, rows_of_x, chosen_by_y);
  inverse_index_host(idx_x.data_ptr<int64_t>(), nx, ny, rows_of_y, chosen_by_x);

  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "chamfer_distance_backward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    struct Side {
      const scalar_t* self;
      const scalar_t* partner;
      const scalar_t* grad_self;     // gradient of this side's distances
      const scalar_t* grad_partner;  // gradient of the partner side's distances
      const int64_t* nearest;        // this side's nearest partner
      const int64_t* row_ptr;        // inverse index of the partner side's nearest
      const int64_t* entries;
      scalar_t* out;
    };
    const Side sides[2] = {
        {x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), gdx.data_ptr<scalar_t>(), gdy.data_ptr<scalar_t>(),
         idx_x.data_ptr<int64_t>(), rows_of_x.data(), chosen_by_y.data(), grad_x.data_ptr<scalar_t>()},
        {y.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), gdy.data_ptr<scalar_t>(), gdx.data_ptr<scalar_t>(),
         idx_y.data_ptr<int64_t>(), rows_of_y.data(), chosen_by_x.data(), grad_y.data_ptr<scalar_t>()}};
    at::parallel_for(0, nx + ny, 2048, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const Side& s = sides[r < nx ? 0 : 1];
        const int64_t i = r < nx ? r : r - nx;
        const T ax = s.self[3 * i], ay = s.self[3 * i + 1], az = s.self[3 * i + 2];
        T gx = T(0), gy = T(0), gz = T(0);
        const int64_t own = s.nearest[i];
        if (own >= 0) {
          chamfer::add_distance_gradient<T>(s.grad_self[i], ax, ay, az, s.partner[3 * own], s.partner[3 * own + 1],
                                            s.partner[3 * own + 2], gx, gy, gz);
        }
        for (int64_t k = s.row_ptr[i]; k < s.row_ptr[i + 1]; ++k) {
          const int64_t j = s.entries[k];
          chamfer::add_distance_gradient<T>(s.grad_partner[j], ax, ay, az, s.partner[3 * j], s.partner[3 * j + 1],
                                            s.partner[3 * j + 2], gx, gy, gz);
        }
        s.out[3 * i] = static_cast<scalar_t>(gx);
        s.out[3 * i + 1] = static_cast<scalar_t>(gy);
        s.out[3 * i + 2] = static_cast<scalar_t>(gz);
      }
    });
  });
  return {grad_x, grad_y};
}

}  // namespace

TORCH_LIBRARY_IMPL(pointmae, CPU, m) {
  m.impl("chamfer_distance", &chamfer_distance_cpu);
  m.impl("chamfer_distance_backward", &chamfer_distance_backward_cpu);
}

}  // namespace pointmae
