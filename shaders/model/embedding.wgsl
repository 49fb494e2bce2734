// Embedding gather: dst[t, c] = table[token[t], c] for the rows of one table chunk (a table larger
// than a storage binding is uploaded in row chunks; each dispatch writes the tokens in its chunk).

override WORKGROUP_SIZE: u32 = 256u;

struct Params {
  cols: u32,
  dtype: u32,
  row_start: u32,
  row_count: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> weights: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> tokens: array<u32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = group_id(wid, nwg) * WORKGROUP_SIZE + lid;
  if (i >= step.tokens * params.cols) {
    return;
  }
  let t = i / params.cols;
  let c = i % params.cols;
  let token = tokens[t];
  if (token < params.row_start || token >= params.row_start + params.row_count) {
    return;
  }
  dst[i] = weight_at((token - params.row_start) * params.cols + c, params.dtype);
}
