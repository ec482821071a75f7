// Inverse of an index array, in CSR form: for every target t, the positions e with idx[e] = t, in
// increasing order of e. It turns a scatter-add (which needs atomics, whose order varies on a GPU)
// into per-target ordered sums, which are deterministic. Entries with idx < 0 (padding) are left out.
// Used by the backward of gather_points and of chamfer_distance.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace pointmae {

// Host version: a stable counting sort, O(n + num_targets). `idx` values must lie in [-1, num_targets).
// row_ptr has num_targets + 1 entries; entries[row_ptr[t] .. row_ptr[t+1]) are the positions of t.
inline void inverse_index_host(const int64_t* idx, int64_t n, int64_t num_targets, std::vector<int64_t>& row_ptr,
                               std::vector<int64_t>& entries) {
  row_ptr.assign(num_targets + 1, 0);
  for (int64_t e = 0; e < n; ++e) {
    if (idx[e] >= 0) ++row_ptr[idx[e] + 1];
  }
  for (int64_t t = 0; t < num_targets; ++t) row_ptr[t + 1] += row_ptr[t];
  entries.resize(row_ptr[num_targets]);
  std::vector<int64_t> cursor(row_ptr.begin(), row_ptr.end() - 1);
  // Visiting e in increasing order makes the sort stable: each target's list is ascending in e.
  for (int64_t e = 0; e < n; ++e) {
    if (idx[e] >= 0) entries[cursor[idx[e]]++] = e;
  }
}

// Device-agnostic version built from ATen ops (used by the CUDA kernels): a stable sort of idx gives
// the positions grouped by target in increasing e; searchsorted gives where each target's run starts.
// Padding (-1) sorts first, before row_ptr[0]. Both ops are deterministic on CUDA (radix sort, binary
// search). Returns (row_ptr (num_targets + 1,), entries (n,)), int64, on idx's device.
inline std::pair<at::Tensor, at::Tensor> inverse_index_aten(const at::Tensor& idx_flat, int64_t num_targets) {
  auto sorted = idx_flat.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor& sorted_values = std::get<0>(sorted);
  const at::Tensor& entries = std::get<1>(sorted);
  auto targets = at::arange(num_targets + 1, idx_flat.options());
  auto row_ptr = at::searchsorted(sorted_values, targets);  // first position with value >= t
  return {row_ptr.contiguous(), entries.contiguous()};
}

}  // namespace pointmae
