// The op catalogue: every schema of the `pointmae` namespace, in one place.
//
// Conventions (see README "Ops"):
//  - Packed batches: points (N, C) plus `offsets`, int64 (B+1,), cumulative, offsets[0] = 0,
//    offsets[B] = N. Cloud b is points[offsets[b]:offsets[b+1]].
//  - Indices in outputs are int64 into the packed input; -1 marks padding.
//  - Ops are functional: they allocate their outputs. Kernels live in csrc/<op>/<op>_{cpu,cuda}.*
//    and register with TORCH_LIBRARY_IMPL(pointmae, CPU|CUDA, m); the dispatcher picks the backend.
//  - Deterministic: the same input gives the same output on the same device; ties go to the lowest
//    index.
#include <torch/library.h>

TORCH_LIBRARY(pointmae, m) {
  // ---------------------------------------------------------------- sampling (csrc/fps)
  // Farthest point sampling, exact. start_idx: (B,) int64 local index of the first sample per cloud.
  // Returns (B, num_samples) int64 indices into the packed points.
  m.def("fps(Tensor points, Tensor offsets, int num_samples, Tensor start_idx) -> Tensor");

  // ---------------------------------------------------------------- neighbours (csrc/knn, csrc/ball_query)
  // k nearest neighbours of every query among the points of the same cloud.
  // Returns (dist2 (Q, k) sorted ascending, idx (Q, k) int64; -1 / inf where a cloud has < k points).
  m.def("knn(Tensor query, Tensor query_offsets, Tensor points, Tensor point_offsets, int k) -> (Tensor, Tensor)");
  // Up to k neighbours within `radius`, nearest first. Returns (dist2 (Q, k), idx (Q, k)), padded -1 / inf.
  m.def("ball_query(Tensor query, Tensor query_offsets, Tensor points, Tensor point_offsets, float radius, int k) -> (Tensor, Tensor)");

  // ---------------------------------------------------------------- grouping (csrc/gather)
  // out[q, j] = features[idx[q, j]] (zeros where idx = -1). features (N, C), idx (Q, k) -> (Q, k, C).
  m.def("gather_points(Tensor features, Tensor idx) -> Tensor");
  // Deterministic adjoint of gather_points: (Q, k, C) -> (num_points, C).
  m.def("gather_points_backward(Tensor grad_out, Tensor idx, SymInt num_points) -> Tensor");

  // ---------------------------------------------------------------- Chamfer distance (csrc/chamfer)
  // Returns (dist_x (Nx,), idx_x (Nx,), dist_y (Ny,), idx_y (Ny,)): for every point of x its squared
  // distance to the nearest point of y in the same cloud and that point's packed index; and the reverse.
  m.def("chamfer_distance(Tensor x, Tensor x_offsets, Tensor y, Tensor y_offsets) -> (Tensor, Tensor, Tensor, Tensor)");
  // Gradients of sum(grad_dist_x * dist_x) + sum(grad_dist_y * dist_y) w.r.t. x and y, deterministic.
  m.def("chamfer_distance_backward(Tensor grad_dist_x, Tensor grad_dist_y, Tensor x, Tensor y, Tensor idx_x, Tensor idx_y) -> (Tensor, Tensor)");

  // ---------------------------------------------------------------- voxelization (csrc/voxelize)
  // Hard voxelization. voxel_size [vx, vy, vz], point_range [x0, y0, z0, x1, y1, z1]; max_voxels per cloud.
  // Returns (voxels (V, P, C), coords (V, 4) int32 (batch, z, y, x), num_points (V,) int32,
  //          voxel_offsets (B+1,) int64, stats (B, 4) int64 [kept, outside range, non-finite, over capacity]).
  m.def("voxelize(Tensor points, Tensor offsets, float[] voxel_size, float[] point_range, int max_points_per_voxel, int max_voxels) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Dynamic voxelization. Returns (point_to_voxel (N,) int64, -1 when dropped; coords (V, 4) int32;
  //          voxel_offsets (B+1,) int64; stats (B, 3) int64 [kept, outside range, non-finite]).
  m.def("voxelize_dynamic(Tensor points, Tensor offsets, float[] voxel_size, float[] point_range) -> (Tensor, Tensor, Tensor, Tensor)");
  // Reduce point features (N, C) into voxels (V, C) with reduce = "mean" | "max". Points with
  // point_to_voxel = -1 are ignored. Returns (out (V, C), arg (V, C) int64: argmax point for "max",
  // empty for "mean").
  m.def("scatter_to_voxels(Tensor features, Tensor point_to_voxel, SymInt num_voxels, str reduce) -> (Tensor, Tensor)");
  m.def("scatter_to_voxels_backward(Tensor grad_out, Tensor point_to_voxel, Tensor arg, SymInt num_points, str reduce) -> Tensor");

  // ---------------------------------------------------------------- boxes (csrc/box_ops)
  // Boxes are (x, y, z, dx, dy, dz, heading), centre at the geometric centre, heading CCW from +x.
  m.def("box_iou_bev(Tensor boxes_a, Tensor boxes_b) -> Tensor");
  m.def("box_iou_3d(Tensor boxes_a, Tensor boxes_b) -> Tensor");
  // Greedy rotated BEV NMS. Returns kept indices (K,) int64, by descending score (ties: lower index first).
  m.def("nms_bev(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
}
