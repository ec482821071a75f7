// CPU kernels of voxelize / voxelize_dynamic / scatter_to_voxels.
//
// Voxelization runs in these steps, all deterministic whatever the thread count:
//  A. keys: every point's voxel key (or a drop status: outside the range, non-finite).
//  B. grouping: an open-addressing hash table (linear probing) maps a key to its voxel.
//     Memory is O(points), never O(grid cells) (KITTI at 0.05 m would be 90M cells).
//     - A cloud handled by one thread (small clouds, or one thread) is walked once in point order,
//       computing keys a chunk at a time as it goes: a new key gets the next voxel number, so voxels
//       are numbered by first appearance, and the running count of a voxel is the slot of the point
//       inside it (the serial algorithm of VoxelNet / SECOND, with the table slot of a point
//       prefetched ahead). Clouds of a batch run in parallel.
//       Hard voxelization (walk_hard) keeps per voxel only its key, count and the input indices of its
//       first P points, in a branch-free walk over the in-grid keys; dynamic voxelization
//       (group_serial) keeps a voxel per point.
//     - A large cloud in a batch of fewer clouds than threads first gets its keys in parallel (A).
//       With 2-3 threads the serial walk then reads them (hard voxelization: one helper computes keys
//       ahead of the walk, which never waits for it, see KeysAhead). From kMinThreadsToShard threads on,
//       the walk is split into shards by a hash of the key: every thread walks the whole cloud in
//       point order but handles only its own keys, so a voxel is owned by one thread that sees its
//       points in input order; it records each point's voxel's first point and slot.
//  C. sharded clouds: one serial pass numbers the voxels at their first point, in point order. The
//     result is the same as the serial walk's, bit for bit.
//  D. output. Hard: every voxel's (P, C) row is written once, its stored points then zeros (in
//     parallel over voxels from kMinThreadsToShard threads on); voxels numbered >= max_voxels and slots >= P were never stored ("over
//     capacity"). Dynamic: every point's voxel index.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <system_error>
#include <thread>
#include <vector>

#include "common/checks.h"
#include "voxelize/voxelize_checks.h"
#include "voxelize/voxelize_core.h"

namespace pointmae {
namespace voxelize {
namespace {

// A cloud is split into shards only when every shard gets at least this many points: below that, the
// walk over the whole cloud that every shard does, and the extra numbering pass, cost more than they save.
constexpr int64_t kPointsPerShard = 32768;
constexpr int64_t kMinThreadsToShard = 4;
constexpr uint64_t kSparseTableBytes = 512 * 1024;
constexpr uint64_t kRetainedTableBytes = 8 * 1024 * 1024;
// How many points ahead the table slot is prefetched (about a memory latency of work).
constexpr int64_t kPrefetchDistance = 16;

template <typename T>
std::unique_ptr<T[]> uninitialized(int64_t n) {
  return std::unique_ptr<T[]>(new T[std::max<int64_t>(n, 1)]);  // no value-initialisation: written before read
}

// One entry of the open-addressing table: 16 bytes, so a probe touches one cache line.
struct Entry {
  int64_t key;    // -1 = empty
  int32_t value;  // voxel number (serial walk) or first point, local to the cloud (sharded walk)
  int32_t count;  // points of this voxel seen so far
};

// The table of group_serial (voxelize_dynamic) and of sharded walks; hard voxelization's serial walk
// uses VoxelTable below.
class Table {
 public:
  explicit Table(int64_t members) {
    uint64_t capacity = 16;
    while (capacity < 2 * static_cast<uint64_t>(members)) capacity <<= 1;  // load <= 1/2
    // A small table (e.g. capped by max_voxels = 16000) is made sparser, load <= 1/4, while it stays
    // cache-sized: misses (points of voxels beyond the cap) then end after ~1.4 probes instead of ~2.5.
    // Measured on KITTI (with the earlier hard walk): 1.5 ms instead of 1.7 ms; doubling a larger table
    // was slower.
    if (capacity * sizeof(Entry) <= kSparseTableBytes) capacity <<= 1;
    mask_ = capacity - 1;
    entries_ = uninitialized<Entry>(static_cast<int64_t>(capacity));
    for (uint64_t i = 0; i < capacity; ++i) entries_[i].key = -1;
  }
  // The entry of `key`; if absent, inserted (key set, count 0) when `may_insert`, else nullptr.
  Entry* find_or_insert(int64_t key, uint64_t hash, bool may_insert, bool& inserted) {
    uint64_t at = hash & mask_;
    inserted = false;
    while (true) {
      Entry& e = entries_[at];
      if (e.key == key) return &e;
      if (e.key == -1) {
        if (!may_insert) return nullptr;
        e.key = key;
        e.count = 0;
        inserted = true;
        return &e;
      }
      at = (at + 1) & mask_;
    }
  }
  // Starts loading the line of `hash`'s home slot: probes are random accesses into a table larger
  // than L1, and the keys of the next points are known in advance.
  void prefetch(uint64_t hash) const { __builtin_prefetch(&entries_[hash & mask_]); }
  uint64_t capacity() const { return mask_ + 1; }
  const Entry& at(uint64_t i) const { return entries_[i]; }

 private:
  uint64_t mask_;
  std::unique_ptr<Entry[]> entries_;
};

// The table of the hard voxelization walk (walk_hard): key -> voxel number, 8 bytes per entry when the
// grid's keys fit in 32 bits (every real grid: KITTI at 0.05 m has 9e7 cells), so the table of a
// capped walk (16k-40k voxels) stays in the L2 cache; 16 bytes otherwise. The point counts live in a
// dense per-voxel array instead, which the output step reads in voxel order.
template <typename key_t>
class VoxelTable {
 public:
  static constexpr key_t kEmpty = static_cast<key_t>(~key_t(0));
  explicit VoxelTable(int64_t members) {
    uint64_t capacity = 16;
    int bits = 4;
    while (capacity < 2 * static_cast<uint64_t>(members)) capacity <<= 1, ++bits;  // load <= 1/2
    // Sparser (load <= 1/4) while it stays cache-sized: misses (points of voxels beyond max_voxels)
    // then end after ~1.4 probes instead of ~2.5.
    if (capacity * sizeof(Slot) <= kSparseTableBytes) capacity <<= 1, ++bits;
    mask_ = capacity - 1;
    shift_ = 64 - bits;
    // Tables up to kRetainedTableBytes live in a per-thread buffer kept across calls (a table is used
    // only inside one walk). A fresh multi-MB allocation per call was, depending on the allocator's
    // state, handed back to the OS and page-faulted in again on every call: +3 ms on a KITTI sweep at
    // max_voxels 150000 in a process that had voxelized with max_voxels 16000 before.
    thread_local std::unique_ptr<Slot[]> retained;
    thread_local uint64_t retained_capacity = 0;
    if (capacity * sizeof(Slot) <= kRetainedTableBytes) {
      if (retained_capacity < capacity) {
        retained = uninitialized<Slot>(static_cast<int64_t>(capacity));
        retained_capacity = capacity;
      }
      slots_ = retained.get();
    } else {
      owned_ = uninitialized<Slot>(static_cast<int64_t>(capacity));
      slots_ = owned_.get();
    }
    std::memset(static_cast<void*>(slots_), 0xff, capacity * sizeof(Slot));  // every key kEmpty
  }
  // Fibonacci hashing (Knuth, TAOCP vol. 3, 6.4): the top bits of key * 2^64 / phi. One multiply;
  // neighbouring cells of the grid land far apart, so linear probing stays short.
  uint64_t home(key_t key) const { return (static_cast<uint64_t>(key) * 0x9E3779B97F4A7C15ULL) >> shift_; }
  void prefetch(key_t key) const { __builtin_prefetch(&slots_[home(key)]); }
  struct Slot {
    key_t key;
    int32_t voxel;
  };
  // The slot that holds `key`, or the empty slot where it belongs (key == kEmpty).
  Slot& locate(key_t key) {
    uint64_t at = home(key);
    while (slots_[at].key != key && slots_[at].key != kEmpty) at = (at + 1) & mask_;
    return slots_[at];
  }

 private:
  uint64_t mask_;
  int shift_;
  Slot* slots_;
  std::unique_ptr<Slot[]> owned_;  // a table too large to keep between calls
};

inline int64_t shard_of(uint64_t hash, int64_t num_shards) {
  // Multiply-shift on the high half of the hash: uniform over [0, num_shards), and independent of the
  // low bits that index the table.
  return static_cast<int64_t>(((hash >> 32) * static_cast<uint64_t>(num_shards)) >> 32);
}

// Per-cloud result of steps B-C.
struct Cloud {
  int64_t begin = 0, end = 0, num_shards = 1;
  bool keys_ready = false;  // step A already ran for this cloud (in parallel): the walk reads a.key
  std::vector<int64_t> voxel_key;    // (voxels seen,) key of every voxel, in first-appearance order
  std::vector<int32_t> voxel_count;  // (voxels seen,) its number of points
  int64_t outside = 0, non_finite = 0;
};

struct Assignment {
  std::unique_ptr<int64_t[]> key;    // (N,) sharded clouds only: voxel key, or kOutsideRange / kNonFinite
  std::unique_ptr<int32_t[]> voxel;  // (N,) voxel number inside the cloud, -1 if dropped
  std::unique_ptr<int32_t[]> slot;   // (N,) rank of the point among its voxel's points, input order
  std::unique_ptr<int32_t[]> first;  // (N,) sharded clouds only: first point of the voxel (local)
  std::unique_ptr<int32_t[]> count;  // (N,) sharded clouds only: voxel size, stored at its first point
  std::unique_ptr<uint8_t[]> shard;  // (N,) sharded clouds only: shard of the key, kNoShard if dropped
};

constexpr uint8_t kNoShard = 255;
constexpr int64_t kMaxShards = 64;

// Hard voxelization keeps, per voxel, the input indices of its first P points rather than a voxel and
// slot per point: the output step then writes the (V, P, C) voxels in order, every row once (a copied
// point or zeros), with no zero-fill pass over the output and no per-point arrays.
struct HardCloud {
  int64_t voxels = 0;                  // allocated voxels, <= max_voxels
  int64_t stride = 0;                  // min(P, cloud size): no voxel holds more points than its cloud
  // Rows [0, voxels) are the voxels; walk_hard allocates one spare row more (see there).
  std::unique_ptr<int64_t[]> key;      // (voxels,) linear key, in first-appearance order
  std::unique_ptr<int32_t[]> count;    // (voxels,) all the voxel's points, stored or over capacity
  std::unique_ptr<int32_t[]> members;  // (voxels, stride) input index of its first min(count, P) points
  int64_t kept = 0, outside = 0, non_finite = 0;
};

// Keys of points [first, first + size) for the hard walk, compacted: the keys of the points inside
// the grid go to key_out with their input index in index_out (returns how many); the dropped ones
// are only counted. voxel_key's early exit for points outside the range is kept: on a sweep they come
// in long runs (e.g. everything behind the car), so that branch is well predicted.
template <typename scalar_t>
int64_t compact_keys(const scalar_t* points, int64_t channels, int64_t first, int64_t size, const GridParams& g,
                     int64_t* key_out, int32_t* index_out, int64_t& outside, int64_t& non_finite) {
  int64_t kept = 0, dropped_outside = 0, dropped_non_finite = 0;
  for (int64_t j = 0; j < size; ++j) {
    const scalar_t* row = points + (first + j) * channels;
    const int64_t key = voxel_key<scalar_t>(row[0], row[1], row[2], g);
    key_out[kept] = key;
    index_out[kept] = static_cast<int32_t>(first + j);
    kept += key >= 0;
    dropped_outside += key == kOutsideRange;
    dropped_non_finite += key == kNonFinite;
  }
  outside += dropped_outside;
  non_finite += dropped_non_finite;
  return kept;
}

// Keys of a large cloud for a hard walk with 2-3 threads. The walking thread computes keys block by
// block from the front as it walks; one helper thread computes blocks from the back, ahead of it. A block belongs to whoever claims it first, and the walker never waits for keys: a
// block the helper holds but has not finished, the walker computes again into its own buffers (it only
// waits, before returning, for the helper to leave the points: see walk_hard). So a helper
// that starts late or is descheduled (a busy machine) costs nothing, and with a free core the walker
// finds the back part of the cloud ready. (An OpenMP region's closing barrier waits for every worker
// to be scheduled: on a loaded 2-core machine that cost milliseconds for a 1 ms op.) This state, with
// the helper's buffers, is shared with the helper, which may outlive the op (a late start finds every
// block taken and returns without reading the points).
constexpr int64_t kKeyBlock = 8192;
// Member slots (int32 input indices) a hard walk reserves before it knows how many voxels it opens:
// 16 MB. More are added only if needed.
constexpr int64_t kInitialMemberSlots = int64_t(1) << 22;
enum BlockOwner : int { kFree = 0, kHelperBusy = 1, kHelperDone = 2, kWalker = 3 };

template <typename scalar_t>
struct KeysAhead {
  at::Tensor points;  // (N, C) contiguous; held so that its data outlives the helper
  int64_t channels = 0, begin = 0, end = 0, num_blocks = 0;
  GridParams grid{};
  std::unique_ptr<int64_t[]> key;    // (end - begin,): block k's keys compacted at k * kKeyBlock
  std::unique_ptr<int32_t[]> index;  // likewise, their input indices
  std::unique_ptr<std::atomic<int>[]> owner;                // (num_blocks,) BlockOwner
  std::unique_ptr<int64_t[]> inside, outside, non_finite;   // (num_blocks,) results of the helper's blocks

  // compact_keys of block k into this state's buffers; returns its number of in-grid keys.
  int64_t compute(int64_t k, int64_t& out_outside, int64_t& out_non_finite) {
    const int64_t first = begin + k * kKeyBlock;
    return compact_keys<scalar_t>(points.data_ptr<scalar_t>(), channels, first, std::min(kKeyBlock, end - first),
                                  grid, key.get() + k * kKeyBlock, index.get() + k * kKeyBlock, out_outside,
                                  out_non_finite);
  }
  // The helper: claims blocks from the back until it meets the walker.
  void help() {
    for (int64_t k = num_blocks - 1; k >= 0; --k) {
      int expected = kFree;
      if (!owner[k].compare_exchange_strong(expected, kHelperBusy)) return;
      outside[k] = non_finite[k] = 0;
      inside[k] = compute(k, outside[k], non_finite[k]);
      owner[k].store(kHelperDone, std::memory_order_release);
    }
  }
};

template <typename scalar_t>
std::shared_ptr<KeysAhead<scalar_t>> start_keys_ahead(const at::Tensor& points, int64_t begin, int64_t end,
                                                      const GridParams& grid) {
  auto ahead = std::make_shared<KeysAhead<scalar_t>>();
  ahead->points = points;
  ahead->channels = points.size(1);
  ahead->begin = begin;
  ahead->end = end;
  ahead->grid = grid;
  ahead->num_blocks = (end - begin + kKeyBlock - 1) / kKeyBlock;
  ahead->key = uninitialized<int64_t>(end - begin);
  ahead->index = uninitialized<int32_t>(end - begin);
  ahead->owner.reset(new std::atomic<int>[ahead->num_blocks]);
  for (int64_t k = 0; k < ahead->num_blocks; ++k) ahead->owner[k].store(kFree, std::memory_order_relaxed);
  ahead->inside = uninitialized<int64_t>(ahead->num_blocks);
  ahead->outside = uninitialized<int64_t>(ahead->num_blocks);
  ahead->non_finite = uninitialized<int64_t>(ahead->num_blocks);
  // A thread of its own, not a task on torch's inter-op pool: starting that pool fixes its size, and a
  // later torch.set_num_interop_threads() in the user's program would then raise.
  try {
    std::thread([ahead] { ahead->help(); }).detach();
  } catch (const std::system_error&) {
    // No thread to be had (the process is at its limit): the walker computes every block itself.
  }
  return ahead;
}

// Steps A and B of hard voxelization for one cloud, one thread: the serial walk of VoxelNet / SECOND
// (voxels numbered at their first point, so by first appearance; a voxel's running count is the slot
// of a point in it), keeping what the output needs: per voxel its key, count and first points.
// Voxels after the first max_voxels are never stored, so the table holds at most
// min(points, max_voxels) keys. Keys are made a chunk at a time into L1-sized buffers, so that the
// table slot of a point is prefetched a few points ahead. `ready`: the cloud's keys when step A
// already ran in parallel, else nullptr.
//
// The walk has no data-dependent branch but the probe loop: whether a point opens a voxel, finds one,
// or finds none (over max_voxels), and whether its slot is under P, are selects, and the writes they
// would skip go to a spare voxel row (the last row) that is never output. On a LiDAR sweep these
// outcomes alternate unpredictably, and mispredicted branches were the cost of the walk.
template <typename scalar_t, typename key_t>
void walk_hard(const scalar_t* points, int64_t channels, const GridParams& grid, int64_t begin, int64_t end,
               KeysAhead<scalar_t>* ready, int64_t max_points, int64_t max_voxels, HardCloud& out) {
  const int64_t room = std::min(end - begin, max_voxels);
  const int64_t stride = std::min(end - begin, max_points);
  VoxelTable<key_t> table(room);
  out.stride = stride;
  // Rows for the voxels (plus the spare, always the last row). The member rows are what can be large:
  // room * stride slots would be the cloud size squared for P and max_voxels both unlimited, so the
  // rows start at what kInitialMemberSlots allows (enough for every usual setting: 16000-150000
  // voxels of 5-35 points) and grow by doubling when the keys about to be walked could open more
  // voxels than are left. Each key may open one, so the walk reserves `piece` keys at a time: with a
  // huge P the pieces are small and the rows stay proportional to the voxels really opened (and so
  // to the output, V * P * C).
  const int64_t piece = std::max<int64_t>(1, kInitialMemberSlots / std::max<int64_t>(stride, 1));
  int64_t rows = std::min(room, piece);
  out.key = uninitialized<int64_t>(rows + 1);
  out.count = uninitialized<int32_t>(rows + 1);
  out.members = uninitialized<int32_t>((rows + 1) * stride);
  // Locals, not members of `out`: stores through those could alias and would be redone every point.
  int64_t* key_of_voxel = out.key.get();
  int32_t* count = out.count.get();
  int32_t* members = out.members.get();
  int32_t spare = static_cast<int32_t>(rows);
  count[spare] = 0;
  int64_t voxels = 0, outside = 0, non_finite = 0;
  // Makes room for `more` voxels (a key opens at most one) before that many keys are walked.
  const auto reserve = [&](int64_t more) {
    const int64_t needed = std::min(room, voxels + more);
    if (needed <= rows) return;
    const int64_t grown = std::min(room, std::max(needed, 2 * rows));
    auto key = uninitialized<int64_t>(grown + 1);
    auto cnt = uninitialized<int32_t>(grown + 1);
    auto mem = uninitialized<int32_t>((grown + 1) * stride);
    std::copy(key_of_voxel, key_of_voxel + voxels, key.get());
    std::copy(count, count + voxels, cnt.get());
    std::copy(members, members + voxels * stride, mem.get());
    out.key = std::move(key);
    out.count = std::move(cnt);
    out.members = std::move(mem);
    key_of_voxel = out.key.get();
    count = out.count.get();
    members = out.members.get();
    rows = grown;
    spare = static_cast<int32_t>(rows);
    count[spare] = 0;
  };
  const auto walk = [&](const int64_t* keys, const int32_t* index, int64_t inside) {
    for (int64_t first = 0; first < inside; first += piece) {
      const int64_t last = std::min(inside, first + piece);
      reserve(last - first);
      for (int64_t j = first; j < last; ++j) {
        if (j + kPrefetchDistance < inside) table.prefetch(static_cast<key_t>(keys[j + kPrefetchDistance]));
        const key_t key = static_cast<key_t>(keys[j]);
        auto& slot_of_key = table.locate(key);
        const bool absent = slot_of_key.key != key;
        const bool opens = absent & (voxels < max_voxels);
        const int32_t v = absent ? (opens ? static_cast<int32_t>(voxels) : spare) : slot_of_key.voxel;
        slot_of_key.key = opens ? key : slot_of_key.key;
        slot_of_key.voxel = v;        // unchanged when found; ignored while the key stays empty
        key_of_voxel[voxels] = keys[j];  // kept only when the voxel opens (voxels grows)
        count[voxels] = 0;               // likewise: voxel `voxels` is not open yet (or is the spare)
        voxels += opens;
        const int32_t slot = count[v]++;
        members[slot < max_points ? v * stride + slot : spare * stride] = index[j];
      }
    }
  };
  constexpr int64_t kChunk = 512;
  int64_t chunk_key[kChunk];
  int32_t chunk_index[kChunk];
  const auto walk_range = [&](int64_t first, int64_t last) {  // keys made here, a chunk at a time
    for (int64_t chunk = first; chunk < last; chunk += kChunk) {
      const int64_t size = std::min(kChunk, last - chunk);
      walk(chunk_key, chunk_index,
           compact_keys<scalar_t>(points, channels, chunk, size, grid, chunk_key, chunk_index, outside, non_finite));
    }
  };
  if (ready != nullptr) {
    for (int64_t k = 0; k < ready->num_blocks; ++k) {
      int owner = kFree;
      if (ready->owner[k].compare_exchange_strong(owner, kWalker)) {
        const int64_t inside = ready->compute(k, outside, non_finite);
        walk(ready->key.get() + k * kKeyBlock, ready->index.get() + k * kKeyBlock, inside);
      } else if (owner == kHelperDone) {  // the failed exchange read it with acquire ordering
        walk(ready->key.get() + k * kKeyBlock, ready->index.get() + k * kKeyBlock, ready->inside[k]);
        outside += ready->outside[k];
        non_finite += ready->non_finite[k];
      } else {  // the helper is on it: not worth waiting for
        const int64_t first = begin + k * kKeyBlock;
        walk_range(first, std::min(first + kKeyBlock, end));
      }
    }
    // Every block now belongs to the walker or the helper. The op must not return while the helper
    // is still reading `points` in the block it holds (the caller may free or resize them at once);
    // that block is at most kKeyBlock keys away from done, and afterwards the helper finds no free
    // block and stops without touching the points again.
    for (int64_t k = 0; k < ready->num_blocks; ++k) {
      while (ready->owner[k].load(std::memory_order_acquire) == kHelperBusy) std::this_thread::yield();
    }
  } else {
    walk_range(begin, end);
  }
  int64_t kept = 0;
  for (int64_t v = 0; v < voxels; ++v) kept += std::min<int64_t>(count[v], max_points);
  out.voxels = voxels;
  out.kept = kept;
  out.outside = outside;
  out.non_finite = non_finite;
}

// Steps A and B fused, one thread for the whole cloud. Keys are computed a chunk at a time into a
// buffer that stays in L1, so the table slot of a point can be prefetched a few points ahead. Voxels
// after the first max_voxels are never stored (their points are over capacity), so the table holds at
// most min(points, max_voxels) keys: with the usual caps (16k-40k voxels) it stays in the L2 cache.
template <typename scalar_t>
void group_serial(const scalar_t* points, int64_t channels, const GridParams& grid, Assignment& a, Cloud& cloud,
                  int64_t max_voxels) {
  const int64_t capacity_needed = std::min(cloud.end - cloud.begin, max_voxels);
  Table table(capacity_needed);
  constexpr int64_t kChunk = 512;
  int64_t chunk_key[kChunk];
  // Consecutive LiDAR returns often share a voxel: remember the last entry and skip the hash probe.
  int64_t last_key = -1;
  Entry* last = nullptr;
  int64_t voxels = 0;
  // Locals, not members of `cloud` / `a`: stores through those could alias and would be redone (and
  // reloaded) on every iteration.
  int64_t outside = 0, non_finite = 0;
  int32_t* voxel_of = a.voxel.get();
  int32_t* slot_of = a.slot.get();
  for (int64_t chunk = cloud.begin; chunk < cloud.end; chunk += kChunk) {
    const int64_t size = std::min(kChunk, cloud.end - chunk);
    if (cloud.keys_ready) {
      std::copy(a.key.get() + chunk, a.key.get() + chunk + size, chunk_key);
    } else {
      for (int64_t j = 0; j < size; ++j) {
        const scalar_t* row = points + (chunk + j) * channels;
        chunk_key[j] = voxel_key<scalar_t>(row[0], row[1], row[2], grid);
      }
    }
    for (int64_t j = 0; j < size; ++j) {
      if (j + kPrefetchDistance < size) {
        // A key equal to its predecessor's was prefetched already (and will hit the last-entry cache).
        const int64_t ahead = chunk_key[j + kPrefetchDistance];
        if (ahead >= 0 && ahead != chunk_key[j + kPrefetchDistance - 1]) {
          table.prefetch(mix_hash(static_cast<uint64_t>(ahead)));
        }
      }
      const int64_t i = chunk + j;
      const int64_t key = chunk_key[j];
      if (key < 0) {
        voxel_of[i] = -1;
        outside += key == kOutsideRange;
        non_finite += key == kNonFinite;
        continue;
      }
      if (key != last_key) {
        bool inserted;
        last = table.find_or_insert(key, mix_hash(static_cast<uint64_t>(key)), voxels < max_voxels, inserted);
        last_key = key;
        if (inserted) {
          last->value = static_cast<int32_t>(voxels++);
          cloud.voxel_key.push_back(key);
        }
      }
      if (last == nullptr) {  // a voxel beyond max_voxels
        voxel_of[i] = -1;
        continue;
      }
      voxel_of[i] = last->value;
      slot_of[i] = last->count++;
    }
  }
  cloud.outside = outside;
  cloud.non_finite = non_finite;
  cloud.voxel_count.resize(cloud.voxel_key.size());
  for (uint64_t t = 0; t < table.capacity(); ++t) {
    const Entry& e = table.at(t);
    if (e.key != -1) cloud.voxel_count[e.value] = e.count;
  }
}

// Step B, the keys of one shard of a cloud.
void group_shard(Assignment& a, const Cloud& cloud, int64_t shard) {
  const int64_t* keys = a.key.get();
  const uint8_t* shard_of_point = a.shard.get();
  int32_t* first_of = a.first.get();
  int32_t* slot_of = a.slot.get();
  int64_t members = 0;
  for (int64_t i = cloud.begin; i < cloud.end; ++i) members += shard_of_point[i] == shard;
  Table table(members);
  for (int64_t i = cloud.begin; i < cloud.end; ++i) {
    if (i + kPrefetchDistance < cloud.end && shard_of_point[i + kPrefetchDistance] == shard) {
      table.prefetch(mix_hash(static_cast<uint64_t>(keys[i + kPrefetchDistance])));
    }
    if (shard_of_point[i] != shard) continue;
    const int64_t key = keys[i];
    bool inserted;
    Entry& e = *table.find_or_insert(key, mix_hash(static_cast<uint64_t>(key)), /*may_insert=*/true, inserted);
    if (inserted) e.value = static_cast<int32_t>(i - cloud.begin);
    first_of[i] = e.value;
    slot_of[i] = e.count++;
  }
  for (uint64_t t = 0; t < table.capacity(); ++t) {
    const Entry& e = table.at(t);
    if (e.key != -1) a.count[cloud.begin + e.value] = e.count;
  }
}

// Step C for a sharded cloud: number voxels at their first point, in point order.
void number_sharded(Assignment& a, Cloud& cloud) {
  const int64_t* keys = a.key.get();
  const int32_t* first_of = a.first.get();
  int32_t* voxel_of = a.voxel.get();
  int64_t outside = 0, non_finite = 0;
  for (int64_t i = cloud.begin; i < cloud.end; ++i) {
    const int64_t key = keys[i];
    if (key < 0) {
      voxel_of[i] = -1;
      outside += key == kOutsideRange;
      non_finite += key == kNonFinite;
      continue;
    }
    const int64_t leader = cloud.begin + first_of[i];
    if (leader == i) {
      voxel_of[i] = static_cast<int32_t>(cloud.voxel_key.size());
      cloud.voxel_key.push_back(key);
      cloud.voxel_count.push_back(a.count[i]);
    } else {
      voxel_of[i] = voxel_of[leader];  // the leader came earlier in this walk
    }
  }
  cloud.outside = outside;
  cloud.non_finite = non_finite;
}

// A sharded cloud's result (voxel and slot per point) as a HardCloud (members per voxel).
void hard_from_sharded(const Assignment& a, const Cloud& cloud, int64_t max_points, int64_t max_voxels,
                       HardCloud& out) {
  const int64_t voxels = std::min<int64_t>(static_cast<int64_t>(cloud.voxel_key.size()), max_voxels);
  const int64_t stride = std::min(cloud.end - cloud.begin, max_points);
  out.voxels = voxels;
  out.stride = stride;
  out.key = uninitialized<int64_t>(voxels);
  out.count = uninitialized<int32_t>(voxels);
  out.members = uninitialized<int32_t>(voxels * stride);
  std::copy(cloud.voxel_key.begin(), cloud.voxel_key.begin() + voxels, out.key.get());
  std::copy(cloud.voxel_count.begin(), cloud.voxel_count.begin() + voxels, out.count.get());
  int32_t* members = out.members.get();
  const int32_t* voxel_of = a.voxel.get();
  const int32_t* slot_of = a.slot.get();
  // Every (voxel, slot) is written by one point: the points can be split between threads.
  at::parallel_for(cloud.begin, cloud.end, 8192, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t v = voxel_of[i];
      if (v >= 0 && v < voxels && slot_of[i] < max_points) members[v * stride + slot_of[i]] = static_cast<int32_t>(i);
    }
  });
  int64_t kept = 0;
  for (int64_t v = 0; v < voxels; ++v) kept += std::min<int64_t>(out.count[v], max_points);
  out.kept = kept;
  out.outside = cloud.outside;
  out.non_finite = cloud.non_finite;
}

// Steps A-C. Dynamic voxelization (hard == nullptr) gets a voxel per point in `a`. Hard voxelization
// gets a HardCloud per cloud in `hard`; `a` then holds per-point arrays only for sharded clouds.
template <typename scalar_t>
std::vector<Cloud> assign(const at::Tensor& points, const int64_t* offs, int64_t num_clouds, const GridParams& grid,
                          int64_t max_voxels, Assignment& a, std::vector<HardCloud>* hard = nullptr,
                          int64_t max_points = 0) {
  const int64_t n = points.size(0), channels = points.size(1);
  TORCH_CHECK_VALUE(n < std::numeric_limits<int32_t>::max(), "pointmae.voxelize: at most 2^31 - 2 points, got ", n);
  const scalar_t* p = points.data_ptr<scalar_t>();

  std::vector<Cloud> clouds(num_clouds);
  const int64_t threads = at::get_num_threads();
  bool any_sharded = false, any_prekeyed = false;
  std::vector<std::shared_ptr<KeysAhead<scalar_t>>> ahead(hard != nullptr ? num_clouds : 0);
  for (int64_t b = 0; b < num_clouds; ++b) {
    Cloud& cloud = clouds[b];
    cloud.begin = offs[b];
    cloud.end = offs[b + 1];
    const int64_t size = cloud.end - cloud.begin;
    // Fewer clouds than threads leave threads idle in a per-cloud walk. For a large cloud, with a few
    // threads, computing the keys in parallel and walking them serially was fastest on a 2-core
    // machine (KITTI sweep: 1.5 ms against 1.8 ms for one thread and 2.4 ms for two shards); from
    // kMinThreadsToShard threads on, the walk itself is split into shards so that it scales.
    // A hard walk's keys ahead (KeysAhead) pay from a few blocks of keys on.
    const int64_t min_prekeyed = hard != nullptr ? 2 * kKeyBlock : 2 * kPointsPerShard;
    if (threads > 1 && num_clouds < threads) {
      if (threads >= kMinThreadsToShard && size >= 2 * kPointsPerShard) {
        cloud.num_shards = std::min<int64_t>({threads, kMaxShards, size / kPointsPerShard});
      } else if (threads < kMinThreadsToShard && size >= min_prekeyed) {
        cloud.keys_ready = true;
      }
    }
    any_sharded |= cloud.num_shards > 1;
    any_prekeyed |= cloud.keys_ready;
  }
  if (hard == nullptr || any_sharded) {
    a.voxel = uninitialized<int32_t>(n);
    a.slot = uninitialized<int32_t>(n);
  }
  if (hard != nullptr) {
    // Step A of a hard walk's pre-keyed clouds: a helper starts on their keys; the walk does the rest.
    for (int64_t b = 0; b < num_clouds; ++b) {
      if (clouds[b].keys_ready) ahead[b] = start_keys_ahead<scalar_t>(points, clouds[b].begin, clouds[b].end, grid);
    }
  }
  if (any_sharded || (hard == nullptr && any_prekeyed)) {
    // Step A for the sharded and pre-keyed clouds, in parallel over their points.
    a.key = uninitialized<int64_t>(n);
    if (any_sharded) {
      a.first = uninitialized<int32_t>(n);
      a.count = uninitialized<int32_t>(n);
      a.shard = uninitialized<uint8_t>(n);
    }
    int64_t* keys = a.key.get();
    uint8_t* shards = a.shard.get();
    for (int64_t b = 0; b < num_clouds; ++b) {
      const Cloud& cloud = clouds[b];
      if (cloud.num_shards == 1 && !cloud.keys_ready) continue;
      const bool sharded = cloud.num_shards > 1;
      if (hard != nullptr && !sharded) continue;  // KeysAhead above
      at::parallel_for(cloud.begin, cloud.end, 8192, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const scalar_t* row = p + i * channels;
          keys[i] = voxel_key<scalar_t>(row[0], row[1], row[2], grid);
        }
        if (!sharded) return;
        for (int64_t i = begin; i < end; ++i) {
          const int64_t key = keys[i];
          shards[i] = key < 0 ? kNoShard
                              : static_cast<uint8_t>(shard_of(mix_hash(static_cast<uint64_t>(key)), cloud.num_shards));
        }
      });
    }
  }
  // Step B: one task per serial cloud or per shard of a sharded cloud.
  struct Task { int64_t cloud, shard; };
  std::vector<Task> tasks;
  for (int64_t b = 0; b < num_clouds; ++b) {
    if (clouds[b].begin == clouds[b].end) continue;
    for (int64_t s = 0; s < clouds[b].num_shards; ++s) tasks.push_back({b, s});
  }
  // Keys of one cloud are below the grid's cell count: 32-bit table keys when that fits (kEmpty excluded).
  const bool narrow_keys = grid_cells(grid) < static_cast<int64_t>(std::numeric_limits<uint32_t>::max());
  at::parallel_for(0, static_cast<int64_t>(tasks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      Cloud& cloud = clouds[tasks[t].cloud];
      if (cloud.num_shards > 1) {
        group_shard(a, cloud, tasks[t].shard);
      } else if (hard == nullptr) {
        group_serial<scalar_t>(p, channels, grid, a, cloud, max_voxels);
      } else {
        KeysAhead<scalar_t>* ready = cloud.keys_ready ? ahead[tasks[t].cloud].get() : nullptr;
        HardCloud& out = (*hard)[tasks[t].cloud];
        if (narrow_keys) {
          walk_hard<scalar_t, uint32_t>(p, channels, grid, cloud.begin, cloud.end, ready, max_points, max_voxels, out);
        } else {
          walk_hard<scalar_t, uint64_t>(p, channels, grid, cloud.begin, cloud.end, ready, max_points, max_voxels, out);
        }
      }
    }
  });
  // Step C for the sharded clouds.
  if (any_sharded) {
    at::parallel_for(0, num_clouds, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        if (clouds[b].num_shards > 1) number_sharded(a, clouds[b]);
      }
    });
    if (hard != nullptr) {
      for (int64_t b = 0; b < num_clouds; ++b) {
        if (clouds[b].num_shards > 1) hard_from_sharded(a, clouds[b], max_points, max_voxels, (*hard)[b]);
      }
    }
  }
  return clouds;
}

// voxel_offsets (B+1,) and per-cloud statistics; max_points / max_voxels = INT64_MAX when dynamic.
std::vector<int64_t> cloud_bases(const std::vector<Cloud>& clouds, int64_t max_voxels) {
  std::vector<int64_t> base(clouds.size() + 1, 0);
  for (size_t b = 0; b < clouds.size(); ++b) {
    base[b + 1] = base[b] + std::min<int64_t>(static_cast<int64_t>(clouds[b].voxel_key.size()), max_voxels);
  }
  return base;
}

at::Tensor stats_tensor(const std::vector<Cloud>& clouds, int64_t max_points, int64_t max_voxels, int64_t columns) {
  const int64_t num_clouds = static_cast<int64_t>(clouds.size());
  auto stats = at::empty({num_clouds, columns}, at::kLong);
  int64_t* st = stats.data_ptr<int64_t>();
  for (int64_t b = 0; b < num_clouds; ++b) {
    const Cloud& c = clouds[b];
    const int64_t kept_voxels = std::min<int64_t>(static_cast<int64_t>(c.voxel_count.size()), max_voxels);
    int64_t kept = 0;
    for (int64_t v = 0; v < kept_voxels; ++v) kept += std::min<int64_t>(c.voxel_count[v], max_points);
    st[b * columns + 0] = kept;
    st[b * columns + 1] = c.outside;
    st[b * columns + 2] = c.non_finite;
    if (columns == 4) st[b * columns + 3] = (c.end - c.begin) - kept - c.outside - c.non_finite;
  }
  return stats;
}

// Coordinates (batch, z, y, x) (and num_points when given) of the kept voxels of every cloud.
void write_voxel_rows(const std::vector<Cloud>& clouds, const std::vector<int64_t>& base, const GridParams& grid,
                      int64_t max_points, int32_t* coords, int32_t* num_points) {
  for (size_t b = 0; b < clouds.size(); ++b) {
    const Cloud& c = clouds[b];
    at::parallel_for(0, base[b + 1] - base[b], 8192, [&](int64_t begin, int64_t end) {
      for (int64_t v = begin; v < end; ++v) {
        const int64_t out = base[b] + v;
        coords[out * 4] = static_cast<int32_t>(b);
        key_to_zyx(c.voxel_key[v], grid, coords + out * 4 + 1);
        if (num_points != nullptr) {
          num_points[out] = static_cast<int32_t>(std::min<int64_t>(c.voxel_count[v], max_points));
        }
      }
    });
  }
}

// Step D of hard voxelization for one cloud, in parallel over its voxels: every (P, C) row of the
// output is written once, the stored points then zeros, with the voxel's coordinates and count.
// kChannels > 0 makes the point copy a fixed-size move (C = 3, 4, 5 cover the usual sweeps).
template <typename scalar_t, int kChannels>
void write_hard_cloud(const scalar_t* points, int64_t channels, const HardCloud& cloud, const GridParams& grid,
                      int64_t batch, int64_t base, int64_t max_points, scalar_t* voxels, int32_t* coords,
                      int32_t* num_points) {
  const int64_t c = kChannels > 0 ? kChannels : channels;
  const int64_t row = max_points * c;
  // In parallel only with many threads: with 2-3 this step is too short (~5% of the op) to repay a
  // parallel region, whose end waits for every worker to be scheduled (see KeysAhead).
  const int64_t grain = at::get_num_threads() >= kMinThreadsToShard ? 4096 : std::numeric_limits<int64_t>::max();
  at::parallel_for(0, cloud.voxels, grain, [&](int64_t begin, int64_t end) {
    const int64_t* key = cloud.key.get();
    const int32_t* count = cloud.count.get();
    const int32_t* members = cloud.members.get();
    for (int64_t v = begin; v < end; ++v) {
      const int64_t out = base + v;
      const int64_t stored = std::min<int64_t>(count[v], max_points);
      scalar_t* dst = voxels + out * row;
      const int32_t* m = members + v * cloud.stride;
      for (int64_t s = 0; s < stored; ++s) {
        std::memcpy(dst + s * c, points + static_cast<int64_t>(m[s]) * c, c * sizeof(scalar_t));
      }
      // All-zero bits are +0 in every floating dtype (float16 too), what at::zeros writes.
      std::memset(static_cast<void*>(dst + stored * c), 0, (row - stored * c) * sizeof(scalar_t));
      coords[out * 4] = static_cast<int32_t>(batch);
      key_to_zyx(key[v], grid, coords + out * 4 + 1);
      num_points[out] = static_cast<int32_t>(stored);
    }
  });
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
  const int64_t cap = max_points_per_voxel;

  at::Tensor voxels, coords, num_points, voxel_offsets, stats;
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(points.scalar_type(), "voxelize_cpu", [&] {
    Assignment a;
    std::vector<HardCloud> hard(num_clouds);
    assign<scalar_t>(points, offs, num_clouds, grid, max_voxels, a, &hard, cap);
    std::vector<int64_t> base(num_clouds + 1, 0);
    for (int64_t b = 0; b < num_clouds; ++b) base[b + 1] = base[b] + hard[b].voxels;
    voxel_offsets = at::tensor(base, offsets.options());
    stats = at::empty({num_clouds, 4}, at::kLong);
    int64_t* st = stats.data_ptr<int64_t>();
    for (int64_t b = 0; b < num_clouds; ++b) {
      const HardCloud& h = hard[b];
      st[b * 4 + 0] = h.kept;
      st[b * 4 + 1] = h.outside;
      st[b * 4 + 2] = h.non_finite;
      st[b * 4 + 3] = (offs[b + 1] - offs[b]) - h.kept - h.outside - h.non_finite;
    }
    const int64_t total = base[num_clouds];
    // Not zeroed: step D writes every element.
    voxels = at::empty({total, cap, channels}, points.options());
    coords = at::empty({total, 4}, points.options().dtype(at::kInt));
    num_points = at::empty({total}, points.options().dtype(at::kInt));
    const scalar_t* src = points.data_ptr<scalar_t>();
    scalar_t* dst = voxels.data_ptr<scalar_t>();
    int32_t* co = coords.data_ptr<int32_t>();
    int32_t* np = num_points.data_ptr<int32_t>();
    for (int64_t b = 0; b < num_clouds; ++b) {
      switch (channels) {
        case 3: write_hard_cloud<scalar_t, 3>(src, channels, hard[b], grid, b, base[b], cap, dst, co, np); break;
        case 4: write_hard_cloud<scalar_t, 4>(src, channels, hard[b], grid, b, base[b], cap, dst, co, np); break;
        case 5: write_hard_cloud<scalar_t, 5>(src, channels, hard[b], grid, b, base[b], cap, dst, co, np); break;
        default: write_hard_cloud<scalar_t, 0>(src, channels, hard[b], grid, b, base[b], cap, dst, co, np);
      }
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
    const std::vector<Cloud> clouds = assign<scalar_t>(points, offs, num_clouds, grid, unlimited, a);
    const std::vector<int64_t> base = cloud_bases(clouds, unlimited);
    voxel_offsets = at::tensor(base, offsets.options());
    stats = stats_tensor(clouds, unlimited, unlimited, 3);
    coords = at::empty({base[num_clouds], 4}, points.options().dtype(at::kInt));
    write_voxel_rows(clouds, base, grid, unlimited, coords.data_ptr<int32_t>(), nullptr);
    point_to_voxel = at::empty({points.size(0)}, points.options().dtype(at::kLong));
    int64_t* p2v = point_to_voxel.data_ptr<int64_t>();
    for (int64_t b = 0; b < num_clouds; ++b) {
      at::parallel_for(offs[b], offs[b + 1], 8192, [&](int64_t begin, int64_t end) {
        const int32_t* voxel_of = a.voxel.get();
        const int64_t cloud_base = base[b];
        for (int64_t i = begin; i < end; ++i) p2v[i] = voxel_of[i] < 0 ? -1 : cloud_base + voxel_of[i];
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
  TORCH_CHECK_VALUE(n < std::numeric_limits<int32_t>::max(), op, ": at most 2^31 - 2 points, got ", n);
  const VoxelLists lists = list_points(p2v, n, num_voxels);

  // Every row is written below (empty voxels too): no fill pass over the (V, C) outputs.
  auto out = at::empty({num_voxels, channels}, features.options());
  auto arg = at::empty({is_max ? num_voxels : 0, is_max ? channels : 0}, features.options().dtype(at::kLong));
  if (!is_max) arg = arg.view({0});
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(features.scalar_type(), "scatter_to_voxels_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* f = features.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    int64_t* ar = is_max ? arg.data_ptr<int64_t>() : nullptr;
    at::parallel_for(0, num_voxels, 256, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc_buffer(channels);
      // Position of the best point in the voxel's list, int32 so that its lanes match float32's.
      std::vector<int32_t> best_buffer(channels);
      // __restrict: the buffers never alias the features, so the channel loops can be vectorised.
      acc_t* __restrict acc = acc_buffer.data();
      int32_t* __restrict best = best_buffer.data();
      for (int64_t v = begin; v < end; ++v) {
        const int64_t lo = lists.start[v], hi = lists.start[v + 1];
        if (lo == hi) {  // empty voxel: 0, arg -1
          std::fill(o + v * channels, o + (v + 1) * channels, scalar_t(0));
          if (is_max) std::fill(ar + v * channels, ar + (v + 1) * channels, int64_t(-1));
          continue;
        }
        const int64_t p0 = lists.order[lo];
        for (int64_t c = 0; c < channels; ++c) acc[c] = static_cast<acc_t>(f[p0 * channels + c]);
        if (is_max) {
          std::fill(best, best + channels, 0);
          for (int64_t j = lo + 1; j < hi; ++j) {
            const int32_t position = static_cast<int32_t>(j - lo);
            const scalar_t* __restrict row = f + lists.order[j] * channels;
            for (int64_t c = 0; c < channels; ++c) {
              const acc_t x = static_cast<acc_t>(row[c]);
              // Strictly greater: ties keep the lower point index. The first NaN wins, like torch.max.
              // Selects rather than branches: the channel loop vectorises.
              const bool take = (x > acc[c]) | ((x != x) & (acc[c] == acc[c]));
              acc[c] = take ? x : acc[c];
              best[c] = take ? position : best[c];
            }
          }
          for (int64_t c = 0; c < channels; ++c) {
            o[v * channels + c] = static_cast<scalar_t>(acc[c]);
            ar[v * channels + c] = lists.order[lo + best[c]];
          }
        } else {
          for (int64_t j = lo + 1; j < hi; ++j) {
            const scalar_t* __restrict row = f + lists.order[j] * channels;
            for (int64_t c = 0; c < channels; ++c) acc[c] += static_cast<acc_t>(row[c]);
          }
          const acc_t count = static_cast<acc_t>(hi - lo);
          for (int64_t c = 0; c < channels; ++c) o[v * channels + c] = static_cast<scalar_t>(acc[c] / count);
        }
      }
    });
  });
  return {out, arg};
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
