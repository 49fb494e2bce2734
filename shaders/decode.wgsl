// Raw little-endian tensor words (F32, F16 or BF16) -> f32, into row `dst_offset` of a stack.

override WORKGROUP_SIZE: u32 = 256u;
override DTYPE: u32 = 0u;

struct Params {
  count: u32,
  dst_offset: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

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
  var word: u32;
  if (DTYPE == DTYPE_F32) {
    word = src[i];
  } else {
    word = src[i >> 1u];
  }
  dst[params.dst_offset + i] = decode_element(word, i, DTYPE);
}
