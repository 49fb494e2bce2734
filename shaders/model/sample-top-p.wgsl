// Temperature and top-p sampling (src/model/sampling.ts sampleToken with temperature > 0), in one
// workgroup, without sorting the vocabulary:
//   e_i = exp((l_i - max) / T) (NaN -> 0), Z = sum e_i; the nucleus is the tokens in descending e
//   (ties by lower id) up to the first whose running sum reaches topP * Z. The smallest nucleus value
//   v* is found by bisection on the bit patterns of e (for e >= 0 they order as the values): the
//   largest v with S(>= v) >= topP * Z; tokens above v* are all in, ties at v* in id order until the
//   target is reached (c of them). mass = S(> v*) + c v*; r = u mass with u the sampling uniform
//   (src/random/counter-rng.ts samplingUniform: key (seed, 0), counter (position, 0, 2, 0)). The
//   token is the first in nucleus order whose running sum exceeds r: a second bisection finds its
//   value w, then the k-th token of value w in id order, k = floor((r - S(> w)) / w) + 1.
// The TS sampler sums in f64 in sorted order; these f32 sums in a fixed tree order pick the same
// token except when r lies within f32 rounding (~1e-7 relative) of a boundary between two tokens.
// With no finite maximum (all NaN, or an infinite logit) the token is the argmax, as in TS.
// `scratch` holds e (count floats). Writes result[0].

override WORKGROUP_SIZE: u32 = 256u;
// Bit pattern of 1.0 plus one: above every e (e <= 1).
const ABOVE_ONE: u32 = 0x3f800001u;

struct Params {
  count: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(4) var<storage, read_write> result: array<u32>;

var<workgroup> partial: array<f32, WORKGROUP_SIZE>;
var<workgroup> counts: array<u32, WORKGROUP_SIZE>;
var<workgroup> best_index: array<u32, WORKGROUP_SIZE>;
var<workgroup> chosen: u32;

fn is_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

fn workgroup_sum(v: f32, lid: u32) -> f32 {
  partial[lid] = v;
  workgroupBarrier();
  for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) {
      partial[lid] = partial[lid] + partial[lid + stride];
    }
    workgroupBarrier();
  }
  let s = workgroupUniformLoad(&partial[0]);
  workgroupBarrier();
  return s;
}

fn workgroup_max(v: f32, lid: u32) -> f32 {
  partial[lid] = v;
  workgroupBarrier();
  for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) {
      partial[lid] = max(partial[lid], partial[lid + stride]);
    }
    workgroupBarrier();
  }
  let s = workgroupUniformLoad(&partial[0]);
  workgroupBarrier();
  return s;
}

fn workgroup_count(v: u32, lid: u32) -> u32 {
  counts[lid] = v;
  workgroupBarrier();
  for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) {
      counts[lid] = counts[lid] + counts[lid + stride];
    }
    workgroupBarrier();
  }
  let s = workgroupUniformLoad(&counts[0]);
  workgroupBarrier();
  return s;
}

// Sum of the e whose bits are >= b.
fn sum_at_least(b: u32, lid: u32) -> f32 {
  var s = 0.0;
  for (var i = lid; i < params.count; i = i + WORKGROUP_SIZE) {
    let e = scratch[i];
    if (bitcast<u32>(e) >= b) {
      s = s + e;
    }
  }
  return workgroup_sum(s, lid);
}

// Index of the k-th (1-based) token whose e has bits `b`, in id order (each invocation scans one
// contiguous range; a prefix over the ranges' counts finds the one holding it).
fn kth_with_bits(b: u32, k: u32, lid: u32) -> u32 {
  let span = (params.count + WORKGROUP_SIZE - 1u) / WORKGROUP_SIZE;
  let first = lid * span;
  let stop = min(params.count, first + span);
  var n = 0u;
  for (var i = first; i < stop; i = i + 1u) {
    if (bitcast<u32>(scratch[i]) == b) {
      n = n + 1u;
    }
  }
  counts[lid] = n;
  workgroupBarrier();
  if (lid == 0u) {
    var before = 0u;
    var owner = 0u;
    for (var o = 0u; o < WORKGROUP_SIZE; o = o + 1u) {
      if (before + counts[o] >= k) {
        owner = o;
        break;
      }
      before = before + counts[o];
    }
    counts[0] = owner;
    best_index[0] = k - before;
  }
  workgroupBarrier();
  let owner = counts[0];
  let rank = best_index[0];
  workgroupBarrier();
  if (lid == owner) {
    var seen = 0u;
    for (var i = first; i < stop; i = i + 1u) {
      if (bitcast<u32>(scratch[i]) == b) {
        seen = seen + 1u;
        if (seen == rank) {
          chosen = i;
          break;
        }
      }
    }
  }
  return workgroupUniformLoad(&chosen);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(local_invocation_index) lid: u32) {
  // Pass 1: the largest non-NaN logit, and the argmax for the fallback.
  var m = 0.0;
  var arg = 0u;
  var found = false;
  for (var i = lid; i < params.count; i = i + WORKGROUP_SIZE) {
    let v = logits[i];
    if (!is_nan(v) && (!found || v > m)) {
      m = v;
      arg = i;
      found = true;
    }
  }
  let top = workgroup_max(select(-3.4028234663852886e38, m, found), lid);
  // The argmax: the lowest index among the invocations holding the maximum.
  counts[lid] = select(0xffffffffu, arg, found && m == top);
  workgroupBarrier();
  for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) {
      counts[lid] = min(counts[lid], counts[lid + stride]);
    }
    workgroupBarrier();
  }
  let argmax = workgroupUniformLoad(&counts[0]);
  workgroupBarrier();
  let top_bits = bitcast<u32>(top) & 0x7fffffffu;
  if (argmax == 0xffffffffu || top_bits >= 0x7f800000u) {
    if (lid == 0u) {
      result[0] = select(argmax, 0u, argmax == 0xffffffffu);
    }
    return;
  }
  let inv_t = 1.0 / step.temperature;
  var z_part = 0.0;
  for (var i = lid; i < params.count; i = i + WORKGROUP_SIZE) {
    let l = logits[i];
    // NaN logits get no mass (tested on the bits: compilers may fold NaN comparisons away).
    var kept = 0.0;
    if (!is_nan(l)) {
      let e = exp((l - top) * inv_t);
      kept = select(0.0, e, e > 0.0);
    }
    scratch[i] = kept;
    z_part = z_part + kept;
  }
  storageBarrier();
  let z = workgroup_sum(z_part, lid);
  let target_mass = step.top_p * z;
  // v*: the largest bits with S(>= v*) >= target (S(>= 1) = Z >= target).
  var lo = 1u;
  var hi = ABOVE_ONE;
  loop {
    if (hi - lo <= 1u) {
      break;
    }
    let mid = lo + (hi - lo) / 2u;
    if (sum_at_least(mid, lid) >= target_mass) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  let v_bits = lo;
  let v = bitcast<f32>(v_bits);
  let above = sum_at_least(v_bits + 1u, lid);
  var tie_part = 0u;
  for (var i = lid; i < params.count; i = i + WORKGROUP_SIZE) {
    if (bitcast<u32>(scratch[i]) == v_bits) {
      tie_part = tie_part + 1u;
    }
  }
  let ties = workgroup_count(tie_part, lid);
  let c = clamp(u32(ceil((target_mass - above) / v)), 1u, ties);
  let mass = above + f32(c) * v;

  let u = philox_uniform(philox4x32_10(vec4<u32>(step.sample_position, 0u, 2u, 0u), vec2<u32>(step.seed, 0u)).x);
  let r = u * mass;
  var w_bits = v_bits;
  var k = c;
  if (r < mass) {
    // w: the largest bits >= v* whose nucleus sum S(>= w) exceeds r.
    var wlo = v_bits;
    var whi = ABOVE_ONE;
    loop {
      if (whi - wlo <= 1u) {
        break;
      }
      let mid = wlo + (whi - wlo) / 2u;
      if (sum_at_least(mid, lid) > r) {
        wlo = mid;
      } else {
        whi = mid;
      }
    }
    w_bits = wlo;
    let w = bitcast<f32>(w_bits);
    let w_above = select(sum_at_least(w_bits + 1u, lid), above, w_bits == v_bits);
    var w_ties = c;
    if (w_bits != v_bits) {
      var part = 0u;
      for (var i = lid; i < params.count; i = i + WORKGROUP_SIZE) {
        if (bitcast<u32>(scratch[i]) == w_bits) {
          part = part + 1u;
        }
      }
      w_ties = workgroup_count(part, lid);
    }
    k = clamp(u32(floor((r - w_above) / w)) + 1u, 1u, w_ties);
  }
  let token = kth_with_bits(w_bits, k, lid);
  if (lid == 0u) {
    result[0] = token;
  }
}
