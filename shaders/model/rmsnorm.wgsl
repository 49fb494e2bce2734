// RMSNorm (transformers' Qwen2RMSNorm / LlamaRMSNorm in f32): y = x * (1 / sqrt(mean(x^2) + eps)) * w.
// One workgroup per row of `n` channels. Rows: step.tokens * rows_per_token (rows_per_token > 1 is
// the per-head q/k norm of Qwen3), or with `last_row` only the last token's row (the final norm
// before the logits), written at dst_offset.

override WORKGROUP_SIZE: u32 = 256u;

struct Params {
  n: u32,
  dtype: u32,
  eps: f32,
  rows_per_token: u32,
  src_offset: u32,
  dst_offset: u32,
  last_row: u32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> weights: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> src: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

var<workgroup> partial: array<f32, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let g = group_id(wid, nwg);
  let rows = select(step.tokens * params.rows_per_token, 1u, params.last_row != 0u);
  if (g >= rows) {
    return;
  }
  let row = select(g, step.tokens - 1u, params.last_row != 0u);
  let base = params.src_offset + row * params.n;
  let out = params.dst_offset + select(row * params.n, 0u, params.last_row != 0u);
  var s = 0.0;
  for (var i = lid; i < params.n; i = i + WORKGROUP_SIZE) {
    let v = src[base + i];
    s = s + v * v;
  }
  partial[lid] = s;
  workgroupBarrier();
  for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) {
      partial[lid] = partial[lid] + partial[lid + stride];
    }
    workgroupBarrier();
  }
  let inv = 1.0 / sqrt(partial[0] / f32(params.n) + params.eps);
  for (var i = lid; i < params.n; i = i + WORKGROUP_SIZE) {
    dst[out + i] = (src[base + i] * inv) * weight_at(i, params.dtype);
  }
}
