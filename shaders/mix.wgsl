// Steps 3-7 of src/methods/generalized-task-arithmetic.ts for one tile: weighted task vectors,
// sign consensus (CONSENSUS 0: none, 1: sum, 2: count), sums in model order, normalize, lambda, and
// the base added back. Products are kept apart from the additions that follow them (see neg_zero)
// and quotients use div_rn, so every value is rounded exactly where the CPU rounds it.

override WORKGROUP_SIZE: u32 = 256u;
override CONSENSUS: u32 = 0u;

struct Params {
  count: u32,
  stride: u32,
  base_row: u32,
  models: u32,
  normalize: u32,
  scale_by_lambda: u32,
  lambda: f32,
  // The one divisor of the mix without consensus (already 1 when its magnitude is below 1e-8).
  divisor: f32,
  // -0.0, unknown to the compiler: x * y + neg_zero rounds the product on its own, so it is not
  // fused with the addition that follows into an fma.
  neg_zero: f32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

struct Model {
  row: u32,
  // 1 when the row is multiplied by `scale` first (L1 rescale after sparsification).
  rescale: u32,
  scale: f32,
  weight: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> models: array<Model>;
@group(0) @binding(2) var<storage, read> stack: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn is_nan(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn weighted_delta(m: Model, i: u32) -> f32 {
  var d = stack[m.row * params.stride + i];
  if (m.rescale != 0u) {
    d = d * m.scale;
  }
  return d * m.weight + params.neg_zero;
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
  var mixed: f32;
  var divisor: f32;
  if (CONSENSUS == 0u) {
    mixed = weighted_delta(models[0], i);
    for (var m = 1u; m < params.models; m = m + 1u) {
      mixed = mixed + weighted_delta(models[m], i);
    }
    divisor = params.divisor;
  } else {
    // The majority sign: of the weighted sum ('sum') or of the count of signs ('count'); a NaN vote
    // compares false, so its majority is -1.
    var vote_sum = 0.0;
    var vote_count = 0;
    var vote_nan = false;
    for (var m = 0u; m < params.models; m = m + 1u) {
      let wd = weighted_delta(models[m], i);
      if (CONSENSUS == 1u) {
        if (m == 0u) {
          vote_sum = wd;
        } else {
          vote_sum = vote_sum + wd;
        }
      } else if (is_nan(wd)) {
        vote_nan = true;
      } else if (wd > 0.0) {
        vote_count = vote_count + 1;
      } else if (wd < 0.0) {
        vote_count = vote_count - 1;
      }
    }
    var positive: bool;
    if (CONSENSUS == 1u) {
      positive = !is_nan(vote_sum) && vote_sum >= 0.0;
    } else {
      positive = !vote_nan && vote_count >= 0;
    }
    for (var m = 0u; m < params.models; m = m + 1u) {
      let model = models[m];
      let wd = weighted_delta(model, i);
      let agrees = !is_nan(wd) && ((positive && wd > 0.0) || (!positive && wd < 0.0));
      let keep = select(0.0, 1.0, agrees);
      let term = wd * keep + params.neg_zero;
      let weight_term = model.weight * keep + params.neg_zero;
      if (m == 0u) {
        mixed = term;
        divisor = weight_term;
      } else {
        mixed = mixed + term;
        divisor = divisor + weight_term;
      }
    }
    if (divisor == 0.0) {
      divisor = 1.0;
    }
  }
  if (params.normalize != 0u) {
    mixed = div_rn(mixed, divisor);
  }
  if (params.scale_by_lambda != 0u) {
    mixed = mixed * params.lambda + params.neg_zero;
  }
  out[i] = stack[params.base_row * params.stride + i] + mixed;
}
