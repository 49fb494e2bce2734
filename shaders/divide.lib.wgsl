// Correctly rounded f32 division. WGSL allows x / y to be 2.5 ULP off (GPUs divide through a
// reciprocal), and the CPU reference divides exactly, so quotients that must match bit for bit go
// through this integer long division instead.

fn div_rn(a: f32, b: f32) -> f32 {
  let ua = bitcast<u32>(a);
  let ub = bitcast<u32>(b);
  let sign = (ua ^ ub) & 0x80000000u;
  let ea = (ua >> 23u) & 0xffu;
  let eb = (ub >> 23u) & 0xffu;
  var ma = ua & 0x7fffffu;
  var mb = ub & 0x7fffffu;
  let nan = bitcast<f32>(0x7fc00000u | (ua & 0u)); // runtime operand: a constant NaN is a WGSL error
  if ((ea == 255u && ma != 0u) || (eb == 255u && mb != 0u)) {
    return nan;
  }
  if (ea == 255u) {
    if (eb == 255u) {
      return nan;
    }
    return bitcast<f32>(sign | 0x7f800000u);
  }
  if (eb == 255u) {
    return bitcast<f32>(sign);
  }
  let a_zero = ea == 0u && ma == 0u;
  if (eb == 0u && mb == 0u) {
    if (a_zero) {
      return nan;
    }
    return bitcast<f32>(sign | 0x7f800000u);
  }
  if (a_zero) {
    return bitcast<f32>(sign);
  }
  // Mantissas in [2^23, 2^24) with unbiased-plus-127 exponents (subnormals normalized).
  var xa: i32;
  if (ea == 0u) {
    let s = countLeadingZeros(ma) - 8u;
    ma = ma << s;
    xa = 1 - i32(s);
  } else {
    ma = ma | 0x800000u;
    xa = i32(ea);
  }
  var xb: i32;
  if (eb == 0u) {
    let s = countLeadingZeros(mb) - 8u;
    mb = mb << s;
    xb = 1 - i32(s);
  } else {
    mb = mb | 0x800000u;
    xb = i32(eb);
  }
  var e = xa - xb + 127;
  var rem = ma;
  if (rem < mb) {
    rem = rem << 1u;
    e = e - 1;
  }
  // 26 quotient bits: 24 for the mantissa, then guard bits; the remainder is the sticky bit.
  var q = 0u;
  for (var i = 0u; i < 26u; i = i + 1u) {
    q = q << 1u;
    if (rem >= mb) {
      rem = rem - mb;
      q = q | 1u;
    }
    rem = rem << 1u;
  }
  if (e >= 255) {
    return bitcast<f32>(sign | 0x7f800000u);
  }
  var shift = 2u;
  if (e <= 0) {
    // Subnormal result: the unit is 2^-149.
    let s = 3 - e;
    if (s > 26) {
      return bitcast<f32>(sign);
    }
    shift = u32(s);
    e = 0;
  }
  var m = q >> shift;
  let r = q & ((1u << shift) - 1u);
  let half = 1u << (shift - 1u);
  if (r > half || (r == half && (rem != 0u || (m & 1u) == 1u))) {
    m = m + 1u;
  }
  if (e == 0) {
    return bitcast<f32>(sign | m);
  }
  // m holds the implicit one, which adds one to the exponent field; a rounding carry may reach Inf.
  return bitcast<f32>(sign | ((u32(e - 1) << 23u) + m));
}
