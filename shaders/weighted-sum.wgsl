// src/methods/linear.ts for one tile: sum_m round(w_m * x_m) in model order, then an optional
// correctly rounded division by the sum of the weights.

override WORKGROUP_SIZE: u32 = 256u;

struct Params {
  count: u32,
  stride: u32,
  models: u32,
  normalize: u32,
  divisor: f32,
  neg_zero: f32,
  _pad0: u32,
  _pad1: u32,
}

struct Term {
  row: u32,
  weight: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> terms: array<Term>;
@group(0) @binding(2) var<storage, read> stack: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn product(t: Term, i: u32) -> f32 {
  return t.weight * stack[t.row * params.stride + i] + params.neg_zero;
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
  var sum = product(terms[0], i);
  for (var m = 1u; m < params.models; m = m + 1u) {
    sum = sum + product(terms[m], i);
  }
  if (params.normalize != 0u) {
    sum = div_rn(sum, params.divisor);
  }
  out[i] = sum;
}
