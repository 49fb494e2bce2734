// Sparsification of task vectors in place (src/methods/sparsify.ts): one stack row per workgroup z,
// row[i] = row[i] * keep(i) (so a dropped NaN stays NaN and a dropped Inf becomes NaN, as on the CPU).
// Masks: TOP keeps the k largest |x| (the element of rank k-1 is (t_hi, c_hi): larger magnitudes,
// and equal ones up to index c_hi); WINDOW keeps positions [from, to) of the ascending order
// ((key, index) >= (t_lo, c_lo) and < (t_hi, c_hi)); BERNOULLI keeps u(i) < p; DELLA keeps
// u(i) < prob(i); DROP keeps nothing; ZERO writes zeros (DELLA with density <= 0).

override WORKGROUP_SIZE: u32 = 256u;

const MODE_TOP: u32 = 1u;
const MODE_WINDOW: u32 = 2u;
const MODE_BERNOULLI: u32 = 3u;
const MODE_DELLA: u32 = 4u;
const MODE_DROP: u32 = 5u;
const MODE_ZERO: u32 = 6u;

const FLAG_LOWER: u32 = 1u;
const FLAG_UPPER: u32 = 2u;

struct Params {
  count: u32,
  stride: u32,
  // Global flat index of the tile's first element (the random counter and the tie-break use it).
  index_base: u32,
  seed: u32,
  name_hash: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

struct Sparsify {
  row: u32,
  mode: u32,
  t_hi: u32,
  c_hi: u32,
  t_lo: u32,
  c_lo: u32,
  flags: u32,
  p: f32,
  // Row of `probabilities` holding this model's DELLA keep probabilities.
  prob_row: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> models: array<Sparsify>;
@group(0) @binding(2) var<storage, read_write> stack: array<f32>;
@group(0) @binding(3) var<storage, read> probabilities: array<f32>;

fn magnitude_key(x: f32) -> u32 {
  let abs_bits = bitcast<u32>(x) & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) {
    return 0x7fc00000u;
  }
  return abs_bits;
}

// (key, index) >= (t, c) in the order of magnitude, then index.
fn at_or_after(key: u32, index: u32, t: u32, c: u32) -> bool {
  return key > t || (key == t && index >= c);
}

fn uniform_at(index: u32, model: u32) -> f32 {
  let block = philox4x32_10(vec4<u32>(index, model, 0u, 0u), vec2<u32>(params.seed, params.name_hash));
  return philox_uniform(block.x);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WORKGROUP_SIZE + lid;
  if (i >= params.count) {
    return;
  }
  let m = models[wid.z];
  let at = m.row * params.stride + i;
  if (m.mode == MODE_ZERO) {
    stack[at] = 0.0;
    return;
  }
  let x = stack[at];
  let index = params.index_base + i;
  var keep = false;
  switch m.mode {
    case MODE_TOP: {
      let key = magnitude_key(x);
      keep = key > m.t_hi || (key == m.t_hi && index <= m.c_hi);
    }
    case MODE_WINDOW: {
      let key = magnitude_key(x);
      keep = true;
      if ((m.flags & FLAG_LOWER) != 0u) {
        keep = at_or_after(key, index, m.t_lo, m.c_lo);
      }
      if ((m.flags & FLAG_UPPER) != 0u) {
        keep = keep && !at_or_after(key, index, m.t_hi, m.c_hi);
      }
    }
    case MODE_BERNOULLI: {
      keep = uniform_at(index, m.row) < m.p;
    }
    case MODE_DELLA: {
      keep = uniform_at(index, m.row) < probabilities[m.prob_row * params.stride + i];
    }
    default: {
      keep = false;
    }
  }
  stack[at] = x * select(0.0, 1.0, keep);
}
