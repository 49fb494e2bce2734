// The split-K partial products of matmul.wgsl added in split order (so the result does not depend
// on scheduling): C[i, j] (+)= sum_z partial[z * split_stride + i * n + j].

override WORKGROUP_SIZE: u32 = 256u;

struct Params {
  m: u32,
  n: u32,
  splits: u32,
  split_stride: u32,
  c_offset: u32,
  ldc: u32,
  accumulate: u32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let e = (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
  if (e >= params.m * params.n) {
    return;
  }
  var sum = partial[e];
  for (var z = 1u; z < params.splits; z = z + 1u) {
    sum = sum + partial[z * params.split_stride + e];
  }
  let o = params.c_offset + (e / params.n) * params.ldc + e % params.n;
  if (params.accumulate != 0u) {
    c[o] = c[o] + sum;
  } else {
    c[o] = sum;
  }
}
