// Greedy choice (src/model/sampling.ts argmax): the index of the largest logit, the lowest index
// among equals; NaN never wins; 0 when every logit is NaN. One workgroup: each invocation scans a
// strided share of the vocabulary, then the candidates meet in a tree. Writes result[0].

override WORKGROUP_SIZE: u32 = 256u;

struct Params {
  count: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> result: array<u32>;

var<workgroup> best_value: array<f32, WORKGROUP_SIZE>;
var<workgroup> best_index: array<u32, WORKGROUP_SIZE>;
var<workgroup> best_found: array<u32, WORKGROUP_SIZE>;

fn is_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(local_invocation_index) lid: u32) {
  var value = 0.0;
  var index = 0u;
  var found = 0u;
  for (var i = lid; i < params.count; i = i + WORKGROUP_SIZE) {
    let v = logits[i];
    // Indices rise along the scan, so only a strictly larger value replaces the candidate.
    if (!is_nan(v) && (found == 0u || v > value)) {
      value = v;
      index = i;
      found = 1u;
    }
  }
  best_value[lid] = value;
  best_index[lid] = index;
  best_found[lid] = found;
  workgroupBarrier();
  for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) {
      let o = lid + stride;
      let take = best_found[o] != 0u &&
        (best_found[lid] == 0u || best_value[o] > best_value[lid] ||
          (best_value[o] == best_value[lid] && best_index[o] < best_index[lid]));
      if (take) {
        best_value[lid] = best_value[o];
        best_index[lid] = best_index[o];
        best_found[lid] = 1u;
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    result[0] = best_index[0];
  }
}
