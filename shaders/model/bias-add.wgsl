// Bias add: x[offset + t * n + c] += bias[c] for t < step.tokens (bias in its stored dtype). With
// `step_rows`, the rows start at step.start (a projection written straight into the KV cache).

override WORKGROUP_SIZE: u32 = 256u;

struct Params {
  n: u32,
  dtype: u32,
  offset: u32,
  step_rows: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> weights: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = group_id(wid, nwg) * WORKGROUP_SIZE + lid;
  if (i >= step.tokens * params.n) {
    return;
  }
  let base = params.offset + select(0u, step.start * params.n, params.step_rows != 0u);
  x[base + i] = x[base + i] + weight_at(i % params.n, params.dtype);
}
