// AIM's activation statistics, per module input channel c (src/model/calibration.ts is the TS twin):
//   accumulate: block_sum[c] += |x[t, c]| for t = 0 .. rows-1, in row order (one invocation per
//               channel, so the f32 sum runs in the same order as the CPU's, chunk after chunk);
//   finish:     a[c] = a[c] + div_rn(block_sum[c], rows); block_sum[c] = 0   (rows = the block's tokens).
// stats holds a in [0, channels) and block_sum in [channels, 2 * channels).

override WORKGROUP_SIZE: u32 = 256u;

struct Params {
  rows: u32,
  channels: u32,
  // First element of row 0 in x.
  offset: u32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn accumulate(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let c = group_id(wid, nwg) * WORKGROUP_SIZE + lid;
  if (c >= params.channels) {
    return;
  }
  var s = stats[params.channels + c];
  for (var t = 0u; t < params.rows; t = t + 1u) {
    s = s + abs(x[params.offset + t * params.channels + c]);
  }
  stats[params.channels + c] = s;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn finish(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let c = group_id(wid, nwg) * WORKGROUP_SIZE + lid;
  if (c >= params.channels) {
    return;
  }
  let n = params.channels;
  stats[c] = stats[c] + div_rn(stats[n + c], f32(params.rows));
  stats[n + c] = 0.0;
}
