// CPU kernels of gather_points and its deterministic adjoint.
#include "gather/gather_checks.h"
#include "gather/gather_core.h"
#include "gather/inverse_index.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

namespace pointmae {
namespace {

// Up to this many threads the backward scans idx once per thread instead of building an inverse index.
constexpr int64_t kOwnerScanMaxThreads = 8;

at::Tensor gather_points_cpu(const at::Tensor& features_in, const at::Tensor& idx_in) {
  gather::check_forward(features_in, idx_in);
  const auto features = features_in.contiguous();
  const auto idx = idx_in.contiguous();
  const int64_t entries = idx.numel();
  const int64_t channels = features.size(1);
  auto out = at::empty({idx.size(0), idx.size(1), channels}, features.options());
  if (entries == 0 || channels == 0) return out;
  const int64_t* idx_ptr = idx.data_ptr<int64_t>();
  // Enough rows per task that small-channel gathers are not dominated by scheduling.
  const int64_t grain = std::max<int64_t>(1, 16384 / channels);
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(features.scalar_type(), "gather_points_cpu", [&] {
    const scalar_t* feat = features.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    at::parallel_for(0, entries, grain, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        const int64_t src = idx_ptr[e];
        if (src < 0) {
          std::fill(dst + e * channels, dst + (e + 1) * channels, scalar_t(0));  // padding row
        } else {
          std::memcpy(dst + e * channels, feat + src * channels, channels * sizeof(scalar_t));
        }
      }
    });
  });
  return out;
}

at::Tensor gather_points_backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& idx_in, int64_t num_points) {
  gather::check_backward(grad_out_in, idx_in, num_points);
  const auto grad_out = grad_out_in.contiguous();
  const auto idx = idx_in.contiguous();
  const int64_t channels = grad_out.size(2);
  auto grad_features = at::zeros({num_points, channels}, grad_out.options());
  if (idx.numel() == 0 || channels == 0 || num_points == 0) return grad_features;
  const int64_t num_entries = idx.numel();
  const int64_t* idx_ptr = idx.data_ptr<int64_t>();
  const int64_t threads = at::get_num_threads();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(grad_out.scalar_type(), "gather_points_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad_out.data_ptr<scalar_t>();
    scalar_t* dst = grad_features.data_ptr<scalar_t>();
    // Every point sums its entries in increasing entry order, from zero, in acc_t: both strategies
    // below give the same bits, whatever the thread count.
    if (threads <= kOwnerScanMaxThreads) {
      // Few threads: each owns a contiguous range of points and scans all of idx in order, adding
      // only the entries that fall in its range. Reading idx once per thread is cheaper than
      // building an inverse index when there are few threads.
      at::parallel_for(0, threads, 1, [&](int64_t t_begin, int64_t t_end) {
        for (int64_t t = t_begin; t < t_end; ++t) {
          const int64_t lo = num_points * t / threads, hi = num_points * (t + 1) / threads;
          if (lo == hi) continue;
          // float / double accumulate in place (dst starts at zero); half through a float buffer.
          std::vector<acc_t> buffer(std::is_same_v<acc_t, scalar_t> ? 0 : (hi - lo) * channels, acc_t(0));
          acc_t* acc = std::is_same_v<acc_t, scalar_t> ? reinterpret_cast<acc_t*>(dst + lo * channels) : buffer.data();
          for (int64_t e = 0; e < num_entries; ++e) {
            const int64_t p = idx_ptr[e];
            if (p >= lo && p < hi) gather::add_entry_row(acc + (p - lo) * channels, g, channels, e);
          }
          if constexpr (!std::is_same_v<acc_t, scalar_t>) {
            for (int64_t v = 0; v < (hi - lo) * channels; ++v) dst[lo * channels + v] = static_cast<scalar_t>(buffer[v]);
          }
        }
      });
      return;
    }
    // Many threads: an inverse index (stable counting sort), then parallel across points.
    std::vector<int64_t> row_ptr, entries;
    inverse_index_host(idx_ptr, num_entries, num_points, row_ptr, entries);
    const int64_t grain = std::max<int64_t>(1, 4096 / channels);
    at::parallel_for(0, num_points, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(channels);
      for (int64_t p = begin; p < end; ++p) {
        const int64_t lo = row_ptr[p], hi = row_ptr[p + 1];
        if (lo == hi) continue;
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t r = lo; r < hi; ++r) gather::add_entry_row(acc.data(), g, channels, entries[r]);
        for (int64_t c = 0; c < channels; ++c) dst[p * channels + c] = static_cast<scalar_t>(acc[c]);
      }
    });
  });
  return grad_features;
}

}  // namespace

TORCH_LIBRARY_IMPL(pointmae, CPU, m) {
  m.impl("gather_points", &gather_points_cpu);
  m.impl("gather_points_backward", &gather_points_backward_cpu);
}

}  // namespace pointmae
