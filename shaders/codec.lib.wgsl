// Float codecs on raw bits, no shader-f16 needed. Bit-for-bit the same as src/formats/dtype.ts.

const DTYPE_F32: u32 = 0u;
const DTYPE_F16: u32 = 1u;
const DTYPE_BF16: u32 = 2u;

fn bf16_bits_to_f32(h: u32) -> f32 {
  return bitcast<f32>(h << 16u);
}

fn f16_bits_to_f32(h: u32) -> f32 {
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0u) {
    // Subnormal half m * 2^-24 is a normal f32: build it exactly from the leading one.
    if (m == 0u) {
      return bitcast<f32>(sign);
    }
    let lead = 31u - countLeadingZeros(m); // position of the leading one, 0..9
    let frac = (m << (23u - lead)) & 0x7fffffu;
    return bitcast<f32>(sign | ((lead + 103u) << 23u) | frac);
  }
  if (e == 31u) {
    // The CPU decoder maps every half NaN to the canonical quiet NaN.
    if (m != 0u) {
      return bitcast<f32>(0x7fc00000u | (h & 0u)); // runtime operand: a constant NaN is a WGSL error
    }
    return bitcast<f32>(sign | 0x7f800000u);
  }
  return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

fn f32_to_bf16_bits(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    return ((u >> 16u) | 0x40u) & 0xffffu;
  }
  return ((u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u) & 0xffffu;
}

fn f32_to_f16_bits(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  let sign = (u >> 16u) & 0x8000u;
  let exp = (u >> 23u) & 0xffu;
  let mant = u & 0x7fffffu;
  if (exp == 0xffu) {
    if (mant != 0u) {
      return sign | 0x7c00u | 0x200u | (mant >> 13u);
    }
    return sign | 0x7c00u;
  }
  let e = i32(exp) - 127;
  if (e > 15) {
    return sign | 0x7c00u;
  }
  if (e >= -14) {
    var h = (u32(e + 15) << 10u) | (mant >> 13u);
    let rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) == 1u)) {
      h = h + 1u; // a carry into the exponent is the correct rounding
    }
    return sign | h;
  }
  if (e < -25) {
    return sign;
  }
  let full = mant | 0x800000u;
  let shift = u32(-e - 1); // 14..24
  var m = full >> shift;
  let rest = full & ((1u << shift) - 1u);
  let half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (m & 1u) == 1u)) {
    m = m + 1u;
  }
  return sign | m;
}

// Element i of a tensor stored as little-endian words of `dtype`.
fn decode_element(word: u32, i: u32, dtype: u32) -> f32 {
  if (dtype == DTYPE_F32) {
    return bitcast<f32>(word);
  }
  let h = (word >> ((i & 1u) * 16u)) & 0xffffu;
  if (dtype == DTYPE_BF16) {
    return bf16_bits_to_f32(h);
  }
  return f16_bits_to_f32(h);
}

fn encode_half(x: f32, dtype: u32) -> u32 {
  if (dtype == DTYPE_BF16) {
    return f32_to_bf16_bits(x);
  }
  return f32_to_f16_bits(x);
}
