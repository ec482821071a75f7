// CPU `knn` and `ball_query`: one k-d tree per cloud, built level by level in parallel, then searched
// by every query in parallel.
//
// Tree (Bentley, "Multidimensional binary search trees used for associative searching", CACM 1975;
// Friedman, Bentley & Finkel, "An algorithm for finding best matches in logarithmic expected time",
// ACM TOMS 1977): balanced, split at the median of the widest axis of the node's bounding box. The
// split position depends only on the node's size (mid = lo + size/2), so the tree is implicit: node i
// has children 2i+1 and 2i+2, every leaf sits at the same depth, and no pointers are stored. Each node
// keeps the tight bounding box of its points, which prunes better than split planes on clustered
// LiDAR data. Points are copied into leaf order, so a leaf is a contiguous run of (x, y, z, index).
//
// Search: depth-first, nearer child first, a subtree is skipped when the distance bound to its box
// is strictly larger than the current k-th distance (or the radius). Candidates are ordered by
// (dist2, packed index), so the result does not depend on the visiting order (see neighbors_core.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <vector>

#include "neighbors/neighbors_checks.h"

#include "neighbors/neighbors_core.h"

namespace pointmae {
namespace neighbors {
namespace {

// Points per leaf at most (leaves hold 16-32). Leaves are scanned with a vectorised distance loop,
// so fairly large leaves (fewer nodes to walk, fewer bounds) pay off: 32 beat 8, 12 and 16 on
// 100k uniform points, k = 16, and tied with 64.
constexpr int64_t kLeafSize = 32;
// Below this many points in the batch, the top of the trees is not split among threads.
constexpr int64_t kParallelBuildMinPoints = 32768;
// Below this many queries, sorting them by leaf costs more than the cache misses it saves.
constexpr int64_t kReorderMinQueries = 2048;

// Like at::parallel_for, but the threads take chunks of `chunk` items from a shared counter instead
// of one fixed slice each. at::parallel_for gives every thread an equal slice, so one thread that the
// OS schedules late (a busy machine, hyper-threads) stalls the whole call; here the others take its
// share. Each item is still processed exactly once, by a pure function of its inputs, so the result
// does not depend on the schedule.
template <typename F>
void parallel_chunks(int64_t n, int64_t chunk, const F& fn) {
  if (n <= 0) return;
  if (n <= chunk || at::get_num_threads() == 1 || at::in_parallel_region()) {
    fn(int64_t(0), n);
    return;
  }
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), (n + chunk - 1) / chunk);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t begin = next.fetch_add(chunk); begin < n; begin = next.fetch_add(chunk)) {
      fn(begin, std::min(n, begin + chunk));
    }
  });
}

template <typename T>
struct Entry {
  T xyz[3];
  int64_t index;  // packed row in `points`
};

// All clouds' trees in flat arrays. Cloud b owns the entries [point_offsets[b], point_offsets[b+1])
// and the nodes [node_base[b], node_base[b] + 2^(depth[b]+1) - 1).
template <typename T>
struct Forest {
  std::vector<Entry<T>> entries;          // build order; after the build, copied into:
  std::vector<T> x, y, z;                 // leaf-ordered coordinates (struct of arrays, for SIMD)
  std::vector<int64_t> index;             // leaf-ordered packed row in `points`
  std::vector<int64_t> node_base;
  std::vector<int> depth;
  std::vector<int64_t> node_lo, node_hi;  // entry range of each node (absolute)
  std::vector<T> box;                     // 6 per node: lo x, y, z, hi x, y, z
  // The median split of each internal node: the left child holds the entries below it on
  // split_axis, the right child those at or above it. Only used to order the queries.
  std::vector<int8_t> split_axis;
  std::vector<T> split_value;
};

// The depth at which a balanced halving of n points leaves at most kLeafSize points per node.
inline int leaf_depth(int64_t n) {
  int d = 0;
  while ((n + (int64_t(1) << d) - 1) >> d > kLeafSize) ++d;
  return d;
}

template <typename T>
Forest<T> build_forest(const T* pts, const std::vector<int64_t>& offsets) {
  const int64_t num_clouds = static_cast<int64_t>(offsets.size()) - 1;
  const int64_t n_total = offsets.back();
  Forest<T> f;
  f.entries.resize(n_total);
  parallel_chunks(n_total, 8192, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      f.entries[i] = Entry<T>{{pts[3 * i], pts[3 * i + 1], pts[3 * i + 2]}, i};
    }
  });
  f.node_base.resize(num_clouds + 1);
  f.depth.resize(num_clouds);
  int max_depth = 0;
  int64_t nodes = 0;
  for (int64_t b = 0; b < num_clouds; ++b) {
    f.depth[b] = leaf_depth(offsets[b + 1] - offsets[b]);
    max_depth = std::max(max_depth, f.depth[b]);
    f.node_base[b] = nodes;
    nodes += (int64_t(2) << f.depth[b]) - 1;
  }
  f.node_base[num_clouds] = nodes;
  f.node_lo.resize(nodes);
  f.node_hi.resize(nodes);
  f.box.resize(6 * nodes);
  f.split_axis.resize(nodes);
  f.split_value.resize(nodes);
  for (int64_t b = 0; b < num_clouds; ++b) {
    f.node_lo[f.node_base[b]] = offsets[b];
    f.node_hi[f.node_base[b]] = offsets[b + 1];
  }

  // Computes the box of one node and, unless it is a leaf, splits it and sets its children's ranges.
  auto build_node = [&f](int64_t b, int64_t node, int level) {
    const int64_t lo = f.node_lo[node], hi = f.node_hi[node];
    T bmin[3] = {std::numeric_limits<T>::infinity(), std::numeric_limits<T>::infinity(),
                 std::numeric_limits<T>::infinity()};
    T bmax[3] = {-bmin[0], -bmin[1], -bmin[2]};
    for (int64_t i = lo; i < hi; ++i) {
      for (int a = 0; a < 3; ++a) {
        bmin[a] = std::min(bmin[a], f.entries[i].xyz[a]);
        bmax[a] = std::max(bmax[a], f.entries[i].xyz[a]);
      }
    }
    T* box = &f.box[6 * node];
    for (int a = 0; a < 3; ++a) {
      box[a] = bmin[a];
      box[3 + a] = bmax[a];
    }
    if (level == f.depth[b]) return;  // a leaf
    int axis = 0;
    for (int a = 1; a < 3; ++a) {
      if (bmax[a] - bmin[a] > bmax[axis] - bmin[axis]) axis = a;
    }
    const int64_t mid = lo + (hi - lo) / 2;
    // Ties on the coordinate are broken by index, so the layout does not depend on the standard
    // library's nth_element strategy.
    std::nth_element(f.entries.begin() + lo, f.entries.begin() + mid, f.entries.begin() + hi,
                     [axis](const Entry<T>& x, const Entry<T>& y) {
                       return x.xyz[axis] < y.xyz[axis] || (x.xyz[axis] == y.xyz[axis] && x.index < y.index);
                     });
    f.split_axis[node] = static_cast<int8_t>(axis);
    f.split_value[node] = f.entries[mid].xyz[axis];
    const int64_t left = f.node_base[b] + 2 * (node - f.node_base[b]) + 1;
    f.node_lo[left] = lo;
    f.node_hi[left] = mid;
    f.node_lo[left + 1] = mid;
    f.node_hi[left + 1] = hi;
  };

  // Parallel build in few parallel regions (each region costs a wake-up of the thread team, which
  // is slow on a busy machine): the top levels level by level, until every thread has several
  // subtrees; then one parallel region over those subtrees, each built depth-first by one thread.
  // Small clouds are built by one thread each (a parallel region costs more than their build).
  const int64_t wanted_subtrees =
      n_total < kParallelBuildMinPoints ? 1 : 4 * static_cast<int64_t>(at::get_num_threads());
  struct Task {
    int64_t cloud, node;
    int level;
  };
  std::vector<Task> tasks;
  for (int64_t b = 0; b < num_clouds; ++b) tasks.push_back(Task{b, f.node_base[b], 0});
  int level = 0;
  while (static_cast<int64_t>(tasks.size()) < wanted_subtrees && level < max_depth) {
    parallel_chunks(static_cast<int64_t>(tasks.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) build_node(tasks[t].cloud, tasks[t].node, tasks[t].level);
    });
    std::vector<Task> next;
    for (const Task& t : tasks) {
      if (t.level == f.depth[t.cloud]) continue;  // that leaf is finished
      const int64_t left = f.node_base[t.cloud] + 2 * (t.node - f.node_base[t.cloud]) + 1;
      next.push_back(Task{t.cloud, left, t.level + 1});
      next.push_back(Task{t.cloud, left + 1, t.level + 1});
    }
    tasks.swap(next);
    ++level;
  }
  parallel_chunks(static_cast<int64_t>(tasks.size()), 1, [&](int64_t begin, int64_t end) {
    std::vector<Task> stack;
    for (int64_t t = begin; t < end; ++t) {
      stack.push_back(tasks[t]);
      while (!stack.empty()) {
        const Task task = stack.back();
        stack.pop_back();
        build_node(task.cloud, task.node, task.level);
        if (task.level == f.depth[task.cloud]) continue;
        const int64_t left = f.node_base[task.cloud] + 2 * (task.node - f.node_base[task.cloud]) + 1;
        stack.push_back(Task{task.cloud, left + 1, task.level + 1});
        stack.push_back(Task{task.cloud, left, task.level + 1});
      }
    }
  });

  // Leaf order as a struct of arrays: a leaf's distances are then one vectorisable loop.
  f.x.resize(n_total);
  f.y.resize(n_total);
  f.z.resize(n_total);
  f.index.resize(n_total);
  parallel_chunks(n_total, 8192, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      f.x[i] = f.entries[i].xyz[0];
      f.y[i] = f.entries[i].xyz[1];
      f.z[i] = f.entries[i].xyz[2];
      f.index[i] = f.entries[i].index;
    }
  });
  std::vector<Entry<T>>().swap(f.entries);
  return f;
}

template <typename T>
inline T box_bound(const T* box, T qx, T qy, T qz) {
  return sum_of_squares(axis_gap(qx, box[0], box[3]), axis_gap(qy, box[1], box[4]), axis_gap(qz, box[2], box[5]));
}

// The leaf whose cell (the region of space its median splits assign to it) holds the query: one
// comparison per level. Used to order the queries only, so a query on a split plane may go either way.
// Empty clouds have a single empty root, which serves as the home.
template <typename T>
int64_t home_leaf(const Forest<T>& f, int64_t b, const T* q) {
  const int64_t base = f.node_base[b];
  int64_t node = 0;
  for (int level = 0; level < f.depth[b]; ++level) {
    const int64_t g = base + node;
    node = 2 * node + (q[f.split_axis[g]] < f.split_value[g] ? 1 : 2);
  }
  return base + node;
}

// Searches one query in cloud b; fills the output row (dist, index) with up to k candidates within
// max_dist2, ascending, then pads with inf / -1.
template <typename T>
void search_one(const Forest<T>& f, int64_t b, T qx, T qy, T qz, T max_dist2, int64_t k, T* out_dist,
                int64_t* out_index) {
  SortedCandidates<T, int64_t> best{out_dist, out_index, k, 0};
  const int64_t base = f.node_base[b];
  const int64_t first_leaf = (int64_t(1) << f.depth[b]) - 1;
  if (k > 0 && f.node_hi[base] > f.node_lo[base]) {
    struct Pending {
      int64_t node;  // local to the cloud
      T bound;
    };
    Pending stack[2 * 64];
    int top = 0;
    stack[top++] = Pending{0, box_bound(&f.box[6 * base], qx, qy, qz)};
    while (top > 0) {
      const Pending p = stack[--top];
      if (!best.may_improve(p.bound, max_dist2)) continue;
      const int64_t node = base + p.node;
      if (p.node >= first_leaf) {
        const int64_t lo = f.node_lo[node];
        const int64_t count = f.node_hi[node] - lo;
        const T* __restrict__ xs = f.x.data() + lo;
        const T* __restrict__ ys = f.y.data() + lo;
        const T* __restrict__ zs = f.z.data() + lo;
        T d[kLeafSize];
        for (int64_t i = 0; i < count; ++i) d[i] = squared_distance(qx, qy, qz, xs[i], ys[i], zs[i]);
        for (int64_t i = 0; i < count; ++i) {
          if (d[i] > max_dist2) continue;
          if (best.full() && d[i] > best.worst()) continue;  // cheap early out; offer() decides ties
          best.offer(d[i], f.index[lo + i]);
        }
        continue;
      }
      const int64_t left = 2 * p.node + 1;
      const T bound_left = box_bound(&f.box[6 * (base + left)], qx, qy, qz);
      const T bound_right = box_bound(&f.box[6 * (base + left + 1)], qx, qy, qz);
      // Push the farther child first so the nearer one is searched first and tightens the bound.
      if (bound_left <= bound_right) {
        stack[top++] = Pending{left + 1, bound_right};
        stack[top++] = Pending{left, bound_left};
      } else {
        stack[top++] = Pending{left, bound_left};
        stack[top++] = Pending{left + 1, bound_right};
      }
    }
  }
  for (int64_t j = best.count; j < k; ++j) {
    out_dist[j] = std::numeric_limits<T>::infinity();
    out_index[j] = -1;
  }
}

template <typename T>
void search_all(const at::Tensor& query, const at::Tensor& points, const Batches& batches, T max_dist2, int64_t k,
                at::Tensor& dist, at::Tensor& index) {
  const Forest<T> forest = build_forest<T>(points.data_ptr<T>(), batches.point_offsets);
  const T* q = query.data_ptr<T>();
  T* dist_ptr = dist.data_ptr<T>();
  int64_t* index_ptr = index.data_ptr<int64_t>();
  const auto& qoff = batches.query_offsets;
  const int64_t num_queries = query.size(0);
  const int64_t num_clouds = static_cast<int64_t>(qoff.size()) - 1;
  auto cloud_of = [&](int64_t i) {
    return static_cast<int64_t>(std::upper_bound(qoff.begin(), qoff.end(), i) - qoff.begin()) - 1;
  };

  // Visiting order. Queries in random order touch the tree at random and miss the cache on every
  // leaf; sorted by the leaf they fall into, consecutive queries share most of the tree they walk.
  // The order only schedules the work: each query's result does not depend on it.
  std::vector<int64_t> order;
  if (num_queries >= kReorderMinQueries) {
    std::vector<int64_t> home(num_queries);
    parallel_chunks(num_queries, 512, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = cloud_of(i);
        home[i] = home_leaf(forest, b, q + 3 * i);
      }
    });
    // Counting sort by global node id (stable: ties keep query order).
    std::vector<int64_t> start(forest.node_base[num_clouds] + 1, 0);
    for (int64_t i = 0; i < num_queries; ++i) ++start[home[i] + 1];
    for (size_t j = 1; j < start.size(); ++j) start[j] += start[j - 1];
    order.resize(num_queries);
    for (int64_t i = 0; i < num_queries; ++i) order[start[home[i]]++] = i;
  }

  parallel_chunks(num_queries, 128, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i = order.empty() ? t : order[t];
      const int64_t b = cloud_of(i);
      search_one(forest, b, q[3 * i], q[3 * i + 1], q[3 * i + 2], max_dist2, k, dist_ptr + i * k, index_ptr + i * k);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> search(const char* op, const at::Tensor& query_in, const at::Tensor& query_offsets,
                                          const at::Tensor& points_in, const at::Tensor& point_offsets,
                                          double radius, bool use_radius, int64_t k) {
  const Batches batches = check_neighbor_inputs(op, query_in, query_offsets, points_in, point_offsets, k);
  if (use_radius) check_radius(op, radius);
  TORCH_CHECK_VALUE(query_in.scalar_type() != at::kHalf, op,
                    ": float16 is supported on CUDA only; on the CPU pass float32 or float64 `query`/`points`, got ",
                    query_in.scalar_type());
  const at::Tensor query = query_in.contiguous();
  const at::Tensor points = points_in.contiguous();
  at::Tensor dist = at::empty({query.size(0), k}, query.options());
  at::Tensor index = at::empty({query.size(0), k}, query.options().dtype(at::kLong));
  if (query.size(0) == 0 || k == 0) return {dist, index};
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "pointmae_neighbors_cpu", [&] {
    // The radius is squared in double and rounded once to the dtype, as in the reference.
    const scalar_t max_dist2 =
        use_radius ? static_cast<scalar_t>(radius * radius) : std::numeric_limits<scalar_t>::infinity();
    search_all<scalar_t>(query, points, batches, max_dist2, k, dist, index);
  });
  return {dist, index};
}

std::tuple<at::Tensor, at::Tensor> knn_cpu(const at::Tensor& query, const at::Tensor& query_offsets,
                                           const at::Tensor& points, const at::Tensor& point_offsets, int64_t k) {
  return search("pointmae.knn", query, query_offsets, points, point_offsets, 0.0, false, k);
}

std::tuple<at::Tensor, at::Tensor> ball_query_cpu(const at::Tensor& query, const at::Tensor& query_offsets,
                                                  const at::Tensor& points, const at::Tensor& point_offsets,
                                                  double radius, int64_t k) {
  return search("pointmae.ball_query", query, query_offsets, points, point_offsets, radius, true, k);
}

}  // namespace
}  // namespace neighbors
}  // namespace pointmae

TORCH_LIBRARY_IMPL(pointmae, CPU, m) {
  m.impl("knn", &pointmae::neighbors::knn_cpu);
  m.impl("ball_query", &pointmae::neighbors::ball_query_cpu);
}
