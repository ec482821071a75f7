// Per-element logic of gather_points and of its adjoint, shared by the CPU and CUDA kernels.
//
// Forward:  out[e, c] = features[idx[e], c], or 0 where idx[e] = -1 (padding).
// Backward: grad_features[p, c] = sum over the entries e with idx[e] = p of grad_out[e, c], summed in
// increasing order of e. The entries of each point come from an inverse index (a stable counting
// sort / stable sort of idx, see inverse_index.h), so every point's sum is a plain ordered loop: no
// floating-point atomics, hence the same bits on every run.
#pragma once

#include "common/host_device.h"

#include <cstdint>

namespace pointmae {
namespace gather {

// One value of the forward: a padding entry (src < 0) reads as zero. (The CPU kernel does the same a
// whole row at a time: memcpy, or zeros for padding.)
template <typename scalar_t>
HOST_DEVICE_INLINE scalar_t gathered_value(const scalar_t* features, int64_t channels, int64_t src, int64_t c) {
  return src < 0 ? scalar_t(0) : features[src * channels + c];
}

// One value of the backward: the ordered sum over the entries [begin, end) of the inverse index.
// `acc_t` is the accumulation type (float for half inputs), so half gradients are summed in float.
template <typename scalar_t, typename acc_t>
HOST_DEVICE_INLINE acc_t ordered_entry_sum(const scalar_t* grad_out, int64_t channels, const int64_t* entries,
                                           int64_t begin, int64_t end, int64_t c) {
  acc_t acc = acc_t(0);
  for (int64_t r = begin; r < end; ++r) acc += static_cast<acc_t>(grad_out[entries[r] * channels + c]);
  return acc;
}

// The CPU variant of the same sum, a whole row at a time: acc[c] += grad_out[e, c]. Called for the
// entries of one point in increasing order, it adds in exactly the order of ordered_entry_sum.
template <typename scalar_t, typename acc_t>
HOST_DEVICE_INLINE void add_entry_row(acc_t* acc, const scalar_t* grad_out, int64_t channels, int64_t e) {
  for (int64_t c = 0; c < channels; ++c) acc[c] += static_cast<acc_t>(grad_out[e * channels + c]);
}

}  // namespace gather
}  // namespace pointmae
