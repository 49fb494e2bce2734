// Decode projection y = W x for one token, W [rows, cols] in its stored dtype (row = output
// channel, as torch stores nn.Linear), f32 accumulation. Memory-bound: each weight byte is read
// once, so the loads are what matter.
//
// A workgroup of ROWS_PER_GROUP * LANES invocations computes ROWS_PER_GROUP rows; the LANES of a
// row read it in 16-byte loads (8 bf16/f16 or 4 f32 values each), neighbouring lanes neighbouring
// words (coalesced), and add their partial sums in workgroup memory. Rows whose length is not a
// multiple of one load (odd shapes, only in tests and tiny models) take the per-element path.
// Output: dst[dst_offset + (step.start if step_rows) * ldc + row_start + row] for the rows of one
// weight chunk (a tensor larger than a storage binding is uploaded in row chunks).

override LANES: u32 = 32u;
override ROWS_PER_GROUP: u32 = 8u;
override WORKGROUP_SIZE: u32 = LANES * ROWS_PER_GROUP;

struct Params {
  rows: u32,
  cols: u32,
  dtype: u32,
  x_offset: u32,
  dst_offset: u32,
  row_start: u32,
  step_rows: u32,
  ldc: u32,
  // x_offset counts from the last token's row of the step (the logits of a prefill).
  x_last_row: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> weights: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

var<workgroup> partial: array<f32, WORKGROUP_SIZE>;

fn x_at(i: u32) -> f32 {
  return x[i >> 2u][i & 3u];
}

fn out_index(row: u32) -> u32 {
  return params.dst_offset + select(0u, step.start * params.ldc, params.step_rows != 0u) + params.row_start + row;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let lane = lid % LANES;
  let local_row = lid / LANES;
  let row = group_id(wid, nwg) * ROWS_PER_GROUP + local_row;
  let cols = params.cols;
  let xo = params.x_offset + select(0u, (step.tokens - 1u) * cols, params.x_last_row != 0u);
  var s = 0.0;
  if (row < params.rows) {
    let per_load = select(8u, 4u, params.dtype == DTYPE_F32);
    if (cols % per_load == 0u && xo % 4u == 0u) {
      let loads = cols / per_load;
      let w0 = row * loads;
      let x0 = xo / 4u;
      if (params.dtype == DTYPE_F32) {
        for (var v = lane; v < loads; v = v + LANES) {
          s = s + dot(bitcast<vec4<f32>>(weights[w0 + v]), x[x0 + v]);
        }
      } else {
        for (var v = lane; v < loads; v = v + LANES) {
          let q = weights[w0 + v];
          let a = halves(q.x, params.dtype);
          let b = halves(q.y, params.dtype);
          let c = halves(q.z, params.dtype);
          let d = halves(q.w, params.dtype);
          s = s + dot(vec4<f32>(a, b), x[x0 + 2u * v]) + dot(vec4<f32>(c, d), x[x0 + 2u * v + 1u]);
        }
      }
    } else {
      let e0 = row * cols;
      for (var k = lane; k < cols; k = k + LANES) {
        s = s + weight_at(e0 + k, params.dtype) * x_at(xo + k);
      }
    }
  }
  if (LANES == 1u) {
    // One invocation per row (CPU adapters, where workgroup barriers are costly): no reduction.
    if (row < params.rows) {
      dst[out_index(row)] = s;
    }
    return;
  }
  partial[lid] = s;
  workgroupBarrier();
  for (var stride = LANES / 2u; stride > 0u; stride = stride >> 1u) {
    if (lane < stride) {
      partial[lid] = partial[lid] + partial[lid + stride];
    }
    workgroupBarrier();
  }
  if (lane == 0u && row < params.rows) {
    dst[out_index(row)] = partial[lid];
  }
}
