// Rotated box overlap: the per-pair maths shared by the CPU and the CUDA kernels.
//
// A box is (x, y, z, dx, dy, dz, heading): centre at the geometric centre, dx along the heading
// direction, heading counter-clockwise from +x (right-handed: x forward, y left, z up). Only the
// first 7 columns are read; trailing columns (velocity, ...) are ignored.
//
// Intersection of two rotated rectangles in the x-y plane: the four corners of one rectangle are
// expressed in the local frame of the other ("frame") rectangle, where the frame is the axis-aligned
// box [-hx, hx] x [-hy, hy]; the polygon is then clipped against those four axis-aligned half-planes
// (Sutherland & Hodgman, "Reentrant polygon clipping", CACM 17(1), 1974) and its area taken with the
// shoelace formula. Clipping against axis-aligned lines in the frame's own coordinates (instead of
// against the frame's edges in world coordinates) is what makes this robust:
//  - an edge crossing the line x = h has its endpoints strictly on both sides, so the intersection
//    parameter t = (h - p.x) / (q.x - p.x) never divides by zero and lies in [0, 1], whatever the
//    angle between the edges (nearly parallel edges included);
//  - identical or touching boxes only produce duplicate vertices or zero-length edges, which add
//    nothing to the shoelace sum;
//  - the clipped polygon lies inside the frame, so the shoelace sum works on coordinates of the
//    frame's size, not of the world's (no cancellation for small boxes far from the origin).
// The frame is the smaller box (then both sizes that matter are small); ties are broken on the box
// parameters so that iou(a, b) and iou(b, a) run the very same arithmetic and agree bit for bit.
//
// Headings enter only through (cos, sin), computed once per box, so headings that differ by 2*pi
// give the same box up to rounding, and heading + pi gives the same rectangle (corners permuted).
// Zero-area boxes have IoU 0 with everything (never NaN). Inputs are validated as finite with
// non-negative sizes before the kernels run (see box_ops_checks.h).
#pragma once

#include "common/host_device.h"

#include <math.h>

namespace pointmae {
namespace box_ops {

// Number of box columns read; inputs are (N, >= kBoxDim).
constexpr int kBoxDim = 7;

// A box prepared for pairwise tests: centre, half extents, heading as (cos, sin), area, volume,
// and the radius of its bounding circle in the x-y plane (for a cheap rejection test).
template <typename T>
struct PreparedBox {
  T cx, cy, cz, hx, hy, hz, cos_h, sin_h;
  T area_bev, volume, radius;
};

template <typename T>
HOST_DEVICE_INLINE T min_of(T a, T b) { return a < b ? a : b; }
template <typename T>
HOST_DEVICE_INLINE T max_of(T a, T b) { return a > b ? a : b; }

HOST_DEVICE_INLINE float sqrt_of(float v) { return sqrtf(v); }
HOST_DEVICE_INLINE double fabs_of(double v) { return fabs(v); }
HOST_DEVICE_INLINE float fabs_of(float v) { return fabsf(v); }
HOST_DEVICE_INLINE double sqrt_of(double v) { return sqrt(v); }
HOST_DEVICE_INLINE void sincos_of(float a, float* s, float* c) { *s = sinf(a); *c = cosf(a); }
HOST_DEVICE_INLINE void sincos_of(double a, double* s, double* c) { *s = sin(a); *c = cos(a); }

// `row` points at the first of kBoxDim values of one box (any storage type convertible to T).
template <typename T, typename S>
HOST_DEVICE_INLINE PreparedBox<T> prepare_box(const S* row) {
  PreparedBox<T> b;
  b.cx = static_cast<T>(row[0]);
  b.cy = static_cast<T>(row[1]);
  b.cz = static_cast<T>(row[2]);
  const T dx = static_cast<T>(row[3]);
  const T dy = static_cast<T>(row[4]);
  const T dz = static_cast<T>(row[5]);
  b.hx = dx * T(0.5);
  b.hy = dy * T(0.5);
  sincos_of(static_cast<T>(row[6]), &b.sin_h, &b.cos_h);
  b.hz = dz * T(0.5);
  b.area_bev = dx * dy;
  b.volume = b.area_bev * dz;
  b.radius = sqrt_of(b.hx * b.hx + b.hy * b.hy);
  return b;
}

template <typename T>
struct Vec2 {
  T x, y;
};

// Clips the convex polygon `in` (n vertices) to the half-plane  sign * coord(v) <= limit, where
// coord is x (axis = 0) or y (axis = 1); writes the result to `out` and returns its vertex count.
// A convex polygon gains at most one vertex per clip, so 4 clips of a quadrilateral stay within 8.
template <typename T>
HOST_DEVICE_INLINE int clip_half_plane(const Vec2<T>* in, int n, Vec2<T>* out, int axis, T sign, T limit) {
  int m = 0;
  for (int i = 0; i < n; ++i) {
    const Vec2<T> p = in[i];
    const Vec2<T> q = in[(i + 1) % n];
    const T p_along = sign * (axis == 0 ? p.x : p.y);
    const T q_along = sign * (axis == 0 ? q.x : q.y);
    const bool p_in = p_along <= limit;
    const bool q_in = q_along <= limit;
    if (p_in != q_in) {
      // p and q lie strictly on opposite sides: the denominator is non-zero and t is in [0, 1].
      const T t = (limit - p_along) / (q_along - p_along);
      Vec2<T> r;
      if (axis == 0) {
        r.x = sign * limit;  // exactly on the line, not p.x + t * (q.x - p.x), which may round off it
        r.y = p.y + t * (q.y - p.y);
      } else {
        r.x = p.x + t * (q.x - p.x);
        r.y = sign * limit;
      }
      out[m++] = r;
    }
    if (q_in) out[m++] = q;
  }
  return m;
}

// Is `a` the box whose frame the other box is clipped in? The smaller box; on equal areas a fixed
// order of the parameters, so that the choice does not depend on the argument order.
template <typename T>
HOST_DEVICE_INLINE bool is_clip_frame(const PreparedBox<T>& a, const PreparedBox<T>& b) {
  if (a.area_bev != b.area_bev) return a.area_bev < b.area_bev;
  if (a.cx != b.cx) return a.cx < b.cx;
  if (a.cy != b.cy) return a.cy < b.cy;
  if (a.hx != b.hx) return a.hx < b.hx;
  if (a.hy != b.hy) return a.hy < b.hy;
  if (a.cos_h != b.cos_h) return a.cos_h < b.cos_h;
  return a.sin_h <= b.sin_h;
}

// True when the discs (ax, ay, ar) and (bx, by, br) do not overlap, so neither do the rectangles
// they bound. The per-axis test comes first: it settles most far pairs and cannot overflow for huge
// coordinates. The kernels also call this on compact (x, y, radius) arrays before touching the
// full boxes, which keeps the common "far apart" case cheap and cache-friendly.
template <typename T>
HOST_DEVICE_INLINE bool discs_apart(T ax, T ay, T ar, T bx, T by, T br) {
  const T ddx = ax - bx;
  const T ddy = ay - by;
  const T reach = ar + br;
  if (!(fabs_of(ddx) < reach) || !(fabs_of(ddy) < reach)) return true;
  return ddx * ddx + ddy * ddy >= reach * reach;
}

// Area of the intersection of the rectangles of `a` and `b` in the x-y plane, in [0, min(areas)].
template <typename T>
HOST_DEVICE_INLINE T intersection_area_bev(const PreparedBox<T>& a, const PreparedBox<T>& b) {
  if (!(a.area_bev > T(0)) || !(b.area_bev > T(0))) return T(0);
  // Bounding discs apart -> rectangles apart; most pairs in a scene end here.
  if (discs_apart(a.cx, a.cy, a.radius, b.cx, b.cy, b.radius)) return T(0);

  const PreparedBox<T>& frame = is_clip_frame(a, b) ? a : b;
  const PreparedBox<T>& poly = is_clip_frame(a, b) ? b : a;

  // Centre of `poly` in the frame's coordinates: rotate the centre difference by -heading(frame).
  const T wx = poly.cx - frame.cx;
  const T wy = poly.cy - frame.cy;
  const T px = frame.cos_h * wx + frame.sin_h * wy;
  const T py = -frame.sin_h * wx + frame.cos_h * wy;
  // Relative heading (poly - frame) as cos/sin of the difference, without another trig call.
  const T rc = poly.cos_h * frame.cos_h + poly.sin_h * frame.sin_h;
  const T rs = poly.sin_h * frame.cos_h - poly.cos_h * frame.sin_h;
  // Half-extent vectors of `poly` along its own axes, in frame coordinates.
  const T ux = rc * poly.hx, uy = rs * poly.hx;   // along poly's heading
  const T vx = -rs * poly.hy, vy = rc * poly.hy;  // along poly's left side

  // Corners in counter-clockwise order.
  Vec2<T> buf0[8];
  Vec2<T> buf1[8];
  buf0[0] = {px + ux + vx, py + uy + vy};
  buf0[1] = {px - ux + vx, py - uy + vy};
  buf0[2] = {px - ux - vx, py - uy - vy};
  buf0[3] = {px + ux - vx, py + uy - vy};

  int n = 4;
  n = clip_half_plane(buf0, n, buf1, 0, T(1), frame.hx);   // x <= hx
  if (n == 0) return T(0);
  n = clip_half_plane(buf1, n, buf0, 0, T(-1), frame.hx);  // x >= -hx
  if (n == 0) return T(0);
  n = clip_half_plane(buf0, n, buf1, 1, T(1), frame.hy);   // y <= hy
  if (n == 0) return T(0);
  n = clip_half_plane(buf1, n, buf0, 1, T(-1), frame.hy);  // y >= -hy
  if (n < 3) return T(0);

  // Shoelace formula; the polygon is inside the frame, so the coordinates are of the frame's size.
  T twice_area = T(0);
  for (int i = 0; i < n; ++i) {
    const Vec2<T> p = buf0[i];
    const Vec2<T> q = buf0[(i + 1) % n];
    twice_area += p.x * q.y - q.x * p.y;
  }
  T area = twice_area * T(0.5);
  if (area < T(0)) area = -area;
  // Rounding can push the area a hair past the smaller box (identical boxes); the exact value cannot.
  return min_of(area, min_of(a.area_bev, b.area_bev));
}

template <typename T>
HOST_DEVICE_INLINE T safe_ratio(T inter, T uni) {
  if (!(uni > T(0))) return T(0);
  const T r = inter / uni;
  // `!(r >= 0)` also catches NaN (inf / inf from areas that overflow the dtype).
  return !(r >= T(0)) ? T(0) : (r > T(1) ? T(1) : r);
}

template <typename T>
HOST_DEVICE_INLINE T iou_bev(const PreparedBox<T>& a, const PreparedBox<T>& b) {
  const T inter = intersection_area_bev(a, b);
  return safe_ratio(inter, a.area_bev + b.area_bev - inter);
}

// 3D IoU: the boxes are upright prisms, so the intersection volume is the BEV intersection area
// times the overlap of the z ranges.
template <typename T>
HOST_DEVICE_INLINE T iou_3d(const PreparedBox<T>& a, const PreparedBox<T>& b) {
  // Overlap of [cz - hz, cz + hz] intervals as min(2 ha, 2 hb, ha + hb - |ca - cb|): from sizes and the
  // centre difference, never from rounded interval ends, so that a thin box at a large z still
  // matches itself exactly (IoU 1) and the precision follows the box's size, not its height.
  const T z_overlap = min_of(min_of(a.hz, b.hz) * T(2), a.hz + b.hz - fabs_of(a.cz - b.cz));
  if (!(z_overlap > T(0))) return T(0);
  const T inter = intersection_area_bev(a, b) * z_overlap;
  if (!(inter > T(0))) return T(0);
  return safe_ratio(inter, a.volume + b.volume - inter);
}

}  // namespace box_ops
}  // namespace pointmae
