// Exactly rounded arithmetic for the squared distances of fps, knn/ball_query and chamfer_distance.
//
// Contract: every product, sum and difference below is rounded once, on its own, in the type it is
// computed in, so that the CPU kernels, the CUDA kernels and the pure-PyTorch reference
// (pointmae/ops/reference.py) produce the same bits and hence the same samples, neighbours and ties.
// The one definition of the squared distance is
//     squared_distance(q, p) = ((dx*dx) + (dy*dy)) + (dz*dz),   dx = q.x - p.x, ...
// evaluated in exactly that order. What could break the contract is contraction of a*b + c into a
// fused multiply-add, which rounds once instead of twice. Three guarantees stop it:
//
// 1. Device. nvcc contracts by default (--fmad=true). The float and double overloads use the
//    round-to-nearest intrinsics (__fmul_rn, __fadd_rn, __fsub_rn, __dmul_rn, ...), which nvcc
//    never contracts.
//
// 2. Host, SIMD. The functions are templates, so they also take GCC/Clang vector types (the chamfer
//    CPU kernel evaluates the distance on whole vectors, lane by lane), and they are force-inlined
//    (always_inline): the chamfer kernel calls them from functions compiled for AVX2 through
//    target_clones, and an out-of-line call between code built for different targets would pass
//    those vectors with mismatched ABIs (GCC's -Wpsabi note). Inlined, the vectors never cross a call.
//
// 3. Host, contraction. A host compiler can only contract where the target has FMA instructions
//    (baseline x86-64, which this project builds for, has none; the chamfer clones are "avx2", which
//    does not enable FMA either). GCC contracts across statements by default (-ffp-contract=fast),
//    so on FMA targets (__FP_FAST_FMA / __FP_FAST_FMAF defined) something has to stop it. The former
//    neighbors header did so with __attribute__((optimize("fp-contract=off"))) on the functions. That
//    cannot be combined with guarantee 2: the optimize options of a function travel with it only as
//    long as it is not inlined (GCC refuses to inline a callee whose optimize options differ, and an
//    always_inline one then fails to compile), and once it is inlined the caller's -ffp-contract
//    applies to its body, so the attribute protects nothing in exactly the case that matters.
//    Instead, on those targets every product goes through an empty asm statement that takes and
//    returns it in a register (POINTMAE_FP_BARRIER). The compiler must then materialise the rounded
//    product and cannot see that it came from a multiplication, so it cannot fuse it into the
//    following addition; the barrier is inlined like everything else and works for scalars and
//    vectors alike. Only the product needs it: an FMA fuses a multiplication into an addition or
//    subtraction, and a difference that feeds a multiplication is not fusable. The cost (less
//    constant folding and auto-vectorisation around the barrier) is paid only on FMA targets, and
//    is speed, not exactness. Clang contracts only within one source expression by default
//    (-ffp-contract=on), and each operation here is its own statement in its own function, so Clang
//    needs no barrier.
#pragma once

#include "common/host_device.h"

// Force-inlined everywhere (see guarantee 2). Under nvcc, __forceinline__ is always_inline on the host.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define POINTMAE_FORCE_INLINE HOST_DEVICE_INLINE
#elif defined(__GNUC__)
#define POINTMAE_FORCE_INLINE inline __attribute__((always_inline))
#else
#define POINTMAE_FORCE_INLINE inline
#endif

// Contraction barrier for host code on FMA targets with GCC (see guarantee 3); nothing elsewhere.
#if !defined(__CUDA_ARCH__) && defined(__GNUC__) && !defined(__clang__) && \
    (defined(__FP_FAST_FMA) || defined(__FP_FAST_FMAF))
#if defined(__x86_64__) || defined(__i386__)
#define POINTMAE_FP_BARRIER(v) __asm__("" : "+x"(v))
#elif defined(__aarch64__)
#define POINTMAE_FP_BARRIER(v) __asm__("" : "+w"(v))
#else
#define POINTMAE_FP_BARRIER(v) __asm__("" : "+m"(v))  // through memory: slower, equally exact
#endif
#else
#define POINTMAE_FP_BARRIER(v) ((void)0)
#endif

namespace pointmae {

// Generic versions: host scalars and SIMD vector types (on the device, types other than float and
// double, which have no _rn intrinsics).
template <typename T>
POINTMAE_FORCE_INLINE T mul_rn(T a, T b) {
  T p = a * b;
  POINTMAE_FP_BARRIER(p);
  return p;
}
template <typename T>
POINTMAE_FORCE_INLINE T add_rn(T a, T b) {
  return a + b;
}
template <typename T>
POINTMAE_FORCE_INLINE T sub_rn(T a, T b) {
  return a - b;
}

// float and double: the overloads (preferred over the templates) use the intrinsics on the device.
#if defined(__CUDA_ARCH__)
#define POINTMAE_RN(device_expr, host_expr) return device_expr
#else
#define POINTMAE_RN(device_expr, host_expr) return host_expr
#endif
POINTMAE_FORCE_INLINE float mul_rn(float a, float b) { POINTMAE_RN(__fmul_rn(a, b), mul_rn<float>(a, b)); }
POINTMAE_FORCE_INLINE float add_rn(float a, float b) { POINTMAE_RN(__fadd_rn(a, b), a + b); }
POINTMAE_FORCE_INLINE float sub_rn(float a, float b) { POINTMAE_RN(__fsub_rn(a, b), a - b); }
POINTMAE_FORCE_INLINE double mul_rn(double a, double b) { POINTMAE_RN(__dmul_rn(a, b), mul_rn<double>(a, b)); }
POINTMAE_FORCE_INLINE double add_rn(double a, double b) { POINTMAE_RN(__dadd_rn(a, b), a + b); }
POINTMAE_FORCE_INLINE double sub_rn(double a, double b) { POINTMAE_RN(__dsub_rn(a, b), a - b); }
#undef POINTMAE_RN

// Squared length from per-axis differences (or per-axis gaps of a bounding box, for lower bounds):
// ((dx*dx) + (dy*dy)) + (dz*dz), each operation rounded.
template <typename T>
POINTMAE_FORCE_INLINE T sum_of_squares(T dx, T dy, T dz) {
  return add_rn(add_rn(mul_rn(dx, dx), mul_rn(dy, dy)), mul_rn(dz, dz));
}

// THE squared distance between q and p: the differences first, then sum_of_squares.
template <typename T>
POINTMAE_FORCE_INLINE T squared_distance(T qx, T qy, T qz, T px, T py, T pz) {
  return sum_of_squares(sub_rn(qx, px), sub_rn(qy, py), sub_rn(qz, pz));
}

}  // namespace pointmae
