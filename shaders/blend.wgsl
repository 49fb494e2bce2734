// out = round(c_avg * avg) + round(c_base * base), avg = (sum of the `others` rows in order) / count,
// with (c_avg, c_base) per segment: slerp (one other row, whole tensor) and model_stock (per tensor
// or per row, src/methods/model-stock.ts).

override WORKGROUP_SIZE: u32 = 256u;

struct Params {
  count: u32,
  stride: u32,
  base_row: u32,
  others: u32,
  // Global flat index of the tile's first element and the segment length for the coefficients.
  index_base: u32,
  seg_len: u32,
  neg_zero: f32,
  _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> other_rows: array<u32>;
@group(0) @binding(2) var<storage, read> coefficients: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> stack: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

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
  var sum = stack[other_rows[0] * params.stride + i];
  for (var k = 1u; k < params.others; k = k + 1u) {
    sum = sum + stack[other_rows[k] * params.stride + i];
  }
  let avg = div_rn(sum, f32(params.others));
  let c = coefficients[(params.index_base + i) / params.seg_len];
  let base = stack[params.base_row * params.stride + i];
  out[i] = (c.x * avg + params.neg_zero) + (c.y * base + params.neg_zero);
}
