// Rotary position embedding, transformers' rotate_half form: for channel i < d/2 of a head,
//   y[i]       = x[i] * cos(p, i) - x[i + d/2] * sin(p, i)
//   y[i + d/2] = x[i + d/2] * cos(p, i) + x[i] * sin(p, i)
// at position p = step.start + t. cos/sin come from a table (src/model/gpu/rope-table.ts) made on
// the CPU in double precision from transformers' f32 angles, so long positions lose nothing to the
// GPU's sin/cos. src [T, heads, d] -> dst; with `step_rows` dst rows start at step.start (the K
// cache).

override WORKGROUP_SIZE: u32 = 256u;

struct Params {
  heads: u32,
  head_dim: u32,
  src_offset: u32,
  dst_offset: u32,
  step_rows: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> src: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let half = params.head_dim / 2u;
  let i = group_id(wid, nwg) * WORKGROUP_SIZE + lid;
  if (i >= step.tokens * params.heads * half) {
    return;
  }
  let c = i % half;
  let th = i / half;
  let t = th / params.heads;
  let cs = table[(step.start + t) * half + c];
  let s = params.src_offset + th * params.head_dim + c;
  let x1 = src[s];
  let x2 = src[s + half];
  let d = params.dst_offset + select(0u, step.start * params.heads * params.head_dim, params.step_rows != 0u) +
    th * params.head_dim + c;
  dst[d] = x1 * cs.x - x2 * cs.y;
  dst[d + half] = x2 * cs.x + x1 * cs.y;
}
