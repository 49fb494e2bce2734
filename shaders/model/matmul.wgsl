// Prefill projection Y = X W^T for step.tokens rows: X [tokens, cols] f32 (row stride cols, from
// x_offset), W [rows, cols] in its stored dtype, Y[t, row_start + n] at
// dst[dst_offset + (step.start if step_rows) * ldc + t * ldc + row_start + n], f32 accumulation.
//
// Each workgroup of 16 x 16 invocations computes a 64 x 64 block (64 tokens x 64 output channels)
// from TILE_K-deep slabs of X and W staged in workgroup memory, W decoded from its stored dtype as it
// is staged; invocation (x, y) owns tokens y + 16i and channels x + 16j (i, j < 4). Out-of-range
// elements load as 0, so no shape needs to be a multiple of a tile. Blocks are numbered
// col_blocks per row of blocks, folded to the dispatch limit.

override TILE_K: u32 = 16u;
const WG: u32 = 16u;
const TILE: u32 = 64u;

struct Params {
  rows: u32,
  cols: u32,
  dtype: u32,
  x_offset: u32,
  dst_offset: u32,
  row_start: u32,
  step_rows: u32,
  ldc: u32,
  col_blocks: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> weights: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

var<workgroup> xs: array<f32, TILE * TILE_K>;
var<workgroup> ws: array<f32, TILE * TILE_K>;

@compute @workgroup_size(WG, WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid3: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let g = group_id(wid, nwg);
  let t0 = (g / params.col_blocks) * TILE;
  let n0 = (g % params.col_blocks) * TILE;
  if (t0 >= step.tokens) {
    return;
  }
  let cols = params.cols;
  var acc0 = vec4<f32>();
  var acc1 = vec4<f32>();
  var acc2 = vec4<f32>();
  var acc3 = vec4<f32>();
  for (var k0 = 0u; k0 < cols; k0 = k0 + TILE_K) {
    for (var e = lid; e < TILE * TILE_K; e = e + WG * WG) {
      let r = e / TILE_K;
      let k = k0 + e % TILE_K;
      let t = t0 + r;
      let n = n0 + r;
      var xv = 0.0;
      if (t < step.tokens && k < cols) {
        xv = x[params.x_offset + t * cols + k];
      }
      xs[e] = xv;
      var wv = 0.0;
      if (n < params.rows && k < cols) {
        wv = weight_at(n * cols + k, params.dtype);
      }
      ws[e] = wv;
    }
    workgroupBarrier();
    for (var k = 0u; k < TILE_K; k = k + 1u) {
      let w = vec4<f32>(
        ws[(lid3.x) * TILE_K + k],
        ws[(lid3.x + WG) * TILE_K + k],
        ws[(lid3.x + 2u * WG) * TILE_K + k],
        ws[(lid3.x + 3u * WG) * TILE_K + k],
      );
      acc0 = acc0 + xs[(lid3.y) * TILE_K + k] * w;
      acc1 = acc1 + xs[(lid3.y + WG) * TILE_K + k] * w;
      acc2 = acc2 + xs[(lid3.y + 2u * WG) * TILE_K + k] * w;
      acc3 = acc3 + xs[(lid3.y + 3u * WG) * TILE_K + k] * w;
    }
    workgroupBarrier();
  }
  let base = params.dst_offset + select(0u, step.start * params.ldc, params.step_rows != 0u) + params.row_start;
  for (var i = 0u; i < 4u; i = i + 1u) {
    let t = t0 + lid3.y + i * WG;
    var a = acc0;
    if (i == 1u) {
      a = acc1;
    } else if (i == 2u) {
      a = acc2;
    } else if (i == 3u) {
      a = acc3;
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
      let n = n0 + lid3.x + j * WG;
      if (t < step.tokens && n < params.rows) {
        dst[base + t * params.ldc + n] = a[j];
      }
    }
  }
}

// The same product with one invocation per output and no workgroup memory, for CPU adapters
// (SwiftShader), where a workgroup barrier costs far more than the loads the tiles save.
@compute @workgroup_size(64)
fn direct(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = group_id(wid, nwg) * 64u + lid;
  if (i >= step.tokens * params.rows) {
    return;
  }
  let t = i / params.rows;
  let n = i % params.rows;
  let cols = params.cols;
  let xo = params.x_offset + t * cols;
  let wo = n * cols;
  var s = 0.0;
  for (var k = 0u; k < cols; k = k + 1u) {
    s = s + x[xo + k] * weight_at(wo + k, params.dtype);
  }
  let base = params.dst_offset + select(0u, step.start * params.ldc, params.step_rows != 0u) + params.row_start;
  dst[base + t * params.ldc + n] = s;
}
