// The k most likely tokens and their natural-log probabilities, log_softmax of the raw f32 logits
// (src/model/sampling.ts topLogprobs): most likely first, ties by lower id, NaN logits skipped.
// One workgroup: a max and a sum of exp(l - max) by tree reduction, each invocation's own top-k of
// its strided share, then invocation 0 merges the WORKGROUP_SIZE short lists. Writes
// result[1 + 2i] = id, result[2 + 2i] = bits of the log-probability, i < k (k <= MAX_K).

override WORKGROUP_SIZE: u32 = 256u;
const MAX_K: u32 = 16u;

struct Params {
  count: u32,
  k: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> result: array<u32>;

var<workgroup> partial: array<f32, WORKGROUP_SIZE>;
var<workgroup> lists: array<u32, WORKGROUP_SIZE * MAX_K>;
var<workgroup> list_len: array<u32, WORKGROUP_SIZE>;
// Merge cursor per list (workgroup memory starts zeroed).
var<workgroup> heads: array<u32, WORKGROUP_SIZE>;

fn is_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// Token a ranks before token b.
fn better(a: u32, b: u32) -> bool {
  let va = logits[a];
  let vb = logits[b];
  return va > vb || (va == vb && a < b);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(local_invocation_index) lid: u32) {
  let k = min(params.k, MAX_K);
  var m = -3.4028234663852886e38;
  for (var i = lid; i < params.count; i = i + WORKGROUP_SIZE) {
    let v = logits[i];
    if (!is_nan(v)) {
      m = max(m, v);
    }
  }
  partial[lid] = m;
  workgroupBarrier();
  for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) {
      partial[lid] = max(partial[lid], partial[lid + stride]);
    }
    workgroupBarrier();
  }
  let top = partial[0];
  workgroupBarrier();
  var s = 0.0;
  var top_list: array<u32, MAX_K>;
  var n = 0u;
  for (var i = lid; i < params.count; i = i + WORKGROUP_SIZE) {
    let v = logits[i];
    if (is_nan(v)) {
      continue;
    }
    let e = exp(v - top);
    if (e > 0.0) {
      s = s + e;
    }
    if (k == 0u || (n == k && !better(i, top_list[k - 1u]))) {
      continue;
    }
    var j = select(k - 1u, n, n < k);
    if (n < k) {
      n = n + 1u;
    }
    while (j > 0u && better(i, top_list[j - 1u])) {
      top_list[j] = top_list[j - 1u];
      j = j - 1u;
    }
    top_list[j] = i;
  }
  partial[lid] = s;
  for (var j = 0u; j < n; j = j + 1u) {
    lists[lid * MAX_K + j] = top_list[j];
  }
  list_len[lid] = n;
  workgroupBarrier();
  for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) {
      partial[lid] = partial[lid] + partial[lid + stride];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let log_z = top + log(partial[0]);
    // Merge: repeatedly take the best head of the per-invocation lists (each sorted).
    for (var r = 0u; r < k; r = r + 1u) {
      var best_owner = WORKGROUP_SIZE;
      var best_id = 0u;
      for (var o = 0u; o < WORKGROUP_SIZE; o = o + 1u) {
        if (heads[o] < list_len[o]) {
          let id = lists[o * MAX_K + heads[o]];
          if (best_owner == WORKGROUP_SIZE || better(id, best_id)) {
            best_owner = o;
            best_id = id;
          }
        }
      }
      if (best_owner == WORKGROUP_SIZE) {
        result[1u + 2u * r] = 0xffffffffu;
        result[2u + 2u * r] = 0u;
        continue;
      }
      heads[best_owner] = heads[best_owner] + 1u;
      result[1u + 2u * r] = best_id;
      result[2u + 2u * r] = bitcast<u32>(logits[best_id] - log_z);
    }
  }
}
