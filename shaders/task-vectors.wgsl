// Task vectors in place: every row of the stack except the base row becomes row - base.

override WORKGROUP_SIZE: u32 = 256u;

struct Params {
  count: u32,
  stride: u32,
  base_row: u32,
  _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> stack: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
  let row = wid.z;
  if (i >= params.count || row == params.base_row) {
    return;
  }
  let at = row * params.stride + i;
  stack[at] = stack[at] - stack[params.base_row * params.stride + i];
}
