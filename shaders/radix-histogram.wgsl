// One pass of radix select: per selection (workgroup z), a histogram of one digit of the key of
// every element whose key matches the digits already fixed. Keys: KEY_MODE 0 = bit pattern of |x|
// (its order is the order of |x|; every NaN is 0x7FC00000, above Inf); KEY_MODE 1 = global flat index, counting only
// elements whose |x| bits equal the selection's `tie_key` (to break ties by lowest index).
// Histograms accumulate across dispatches, so a tensor in several tiles gets one histogram.

override WORKGROUP_SIZE: u32 = 256u;
override ITEMS_PER_THREAD: u32 = 16u;
override RADIX_BINS: u32 = 256u;
override KEY_MODE: u32 = 0u;

struct Params {
  count: u32,
  stride: u32,
  index_base: u32,
  shift: u32,
  // The digit's bits after the shift: a last, narrower digit must not see bits fixed before.
  digit_mask: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

struct Selection {
  row: u32,
  prefix_mask: u32,
  prefix_value: u32,
  tie_key: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> selections: array<Selection>;
@group(0) @binding(2) var<storage, read> stack: array<f32>;
@group(0) @binding(3) var<storage, read_write> histograms: array<atomic<u32>>;

var<workgroup> local_bins: array<atomic<u32>, RADIX_BINS>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  for (var b = lid; b < RADIX_BINS; b = b + WORKGROUP_SIZE) {
    atomicStore(&local_bins[b], 0u);
  }
  workgroupBarrier();
  let sel = selections[wid.z];
  let row_start = sel.row * params.stride;
  let first = (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE * ITEMS_PER_THREAD + lid;
  for (var k = 0u; k < ITEMS_PER_THREAD; k = k + 1u) {
    let i = first + k * WORKGROUP_SIZE;
    if (i < params.count) {
      var abs_bits = bitcast<u32>(stack[row_start + i]) & 0x7fffffffu;
      if (abs_bits > 0x7f800000u) {
        abs_bits = 0x7fc00000u; // every NaN is one magnitude, above Inf (src/methods/rank-select.ts)
      }
      var key = abs_bits;
      var counted = true;
      if (KEY_MODE == 1u) {
        key = params.index_base + i;
        counted = abs_bits == sel.tie_key;
      }
      if (counted && (key & sel.prefix_mask) == sel.prefix_value) {
        atomicAdd(&local_bins[(key >> params.shift) & params.digit_mask], 1u);
      }
    }
  }
  workgroupBarrier();
  for (var b = lid; b < RADIX_BINS; b = b + WORKGROUP_SIZE) {
    let c = atomicLoad(&local_bins[b]);
    if (c != 0u) {
      atomicAdd(&histograms[wid.z * RADIX_BINS + b], c);
    }
  }
}
