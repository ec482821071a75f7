// Farthest point sampling on the CPU: exact FPS accelerated with bucket pruning in the spirit of
// QuickFPS (Han et al., "QuickFPS: Architecture and Algorithm Co-Design for Farthest Point Sampling
// in Large-Scale Point Clouds", IEEE TCAD 2023).
//
// Each cloud is cut by a KD-tree (splits along the widest axis, at the middle of the box or, when that
// is too unbalanced, at the median) into buckets (leaves) of at
// most kBucketSize points, stored contiguously (structure of arrays). Every tree node keeps the
// bounding box of its points and caches its farthest unselected point (max min_dist, lowest index on
// ties). When a new sample s is chosen, a node is revisited only if s may be closer to one of its
// points than that point's current min_dist, i.e. if the box's lower bound on dist2(., s) is below
// the node's cached max (every point below has min_dist <= that max, so nothing there can change);
// only the buckets reached that way are rescanned. The bound is computed with the very arithmetic of
// dist2 (fps_core.h), so pruning never changes the result: the output is the naive algorithm's,
// index for index. The next sample is the root's cached farthest point.
//
// Parallelism (at::parallel_for / at::parallel_reduce): across clouds when the batch has enough
// clouds to feed the threads; otherwise within one large cloud, across buckets, in the iterations
// that rescan many points (the early ones: later samples touch few buckets, and a parallel region per
// iteration would cost more than it saves): the subtrees below a fixed depth are updated in
// parallel, then the few nodes above them are refreshed. A large cloud's tree is also built on two
// threads (its two halves). The result never depends on the thread count.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "fps/fps_checks.h"
#include "fps/fps_core.h"

namespace pointmae {
namespace fps {
namespace {

// Leaf size: small enough that a rescan touches few points that did not need it, large enough that
// the tree walk, the tree build and the per-leaf bookkeeping stay cheap. Chosen by measurement
// (tools/bench/fps.py): 32 / 64 / 128 / 256 gave 22 / 18 / 18 / 20 ms on KITTI 000001 -> 4096 and
// 23 / 18 / 16 / 17 ms on a uniform 100k cloud -> 1024 (one thread).
constexpr int32_t kBucketSize = 128;
// An iteration updates its subtrees in parallel when the previous one rescanned at least this many
// points (below it, the parallel region's fork/join costs more than the work).
constexpr int64_t kParallelRescanPoints = 65536;
// Clouds smaller than this are never split across threads; a batch of them is parallel over clouds.
constexpr int64_t kInnerParallelMinPoints = 32768;

// The candidate for the next sample: larger min_dist first, then lower local index.
template <typename acc_t>
struct Best {
  acc_t dist;     // min_dist of the candidate (kSelected: none left)
  int32_t index;  // local index in the cloud (-1: none)
  int32_t pos;    // position in the bucket-ordered arrays
};

template <typename acc_t>
Best<acc_t> pick(const Best<acc_t>& a, const Best<acc_t>& b) {
  if (b.index < 0) return a;
  if (a.index < 0) return b;
  return better(b.dist, b.index, a.dist, a.index) ? b : a;
}

template <typename acc_t>
struct Node {
  acc_t lo[3], hi[3];    // bounding box of the node's points
  Best<acc_t> best;      // its farthest unselected point
  int32_t begin, end;    // positions [begin, end) of its points
  int32_t left, right;   // child nodes; -1 for a leaf (bucket)
};

template <typename acc_t>
struct PointRecord {
  acc_t c[3];
  int32_t index;
};

template <typename acc_t>
class CloudSampler {
 public:
  // Copies cloud `pts` (n rows of 3 coordinates, row stride 3) into bucket order and builds the tree.
  template <typename scalar_t>
  // parallel_build: build the two halves of the tree on two threads (one large cloud).
  CloudSampler(const scalar_t* pts, int32_t n, bool parallel_build) : n_(n) {
    std::vector<PointRecord<acc_t>> recs(n);
    for (int32_t i = 0; i < n; ++i) {
      recs[i] = PointRecord<acc_t>{{static_cast<acc_t>(pts[3 * static_cast<int64_t>(i) + 0]),
                                    static_cast<acc_t>(pts[3 * static_cast<int64_t>(i) + 1]),
                                    static_cast<acc_t>(pts[3 * static_cast<int64_t>(i) + 2])},
                                   i};
    }
    nodes_.reserve(2 * (static_cast<size_t>(n) / kBucketSize + 1) * 2);
    if (n > 0) build(recs, 0, n, nodes_, parallel_build);
    x_.resize(n);
    y_.resize(n);
    z_.resize(n);
    index_.resize(n);
    pos_of_index_.resize(n);
    for (int32_t p = 0; p < n; ++p) {
      x_[p] = recs[p].c[0];
      y_[p] = recs[p].c[1];
      z_[p] = recs[p].c[2];
      index_[p] = recs[p].index;
      pos_of_index_[recs[p].index] = p;
    }
    min_dist_.assign(n, std::numeric_limits<acc_t>::infinity());
    // Before the first sample every min_dist is +inf: each node's farthest point is its lowest index.
    // Children come after their parent in the array, so a backward sweep sees children first.
    for (int32_t v = static_cast<int32_t>(nodes_.size()) - 1; v >= 0; --v) {
      Node<acc_t>& node = nodes_[v];
      node.best = node.left < 0 ? Best<acc_t>{std::numeric_limits<acc_t>::infinity(), index_[node.begin], node.begin}
                                : pick(nodes_[node.left].best, nodes_[node.right].best);
    }
  }

  // Writes num_samples indices (local + base) to out, starting from local index `start`.
  void run(int32_t start, int64_t num_samples, int64_t base, int64_t* out, bool inner_parallel) {
    if (num_samples == 0) return;
    if (inner_parallel) split_for_threads();
    Best<acc_t> sample{acc_t(0), start, pos_of_index_[start]};
    int64_t rescanned = n_;  // the first sample rescans everything
    for (int64_t k = 0; k < num_samples; ++k) {
      out[k] = base + sample.index;
      if (k + 1 == num_samples) break;
      min_dist_[sample.pos] = static_cast<acc_t>(kSelected);
      const acc_t s[3] = {x_[sample.pos], y_[sample.pos], z_[sample.pos]};
      if (inner_parallel && rescanned >= kParallelRescanPoints) {
        rescanned = at::parallel_reduce(
            0, static_cast<int64_t>(frontier_.size()), 1, int64_t(0),
            [&](int64_t f0, int64_t f1, int64_t count) {
              for (int64_t f = f0; f < f1; ++f) count += update(frontier_[f], s, sample.pos);
              return count;
            },
            std::plus<int64_t>());
        // Refresh the nodes above the frontier, children before parents.
        for (auto it = upper_.rbegin(); it != upper_.rend(); ++it) {
          Node<acc_t>& node = nodes_[*it];
          node.best = pick(nodes_[node.left].best, nodes_[node.right].best);
        }
      } else {
        rescanned = update(0, s, sample.pos);
      }
      sample = nodes_[0].best;
    }
  }

 private:
  // Recursive median split along the widest axis of recs[lo, hi); appends nodes to `nodes` in
  // depth-first preorder (a parent before its children) and returns the node's id. With
  // `parallel_halves`, the two subtrees of this node are built concurrently into separate arrays and
  // then appended in order (ids shifted), which gives exactly the serial build's array.
  static int32_t build(std::vector<PointRecord<acc_t>>& recs, int32_t lo, int32_t hi, std::vector<Node<acc_t>>& nodes,
                       bool parallel_halves = false) {
    const int32_t id = static_cast<int32_t>(nodes.size());
    nodes.push_back(Node<acc_t>{});
    Node<acc_t> node{};
    node.begin = lo;
    node.end = hi;
    node.left = node.right = -1;
    for (int d = 0; d < 3; ++d) {
      node.lo[d] = recs[lo].c[d];
      node.hi[d] = recs[lo].c[d];
    }
    for (int32_t p = lo + 1; p < hi; ++p) {
      for (int d = 0; d < 3; ++d) {
        node.lo[d] = std::min(node.lo[d], recs[p].c[d]);
        node.hi[d] = std::max(node.hi[d], recs[p].c[d]);
      }
    }
    if (hi - lo <= kBucketSize) {
      // A bucket keeps its points in increasing index order, so that the first maximum met in a
      // scan is the one with the lowest index (the FPS tie rule).
      std::sort(recs.begin() + lo, recs.begin() + hi,
                [](const PointRecord<acc_t>& a, const PointRecord<acc_t>& b) { return a.index < b.index; });
    } else {
      int axis = 0;
      for (int d = 1; d < 3; ++d) {
        if (node.hi[d] - node.lo[d] > node.hi[axis] - node.lo[axis]) axis = d;
      }
      // Cut at the middle of the box (one partition pass); if that leaves fewer than a quarter of the
      // points on one side (clustered LiDAR returns, duplicates), cut at the median instead, which
      // keeps the depth logarithmic. Both are functions of the input only (deterministic).
      const acc_t cut = node.lo[axis] * acc_t(0.5) + node.hi[axis] * acc_t(0.5);
      int32_t mid = static_cast<int32_t>(
          std::partition(recs.begin() + lo, recs.begin() + hi,
                         [axis, cut](const PointRecord<acc_t>& r) { return r.c[axis] < cut; }) -
          recs.begin());
      const int32_t quarter = (hi - lo) / 4;
      if (mid - lo < quarter || hi - mid < quarter) {
        mid = lo + (hi - lo) / 2;
        std::nth_element(recs.begin() + lo, recs.begin() + mid, recs.begin() + hi,
                         [axis](const PointRecord<acc_t>& a, const PointRecord<acc_t>& b) {
                           return a.c[axis] < b.c[axis] || (a.c[axis] == b.c[axis] && a.index < b.index);
                         });
      }
      if (parallel_halves) {
        std::vector<Node<acc_t>> halves[2];
        at::parallel_for(0, 2, 1, [&](int64_t h0, int64_t h1) {
          for (int64_t h = h0; h < h1; ++h) build(recs, h == 0 ? lo : mid, h == 0 ? mid : hi, halves[h]);
        });
        for (int h = 0; h < 2; ++h) {
          const int32_t shift = static_cast<int32_t>(nodes.size());
          (h == 0 ? node.left : node.right) = shift;
          for (Node<acc_t> child : halves[h]) {
            if (child.left >= 0) {
              child.left += shift;
              child.right += shift;
            }
            nodes.push_back(child);
          }
        }
      } else {
        node.left = build(recs, lo, mid, nodes);
        node.right = build(recs, mid, hi, nodes);
      }
    }
    nodes[id] = node;
    return id;
  }

  // The nodes at the depth where the tree has about 4 subtrees per thread (the frontier, updated in
  // parallel) and the nodes above them (refreshed serially afterwards).
  void split_for_threads() {
    frontier_.clear();
    upper_.clear();
    const int64_t want = 4 * static_cast<int64_t>(at::get_num_threads());
    std::vector<int32_t> level{0};
    while (static_cast<int64_t>(level.size()) < want) {
      std::vector<int32_t> next;
      bool split_any = false;
      for (int32_t v : level) {
        if (nodes_[v].left < 0) {
          frontier_.push_back(v);  // a leaf above the target depth belongs to the frontier as is
        } else {
          upper_.push_back(v);
          next.push_back(nodes_[v].left);
          next.push_back(nodes_[v].right);
          split_any = true;
        }
      }
      level.swap(next);
      if (!split_any) break;
    }
    frontier_.insert(frontier_.end(), level.begin(), level.end());
    // Parents before children (ids are preorder), so reverse iteration refreshes children first.
    std::sort(upper_.begin(), upper_.end());
  }

  // Applies the new sample s (at position home) to the subtree of node v; returns the number of
  // points rescanned.
  int64_t update(int32_t v, const acc_t* s, int32_t home) {
    Node<acc_t>& node = nodes_[v];
    const bool holds_home = home >= node.begin && home < node.end;
    // Without the sample itself below (whose cached entry is now stale), a box at least as far from
    // s as its farthest point cannot change.
    if (!holds_home && !(box_dist2_lower_bound<acc_t>(s[0], s[1], s[2], node.lo, node.hi) < node.best.dist)) {
      return 0;
    }
    if (node.left < 0) {
      rescan(node, s);
      return node.end - node.begin;
    }
    const int64_t count = update(node.left, s, home) + update(node.right, s, home);
    node.best = pick(nodes_[node.left].best, nodes_[node.right].best);
    return count;
  }

  // min_dist = min(min_dist, dist2(p, s)) over a bucket, then its new farthest point. Two simple
  // loops (update + max, then the first position holding the max) that the compiler vectorizes.
  void rescan(Node<acc_t>& bucket, const acc_t* s) {
    const int32_t begin = bucket.begin, end = bucket.end;
    const acc_t sx = s[0], sy = s[1], sz = s[2];
    const acc_t* __restrict x = x_.data();
    const acc_t* __restrict y = y_.data();
    const acc_t* __restrict z = z_.data();
    acc_t* __restrict md = min_dist_.data();
    acc_t max_dist = static_cast<acc_t>(kSelected);
    for (int32_t p = begin; p < end; ++p) {
      const acc_t d = dist2<acc_t>(x[p], y[p], z[p], sx, sy, sz);
      const acc_t m = d < md[p] ? d : md[p];  // selected points stay at kSelected (< every d)
      md[p] = m;
      max_dist = m > max_dist ? m : max_dist;
    }
    int32_t max_pos = begin;
    while (max_pos < end && md[max_pos] != max_dist) ++max_pos;
    bucket.best = max_dist > static_cast<acc_t>(kSelected) ? Best<acc_t>{max_dist, index_[max_pos], max_pos}
                                                           : Best<acc_t>{max_dist, -1, -1};
  }

  int32_t n_;
  std::vector<Node<acc_t>> nodes_;  // depth-first preorder; nodes_[0] is the root
  std::vector<acc_t> x_, y_, z_, min_dist_;
  std::vector<int32_t> index_;         // position -> local index
  std::vector<int32_t> pos_of_index_;  // local index -> position
  std::vector<int32_t> frontier_, upper_;
};

at::Tensor fps_cpu(const at::Tensor& points, const at::Tensor& offsets, int64_t num_samples,
                   const at::Tensor& start_idx) {
  const std::vector<int64_t> off = check_inputs(points, offsets, num_samples, start_idx);
  TORCH_CHECK(points.device().is_cpu(), kOp, ": CPU kernel called with `points` on ", points.device());
  const int64_t batch = static_cast<int64_t>(off.size()) - 1;
  auto out = at::empty({batch, num_samples}, points.options().dtype(at::kLong));
  if (batch == 0 || num_samples == 0) return out;

  int64_t max_n = 0;
  for (int64_t b = 0; b < batch; ++b) max_n = std::max(max_n, off[b + 1] - off[b]);
  TORCH_CHECK_VALUE(max_n <= std::numeric_limits<int32_t>::max(), kOp, ": clouds of more than 2^31 - 1 points are "
                    "not supported, got a cloud of ", max_n, " points");

  const auto pts = points.contiguous();
  const auto start = start_idx.contiguous();
  const int64_t* start_ptr = start.data_ptr<int64_t>();
  int64_t* out_ptr = out.data_ptr<int64_t>();
  // Few large clouds: one cloud at a time, each split across the threads; otherwise one cloud per task.
  const bool across_clouds = batch >= at::get_num_threads() || max_n < kInnerParallelMinPoints;

  AT_DISPATCH_FLOATING_TYPES_AND_HALF(pts.scalar_type(), "pointmae_fps_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* data = pts.data_ptr<scalar_t>();
    auto sample_cloud = [&](int64_t b, bool inner_parallel) {
      const int64_t n = off[b + 1] - off[b];
      CloudSampler<acc_t> sampler(data + 3 * off[b], static_cast<int32_t>(n), inner_parallel);
      sampler.run(static_cast<int32_t>(start_ptr[b]), num_samples, off[b], out_ptr + b * num_samples, inner_parallel);
    };
    if (across_clouds) {
      at::parallel_for(0, batch, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) sample_cloud(b, false);
      });
    } else {
      for (int64_t b = 0; b < batch; ++b) sample_cloud(b, true);
    }
  });
  return out;
}

}  // namespace
}  // namespace fps
}  // namespace pointmae

TORCH_LIBRARY_IMPL(pointmae, CPU, m) { m.impl("fps", &pointmae::fps::fps_cpu); }
