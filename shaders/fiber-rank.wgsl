// DELLA's keep probabilities from magnitude ranks along dimension 1 (src/methods/sparsify.ts): the
// tile holds whole [d1, rest] slices; each fiber (fixed d0 and rest index) is sorted by (|x| key,
// position) with a bitonic network over `order` (fiber length padded to a power of two), then the
// element at sorted position p gets p = low + round(round(p / (m - 1)) * 2 * epsilon).

override WORKGROUP_SIZE: u32 = 256u;

const PAD: u32 = 0xffffffffu;

struct Params {
  // Fibers in the tile, their length m, the stride between their elements (rest), padded length.
  fibers: u32,
  length: u32,
  inner: u32,
  padded: u32,
  // Bitonic stage: block size k and compare distance j.
  k: u32,
  j: u32,
  row: u32,
  stride: u32,
  low: f32,
  epsilon: f32,
  span: f32,
  neg_zero: f32,
  prob_row: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> order: array<u32>;
@group(0) @binding(2) var<storage, read> stack: array<f32>;
@group(0) @binding(3) var<storage, read_write> probabilities: array<f32>;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
}

// Tile-local flat index of position j of fiber f.
fn element(f: u32, j: u32) -> u32 {
  let outer = f / params.inner;
  let rest = f % params.inner;
  return (outer * params.length + j) * params.inner + rest;
}

fn magnitude_key(x: f32) -> u32 {
  let abs_bits = bitcast<u32>(x) & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) {
    return 0x7fc00000u;
  }
  return abs_bits;
}

// (key, position) of an order entry; padding sorts after everything.
fn before(f: u32, a: u32, b: u32) -> bool {
  if (b == PAD) {
    return a != PAD;
  }
  if (a == PAD) {
    return false;
  }
  let ka = magnitude_key(stack[params.row * params.stride + element(f, a)]);
  let kb = magnitude_key(stack[params.row * params.stride + element(f, b)]);
  return ka < kb || (ka == kb && a < b);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn init(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let t = linear_id(wid, nwg, lid);
  if (t >= params.fibers * params.padded) {
    return;
  }
  let j = t % params.padded;
  order[t] = select(PAD, j, j < params.length);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn step(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let half = params.padded / 2u;
  let t = linear_id(wid, nwg, lid);
  if (t >= params.fibers * half) {
    return;
  }
  let f = t / half;
  let u = t % half;
  let i = (u / params.j) * 2u * params.j + (u % params.j);
  let l = i + params.j;
  let base = f * params.padded;
  let a = order[base + i];
  let b = order[base + l];
  let ascending = (i & params.k) == 0u;
  // Swap when the pair is out of the block's direction.
  if (ascending == before(f, b, a)) {
    order[base + i] = b;
    order[base + l] = a;
  }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn probabilities_from_ranks(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let t = linear_id(wid, nwg, lid);
  if (t >= params.fibers * params.length) {
    return;
  }
  let f = t / params.length;
  let position = t % params.length;
  let j = order[f * params.padded + position];
  let norm = div_rn(f32(position), params.span);
  let p = params.low + ((norm * 2.0) * params.epsilon + params.neg_zero);
  probabilities[params.prob_row * params.stride + element(f, j)] = p;
}
