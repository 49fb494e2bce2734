// Gaussian test matrices of the randomized SVD (src/linalg/gaussian.ts) for one row tile.
//
// Entry e (flat, row-major, of the whole matrix) takes the uniforms of element indices 2e and 2e + 1
// of the counter-based generator (stream 1) and is z = sqrt(-2 ln(1 - u1)) * cos(2 pi u2).
// The uniforms are bit-identical to the CPU's. The CPU evaluates the rest in f64 and rounds once;
// here it is f32, and WGSL's log and cos are loose (cos is only bounded to 2^-11 absolute), so both
// are evaluated by hand to within a few ulps:
// - ln(x), x = 1 - u1 in (0, 1], exact: for x >= 1/2, ln(x) = -2 atanh(t) with t = u1 / (2 - u1) in
//   [0, 1/3], as an odd series to t^17 (relative error < 1e-8; the builtin log is only bounded in
//   absolute terms there, which is a large relative error for small u1); below 1/2 the builtin log,
//   which WGSL bounds to 3 ulp.
// - cos(2 pi u2): exact reductions by symmetry (u2 -> 1 - u2, 1/2 - u2, 1/4 - u2, all exact on the
//   2^-24 grid) to an angle in [0, pi/4], then a Taylor polynomial of cos or sin there.
// So a GPU entry differs from the CPU's by a few f32 ulps; the range finder does not care.

override WORKGROUP_SIZE: u32 = 256u;

const STREAM_GAUSSIAN: u32 = 1u;
const TWO_PI: f32 = 6.283185307179586;

struct Params {
  count: u32,
  // Global flat index of the tile's first entry, as two 32-bit halves.
  first_lo: u32,
  first_hi: u32,
  model: u32,
  key0: u32,
  key1: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;

fn uniform_at(lo: u32, hi: u32) -> f32 {
  let block = philox4x32_10(vec4<u32>(lo, params.model, STREAM_GAUSSIAN, hi), vec2<u32>(params.key0, params.key1));
  return philox_uniform(block.x);
}

// -2 ln(1 - u) for u in [0, 1) on the 2^-24 grid.
fn minus_two_log_complement(u: f32) -> f32 {
  if (u <= 0.5) {
    let t = u / (2.0 - u);
    let t2 = t * t;
    var s = 1.0 / 17.0;
    s = s * t2 + 1.0 / 15.0;
    s = s * t2 + 1.0 / 13.0;
    s = s * t2 + 1.0 / 11.0;
    s = s * t2 + 1.0 / 9.0;
    s = s * t2 + 1.0 / 7.0;
    s = s * t2 + 1.0 / 5.0;
    s = s * t2 + 1.0 / 3.0;
    s = s * t2 + 1.0;
    return 4.0 * t * s;
  }
  return -2.0 * log(1.0 - u);
}

fn cos_poly(x: f32) -> f32 {
  let x2 = x * x;
  var p = -1.0 / 3628800.0;
  p = p * x2 + 1.0 / 40320.0;
  p = p * x2 - 1.0 / 720.0;
  p = p * x2 + 1.0 / 24.0;
  p = p * x2 - 0.5;
  return p * x2 + 1.0;
}

fn sin_poly(x: f32) -> f32 {
  let x2 = x * x;
  var p = 1.0 / 362880.0;
  p = p * x2 - 1.0 / 5040.0;
  p = p * x2 + 1.0 / 120.0;
  p = p * x2 - 1.0 / 6.0;
  return x + x * x2 * p;
}

// cos(2 pi u) for u in [0, 1).
fn cos_two_pi(u: f32) -> f32 {
  var y = u;
  if (y > 0.5) {
    y = 1.0 - y;
  }
  var sign = 1.0;
  if (y > 0.25) {
    y = 0.5 - y;
    sign = -1.0;
  }
  if (y > 0.125) {
    return sign * sin_poly((0.25 - y) * TWO_PI);
  }
  return sign * cos_poly(y * TWO_PI);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
  if (i >= params.count) {
    return;
  }
  // e = first + i as 64 bits, then the uniform indices 2e and 2e + 1 (2e is even: no carry).
  let e_lo = params.first_lo + i;
  let e_hi = params.first_hi + select(0u, 1u, e_lo < params.first_lo);
  let lo = e_lo << 1u;
  let hi = (e_hi << 1u) | (e_lo >> 31u);
  let u1 = uniform_at(lo, hi);
  let u2 = uniform_at(lo + 1u, hi);
  dst[i] = sqrt(minus_two_log_complement(u1)) * cos_two_pi(u2);
}
