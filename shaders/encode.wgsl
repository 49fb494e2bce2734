// f32 -> little-endian words of F32, F16 or BF16 (two halves per word), rounded to nearest even.

override WORKGROUP_SIZE: u32 = 256u;
override DTYPE: u32 = 0u;

struct Params {
  count: u32,
  src_offset: u32,
  words: u32,
  _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let w = (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
  if (w >= params.words) {
    return;
  }
  if (DTYPE == DTYPE_F32) {
    dst[w] = bitcast<u32>(src[params.src_offset + w]);
    return;
  }
  let e = 2u * w;
  let lo = encode_half(src[params.src_offset + e], DTYPE);
  var hi = 0u;
  if (e + 1u < params.count) {
    hi = encode_half(src[params.src_offset + e + 1u], DTYPE);
  }
  dst[w] = lo | (hi << 16u);
}
