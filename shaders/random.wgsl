// Philox4x32-10 blocks for element indices of one tensor: `words` writes the four output words
// per element (known-answer tests), `uniforms` writes word 0 as a uniform in [0, 1).

override WORKGROUP_SIZE: u32 = 256u;

struct Params {
  count: u32,
  // Global element index of the first output, as two 32-bit halves.
  index_lo: u32,
  index_hi: u32,
  model: u32,
  stream: u32,
  key0: u32,
  key1: u32,
  dst_offset: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;

fn block_for(i: u32) -> vec4<u32> {
  let lo = params.index_lo + i;
  let hi = params.index_hi + select(0u, 1u, lo < params.index_lo);
  return philox4x32_10(vec4<u32>(lo, params.model, params.stream, hi), vec2<u32>(params.key0, params.key1));
}

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn words(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = linear_id(wid, nwg, lid);
  if (i >= params.count) {
    return;
  }
  let r = block_for(i);
  let o = params.dst_offset + 4u * i;
  dst[o] = r.x;
  dst[o + 1u] = r.y;
  dst[o + 2u] = r.z;
  dst[o + 3u] = r.w;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn uniforms(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = linear_id(wid, nwg, lid);
  if (i >= params.count) {
    return;
  }
  dst[params.dst_offset + i] = bitcast<u32>(philox_uniform(block_for(i).x));
}
