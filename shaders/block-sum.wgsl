// One level of the blocked f32 sum of src/methods/f32-reduce.ts: thread b adds the terms of one
// block (REDUCTION_BLOCK consecutive elements of a segment) in order, every addition rounded to f32.
// A segment is the whole vector being reduced (a tile's part of it) or, for per-row reductions, one
// row; blocks restart at every segment. Several reductions run at once, one per workgroup z.
// Level 0 reads stack rows through TERM; upper levels re-sum block sums (TERM 3).

override WORKGROUP_SIZE: u32 = 64u;
// 0: |a|, 1: a*a, 2: a*b, 3: a (upper levels).
override TERM: u32 = 0u;

const BLOCK: u32 = 256u;
const NO_ROW: u32 = 0xffffffffu;

struct Params {
  count: u32,
  stride: u32,
  seg_len: u32,
  // -0.0, unknown to the compiler: adding it keeps a product rounded on its own, so that it is not
  // fused with the following addition into one fma (which rounds once and differs from the CPU).
  neg_zero: f32,
}

struct Reduction {
  row_a: u32,
  row_b: u32,
  // Terms use a - base and b - base when set (offsets from the base model).
  base_row: u32,
  dst_offset: u32,
  // Terms use a / div_a (b / div_b) when bit 0 (bit 1) of flags is set: slerp's unit vectors.
  div_a: f32,
  div_b: f32,
  flags: u32,
  _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> reductions: array<Reduction>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn operand(row: u32, r: Reduction, i: u32, divide: bool, divisor: f32) -> f32 {
  var v = src[row * params.stride + i];
  if (r.base_row != NO_ROW) {
    v = v - src[r.base_row * params.stride + i];
  }
  if (divide) {
    v = div_rn(v, divisor);
  }
  return v;
}

fn term(r: Reduction, i: u32) -> f32 {
  if (TERM == 3u) {
    return src[r.row_a * params.stride + i];
  }
  let a = operand(r.row_a, r, i, (r.flags & 1u) != 0u, r.div_a);
  if (TERM == 0u) {
    return abs(a);
  }
  if (TERM == 1u) {
    return a * a + params.neg_zero;
  }
  let b = operand(r.row_b, r, i, (r.flags & 2u) != 0u, r.div_b);
  return a * b + params.neg_zero;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let blocks_per_seg = (params.seg_len + BLOCK - 1u) / BLOCK;
  let id = (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
  let seg = id / blocks_per_seg;
  let block = id % blocks_per_seg;
  let seg_start = seg * params.seg_len;
  if (seg_start >= params.count) {
    return;
  }
  let start = seg_start + block * BLOCK;
  let end = min(min(start + BLOCK, seg_start + params.seg_len), params.count);
  let r = reductions[wid.z];
  var acc = term(r, start);
  for (var i = start + 1u; i < end; i = i + 1u) {
    acc = acc + term(r, i);
  }
  dst[r.dst_offset + id] = acc;
}
