// Causal grouped-query attention over the KV cache, for prefill (many query rows) and decode (one):
//   out[t, h] = sum_j softmax_j(q[t, h] . k[j, h / group] * scale) v[j, h / group],  j <= start + t,
// group = heads / kv_heads (transformers' repeat_kv: query head h reads kv head floor(h / group)).
// One workgroup per (token, head) walks the keys in tiles of WORKGROUP_SIZE with an online softmax
// (running max m and sum l; a new tile rescales both by exp(m_old - m_new)), so any context length
// runs in fixed workgroup memory. Invocation i scores key i of a tile, then owns the output channels
// i, i + WORKGROUP_SIZE, ... (head_dim <= MAX_HEAD_DIM).
//
// q [tokens, heads * head_dim] f32; k_cache, v_cache [positions, kv_heads * head_dim] f32.

override WORKGROUP_SIZE: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
// Channels per invocation: MAX_HEAD_DIM / WORKGROUP_SIZE for the smallest workgroup allowed (64).
const SLOTS: u32 = 4u;
// Below any score; not -inf, so exp(m_old - m_new) of the first tile is 0, not NaN.
const NO_SCORE: f32 = -3.0e38;

struct Params {
  heads: u32,
  kv_heads: u32,
  head_dim: u32,
  scale: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k_cache: array<f32>;
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

var<workgroup> q_row: array<f32, MAX_HEAD_DIM>;
var<workgroup> probs: array<f32, WORKGROUP_SIZE>;
var<workgroup> partial: array<f32, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let g = group_id(wid, nwg);
  if (g >= step.tokens * params.heads) {
    return;
  }
  let hd = params.head_dim;
  let t = g / params.heads;
  let h = g % params.heads;
  let kv = h / (params.heads / params.kv_heads);
  let kv_stride = params.kv_heads * hd;
  let q_base = g * hd;
  for (var d = lid; d < hd; d = d + WORKGROUP_SIZE) {
    q_row[d] = q[q_base + d];
  }
  workgroupBarrier();
  let keys = step.start + t + 1u;
  var m = NO_SCORE;
  var l = 0.0;
  var acc = array<f32, SLOTS>(0.0, 0.0, 0.0, 0.0);
  for (var j0 = 0u; j0 < keys; j0 = j0 + WORKGROUP_SIZE) {
    let j = j0 + lid;
    var score = NO_SCORE;
    if (j < keys) {
      let kb = j * kv_stride + kv * hd;
      var s = 0.0;
      for (var d = 0u; d < hd; d = d + 1u) {
        s = s + q_row[d] * k_cache[kb + d];
      }
      score = s * params.scale;
    }
    partial[lid] = score;
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride = stride >> 1u) {
      if (lid < stride) {
        partial[lid] = max(partial[lid], partial[lid + stride]);
      }
      workgroupBarrier();
    }
    let m_new = max(m, partial[0]);
    workgroupBarrier();
    var p = 0.0;
    if (j < keys) {
      p = exp(score - m_new);
    }
    probs[lid] = p;
    partial[lid] = p;
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride = stride >> 1u) {
      if (lid < stride) {
        partial[lid] = partial[lid] + partial[lid + stride];
      }
      workgroupBarrier();
    }
    let rescale = exp(m - m_new);
    l = l * rescale + partial[0];
    let in_tile = min(WORKGROUP_SIZE, keys - j0);
    for (var slot = 0u; slot < SLOTS; slot = slot + 1u) {
      let d = lid + slot * WORKGROUP_SIZE;
      if (d < hd) {
        var a = acc[slot] * rescale;
        for (var jj = 0u; jj < in_tile; jj = jj + 1u) {
          a = a + probs[jj] * v_cache[(j0 + jj) * kv_stride + kv * hd + d];
        }
        acc[slot] = a;
      }
    }
    m = m_new;
    workgroupBarrier();
  }
  for (var slot = 0u; slot < SLOTS; slot = slot + 1u) {
    let d = lid + slot * WORKGROUP_SIZE;
    if (d < hd) {
      out[q_base + d] = acc[slot] / l;
    }
  }
}
