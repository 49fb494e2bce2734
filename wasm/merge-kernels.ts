// AssemblyScript source of the CPU merge kernels (WebAssembly with 128-bit SIMD), built by
// `npm run build:wasm`. Each kernel does decode -> method step -> encode in one pass over the
// elements it is given. The TypeScript in src/methods and src/formats/dtype.ts is the specification:
// every operation below is the same f32 operation, in the same order, as the reference (f32
// arithmetic is correctly rounded in both; SIMD128 has no fused multiply-add), so results are
// bit for bit the reference's. Memory is imported and laid out by the caller (src/kernels/wasm.ts);
// nothing here allocates.

// Dtype codes (src/kernels/wasm.ts DTYPE_CODE).
const F32: i32 = 0;
const F16: i32 = 1;
const BF16: i32 = 2;

// ---------------------------------------------------------------------------------------------
// Codecs (dtype.ts decodeToF32 / encodeFromF32)

/** f16 bits (u32 lanes) to f32: exact; every NaN becomes 0x7FC00000, as the reference's table holds. */
// @ts-ignore: decorator
@inline
function f16ToF32x4(h: v128): v128 {
  const sign = i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16);
  const magnitude = v128.and(h, i32x4.splat(0x7fff));
  const normal = i32x4.add(i32x4.shl(magnitude, 13), i32x4.splat(0x38000000));
  const sub = f32x4.mul(f32x4.convert_i32x4_u(v128.and(h, i32x4.splat(0x3ff))), f32x4.splat(5.9604644775390625e-8));
  const isSub = i32x4.lt_s(magnitude, i32x4.splat(0x0400));
  const isInf = i32x4.eq(magnitude, i32x4.splat(0x7c00));
  const isNaN = i32x4.gt_s(magnitude, i32x4.splat(0x7c00));
  let bits = v128.bitselect(sub, normal, isSub);
  bits = v128.bitselect(i32x4.splat(0x7f800000), bits, isInf);
  bits = v128.or(bits, sign);
  return v128.bitselect(i32x4.splat(0x7fc00000), bits, isNaN);
}

// @ts-ignore: decorator
@inline
function f16ToF32(h: u32): f32 {
  const magnitude = h & 0x7fff;
  const sign = (h & 0x8000) << 16;
  if (magnitude > 0x7c00) return reinterpret<f32>(0x7fc00000);
  if (magnitude == 0x7c00) return reinterpret<f32>(sign | 0x7f800000);
  if (magnitude < 0x0400) {
    return reinterpret<f32>(reinterpret<u32>(<f32>(h & 0x3ff) * <f32>5.9604644775390625e-8) | sign);
  }
  return reinterpret<f32>(sign | ((magnitude << 13) + 0x38000000));
}

/** f32 bits (i32 lanes) to bf16 bits in the low half: round to nearest even, NaN kept quiet with its sign. */
// @ts-ignore: decorator
@inline
function bf16Bits4(u: v128): v128 {
  const isNaN = i32x4.gt_s(v128.and(u, i32x4.splat(0x7fffffff)), i32x4.splat(0x7f800000));
  const lsb = v128.and(i32x4.shr_u(u, 16), i32x4.splat(1));
  const rounded = i32x4.shr_u(i32x4.add(i32x4.add(u, i32x4.splat(0x7fff)), lsb), 16);
  const quiet = v128.or(i32x4.shr_u(u, 16), i32x4.splat(0x0040));
  return v128.and(v128.bitselect(quiet, rounded, isNaN), i32x4.splat(0xffff));
}

// @ts-ignore: decorator
@inline
function bf16Bits(u: u32): u32 {
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x0040) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * f32 bits (i32 lanes) to f16 bits, as dtype.ts f32ToF16Bits: nearest even, overflow to Inf,
 * subnormals kept. Below 2^-14 the half is round-to-nearest-even of |x| * 2^24 (an exact product).
 */
// @ts-ignore: decorator
@inline
function f16Bits4(u: v128): v128 {
  const sign = v128.and(i32x4.shr_u(u, 16), i32x4.splat(0x8000));
  const abs = v128.and(u, i32x4.splat(0x7fffffff));
  const lsb = v128.and(i32x4.shr_u(abs, 13), i32x4.splat(1));
  const roundUp = i32x4.shr_u(
    i32x4.add(i32x4.add(v128.and(abs, i32x4.splat(0x1fff)), i32x4.splat(0x0fff)), lsb),
    13,
  );
  const normal = i32x4.add(i32x4.shr_u(i32x4.sub(abs, i32x4.splat(0x38000000)), 13), roundUp);
  const sub = i32x4.trunc_sat_f32x4_u(f32x4.nearest(f32x4.mul(abs, f32x4.splat(16777216.0))));
  const nan = v128.or(i32x4.splat(0x7e00), i32x4.shr_u(v128.and(abs, i32x4.splat(0x7fffff)), 13));
  let h = v128.bitselect(sub, normal, i32x4.lt_s(abs, i32x4.splat(0x38800000)));
  h = v128.bitselect(i32x4.splat(0x7c00), h, i32x4.ge_s(abs, i32x4.splat(0x47800000)));
  h = v128.bitselect(nan, h, i32x4.gt_s(abs, i32x4.splat(0x7f800000)));
  return v128.or(h, sign);
}

// @ts-ignore: decorator
@inline
function f16Bits(u: u32): u32 {
  const sign = (u >>> 16) & 0x8000;
  const abs = u & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7e00 | ((abs & 0x7fffff) >>> 13);
  if (abs >= 0x47800000) return sign | 0x7c00;
  if (abs < 0x38800000) {
    return sign | <u32>(<i32>nearest<f32>(reinterpret<f32>(abs) * <f32>16777216.0));
  }
  return sign | (((abs - 0x38000000) >>> 13) + (((abs & 0x1fff) + 0x0fff + ((abs >>> 13) & 1)) >>> 13));
}

/** Four f32 values of elements i..i+3 of a tensor stored as `dtype` at `ptr`. */
// @ts-ignore: decorator
@inline
function load4(ptr: usize, dtype: i32, i: usize): v128 {
  if (dtype == BF16) return i32x4.shl(v128.load16x4_u(ptr + (i << 1)), 16);
  if (dtype == F16) return f16ToF32x4(v128.load16x4_u(ptr + (i << 1)));
  return v128.load(ptr + (i << 2));
}

// @ts-ignore: decorator
@inline
function load1(ptr: usize, dtype: i32, i: usize): f32 {
  if (dtype == BF16) return reinterpret<f32>(<u32>load<u16>(ptr + (i << 1)) << 16);
  if (dtype == F16) return f16ToF32(<u32>load<u16>(ptr + (i << 1)));
  return load<f32>(ptr + (i << 2));
}

// @ts-ignore: decorator
@inline
function store4(ptr: usize, dtype: i32, i: usize, v: v128): void {
  if (dtype == BF16) store16x4(ptr, i, bf16Bits4(v));
  else if (dtype == F16) store16x4(ptr, i, f16Bits4(v));
  else v128.store(ptr + (i << 2), v);
}

// @ts-ignore: decorator
@inline
function store1(ptr: usize, dtype: i32, i: usize, x: f32): void {
  if (dtype == BF16) store<u16>(ptr + (i << 1), <u16>bf16Bits(reinterpret<u32>(x)));
  else if (dtype == F16) store<u16>(ptr + (i << 1), <u16>f16Bits(reinterpret<u32>(x)));
  else store<f32>(ptr + (i << 2), x);
}

/**
 * Elements 0..3 (`bf16Low`) or 4..7 (`bf16High`) of eight bf16 values `v` as f32 lanes: each 16-bit
 * value shuffled into the high half of its lane, zeros (`zero`) below it.
 */
// @ts-ignore: decorator
@inline
function bf16Low(v: v128, zero: v128): v128 {
  return v128.shuffle<i16>(zero, v, 0, 8, 1, 9, 2, 10, 3, 11);
}

// @ts-ignore: decorator
@inline
function bf16High(v: v128, zero: v128): v128 {
  return v128.shuffle<i16>(zero, v, 4, 12, 5, 13, 6, 14, 7, 15);
}

/** Stores 16-bit values (the low halves of the lanes, each at most 0xffff) of elements i..i+3 (`store16x4`) or i..i+7. */
// @ts-ignore: decorator
@inline
function store16x4(ptr: usize, i: usize, h: v128): void {
  v128.store64_lane(ptr + (i << 1), i16x8.narrow_i32x4_u(h, h), 0);
}

// @ts-ignore: decorator
@inline
function store16x8(ptr: usize, i: usize, low: v128, high: v128): void {
  v128.store(ptr + (i << 1), i16x8.narrow_i32x4_u(low, high));
}

/** dst[i] = f32 of element i of `src` (stored as `dtype`), i in [0, n). */
export function decode(src: usize, dtype: i32, dst: usize, n: i32): void {
  const whole = <usize>(n & ~3);
  for (let i: usize = 0; i < whole; i += 4) v128.store(dst + (i << 2), load4(src, dtype, i));
  for (let i = whole; i < <usize>n; i++) store<f32>(dst + (i << 2), load1(src, dtype, i));
}

/** Element i of `dst` (as `dtype`) = src[i] rounded once, i in [0, n). */
export function encode(src: usize, dst: usize, dtype: i32, n: i32): void {
  const whole = <usize>(n & ~3);
  for (let i: usize = 0; i < whole; i += 4) store4(dst, dtype, i, v128.load(src + (i << 2)));
  for (let i = whole; i < <usize>n; i++) store1(dst, dtype, i, load<f32>(src + (i << 2)));
}

/**
 * How many of the n values at `src` (as `dtype`) are Inf or NaN (exponent all ones): dtype.ts
 * countNonFinite.
 */
export function countNonFinite(src: usize, dtype: i32, n: i32): i32 {
  let count = 0;
  if (dtype == F32) {
    const exp = i32x4.splat(0x7f800000);
    const whole = <usize>(n & ~3);
    for (let i: usize = 0; i < whole; i += 4) {
      const v = v128.load(src + (i << 2));
      count += <i32>popcnt(i32x4.bitmask(i32x4.eq(v128.and(v, exp), exp)));
    }
    for (let i = whole; i < <usize>n; i++) if ((load<u32>(src + (i << 2)) & 0x7f800000) == 0x7f800000) count++;
    return count;
  }
  const mask: u32 = dtype == BF16 ? 0x7f80 : 0x7c00;
  const exp = i16x8.splat(<i16>mask);
  const whole = <usize>(n & ~7);
  for (let i: usize = 0; i < whole; i += 8) {
    const v = v128.load(src + (i << 1));
    count += <i32>popcnt(i16x8.bitmask(i16x8.eq(v128.and(v, exp), exp)));
  }
  for (let i = whole; i < <usize>n; i++) if ((<u32>load<u16>(src + (i << 1)) & mask) == mask) count++;
  return count;
}

/** Values of `src` (as `srcDtype`) rounded to `workDtype` and widened back: the engine's roundTo. */
export function roundTo(src: usize, srcDtype: i32, dst: usize, workDtype: i32, n: i32): void {
  const whole = <usize>(n & ~3);
  for (let i: usize = 0; i < whole; i += 4) {
    const v = load4(src, srcDtype, i);
    let r = v;
    if (workDtype == BF16) r = i32x4.shl(bf16Bits4(v), 16);
    else if (workDtype == F16) r = f16ToF32x4(f16Bits4(v));
    v128.store(dst + (i << 2), r);
  }
  for (let i = whole; i < <usize>n; i++) {
    const x = load1(src, srcDtype, i);
    let r = x;
    if (workDtype == BF16) r = reinterpret<f32>(bf16Bits(reinterpret<u32>(x)) << 16);
    else if (workDtype == F16) r = f16ToF32(f16Bits(reinterpret<u32>(x)));
    store<f32>(dst + (i << 2), r);
  }
}

// ---------------------------------------------------------------------------------------------
// Task vectors (generalized-task-arithmetic.ts)

/** dst[i] = fround(x[i] - base[i]): a model's task vector for elements [0, n). */
export function delta(x: usize, xDtype: i32, base: usize, baseDtype: i32, dst: usize, n: i32): void {
  const whole = <usize>(n & ~3);
  for (let i: usize = 0; i < whole; i += 4) {
    v128.store(dst + (i << 2), f32x4.sub(load4(x, xDtype, i), load4(base, baseDtype, i)));
  }
  for (let i = whole; i < <usize>n; i++) {
    store<f32>(dst + (i << 2), load1(x, xDtype, i) - load1(base, baseDtype, i));
  }
}

// A model table entry (12 bytes): pointer, dtype (-1: f32 task-vector values, else the model's
// stored tensor, from which x - base is taken), weight (f32).
const ENTRY_BYTES: usize = 12;
const DELTA_VALUES: i32 = -1;

/**
 * Steps 3 to 7 of generalized-task-arithmetic.ts without sign consensus (mixWithoutConsensus):
 * out = base + finish(sum_m fround(delta_m * w_m)), summed in model order from the first, then
 * divided by `divisor` when `divide`, scaled by `lambda` when `scale`, and encoded as `outDtype`.
 */
export function mixSum(
  table: usize,
  models: i32,
  base: usize,
  baseDtype: i32,
  out: usize,
  outDtype: i32,
  n: i32,
  divisor: f32,
  divide: i32,
  lambda: f32,
  scale: i32,
): void {
  const whole = <usize>(n & ~3);
  const divisor4 = f32x4.splat(divisor);
  const lambda4 = f32x4.splat(lambda);
  for (let i: usize = 0; i < whole; i += 4) {
    const b = load4(base, baseDtype, i);
    let acc = f32x4.splat(0);
    for (let m = 0; m < models; m++) {
      const entry = table + <usize>m * ENTRY_BYTES;
      const ptr = <usize>load<u32>(entry);
      const dtype = load<i32>(entry, 4);
      const w = f32x4.splat(load<f32>(entry, 8));
      const d = dtype == DELTA_VALUES ? v128.load(ptr + (i << 2)) : f32x4.sub(load4(ptr, dtype, i), b);
      const term = f32x4.mul(d, w);
      acc = m == 0 ? term : f32x4.add(acc, term);
    }
    if (divide) acc = f32x4.div(acc, divisor4);
    if (scale) acc = f32x4.mul(acc, lambda4);
    store4(out, outDtype, i, f32x4.add(b, acc));
  }
  for (let i = whole; i < <usize>n; i++) {
    const b = load1(base, baseDtype, i);
    let acc: f32 = 0;
    for (let m = 0; m < models; m++) {
      const entry = table + <usize>m * ENTRY_BYTES;
      const ptr = <usize>load<u32>(entry);
      const dtype = load<i32>(entry, 4);
      const w = load<f32>(entry, 8);
      const d = dtype == DELTA_VALUES ? load<f32>(ptr + (i << 2)) : load1(ptr, dtype, i) - b;
      const term = d * w;
      acc = m == 0 ? term : acc + term;
    }
    if (divide) acc = acc / divisor;
    if (scale) acc = acc * lambda;
    store1(out, outDtype, i, b + acc);
  }
}

/**
 * Steps 3 to 7 with sign consensus (mixWithConsensus), every model's (sparsified) task vector given
 * as f32 values (table entries with dtype -1). `bySum`: TIES' sum of weighted deltas elects the
 * sign; otherwise a count of signs. The majority is +1 where the vote is >= 0 (a NaN vote: -1);
 * a delta is kept iff it is nonzero and of the majority's sign; the divisor is the sum of the
 * kept weights, 1 where it is 0.
 */
export function mixConsensus(
  table: usize,
  models: i32,
  bySum: i32,
  base: usize,
  baseDtype: i32,
  out: usize,
  outDtype: i32,
  n: i32,
  normalize: i32,
  lambda: f32,
  scale: i32,
): void {
  const whole = <usize>(n & ~3);
  const zero = f32x4.splat(0);
  const one = f32x4.splat(1);
  const minusOne = f32x4.splat(-1);
  const lambda4 = f32x4.splat(lambda);
  for (let i: usize = 0; i < whole; i += 4) {
    let vote = zero;
    if (models > 1) {
      for (let m = 0; m < models; m++) {
        const entry = table + <usize>m * ENTRY_BYTES;
        const d = f32x4.mul(v128.load(<usize>load<u32>(entry) + (i << 2)), f32x4.splat(load<f32>(entry, 8)));
        // Math.sign: +1, -1, or the value itself (±0, NaN).
        const term = bySum
          ? d
          : v128.bitselect(one, v128.bitselect(minusOne, d, f32x4.lt(d, zero)), f32x4.gt(d, zero));
        vote = m == 0 ? term : f32x4.add(vote, term);
      }
    }
    const positive = f32x4.ge(vote, zero);
    let mixed = zero;
    let divisor = zero;
    for (let m = 0; m < models; m++) {
      const entry = table + <usize>m * ENTRY_BYTES;
      const w = f32x4.splat(load<f32>(entry, 8));
      const d = f32x4.mul(v128.load(<usize>load<u32>(entry) + (i << 2)), w);
      // One model votes alone: kept exactly where it is a nonzero number.
      const kept =
        models == 1
          ? v128.or(f32x4.gt(d, zero), f32x4.lt(d, zero))
          : v128.bitselect(f32x4.gt(d, zero), f32x4.lt(d, zero), positive);
      const keep = v128.and(kept, one);
      const term = f32x4.mul(d, keep);
      const weight = f32x4.mul(w, keep);
      mixed = m == 0 ? term : f32x4.add(mixed, term);
      divisor = m == 0 ? weight : f32x4.add(divisor, weight);
    }
    if (normalize) mixed = f32x4.div(mixed, f32x4.add(divisor, v128.and(f32x4.eq(divisor, zero), one)));
    if (scale) mixed = f32x4.mul(mixed, lambda4);
    store4(out, outDtype, i, f32x4.add(load4(base, baseDtype, i), mixed));
  }
  for (let i = whole; i < <usize>n; i++) {
    let vote: f32 = 0;
    if (models > 1) {
      for (let m = 0; m < models; m++) {
        const entry = table + <usize>m * ENTRY_BYTES;
        const d = load<f32>(<usize>load<u32>(entry) + (i << 2)) * load<f32>(entry, 8);
        const term: f32 = bySum ? d : d > 0 ? 1 : d < 0 ? -1 : d;
        vote = m == 0 ? term : vote + term;
      }
    }
    const positive = vote >= 0;
    let mixed: f32 = 0;
    let divisor: f32 = 0;
    for (let m = 0; m < models; m++) {
      const entry = table + <usize>m * ENTRY_BYTES;
      const w = load<f32>(entry, 8);
      const d = load<f32>(<usize>load<u32>(entry) + (i << 2)) * w;
      const kept = models == 1 ? d > 0 || d < 0 : positive ? d > 0 : d < 0;
      const keep: f32 = kept ? 1 : 0;
      const term = d * keep;
      const weight = w * keep;
      mixed = m == 0 ? term : mixed + term;
      divisor = m == 0 ? weight : divisor + weight;
    }
    if (normalize) mixed = mixed / (divisor + (divisor == 0 ? <f32>1 : <f32>0));
    if (scale) mixed = mixed * lambda;
    store1(out, outDtype, i, load1(base, baseDtype, i) + mixed);
  }
}

// ---------------------------------------------------------------------------------------------
// linear.ts: out = (sum_m fround(w_m * x_m)) [/ divisor]

/** Model table entries as above (dtype is the stored dtype of x_m); sums in model order. */
export function linear(table: usize, models: i32, out: usize, outDtype: i32, n: i32, divisor: f32, normalize: i32): void {
  const whole = <usize>(n & ~3);
  const divisor4 = f32x4.splat(divisor);
  for (let i: usize = 0; i < whole; i += 4) {
    let acc = f32x4.splat(0);
    for (let m = 0; m < models; m++) {
      const entry = table + <usize>m * ENTRY_BYTES;
      const term = f32x4.mul(f32x4.splat(load<f32>(entry, 8)), load4(<usize>load<u32>(entry), load<i32>(entry, 4), i));
      acc = m == 0 ? term : f32x4.add(acc, term);
    }
    if (normalize) acc = f32x4.div(acc, divisor4);
    store4(out, outDtype, i, acc);
  }
  for (let i = whole; i < <usize>n; i++) {
    let acc: f32 = 0;
    for (let m = 0; m < models; m++) {
      const entry = table + <usize>m * ENTRY_BYTES;
      const term = load<f32>(entry, 8) * load1(<usize>load<u32>(entry), load<i32>(entry, 4), i);
      acc = m == 0 ? term : acc + term;
    }
    if (normalize) acc = acc / divisor;
    store1(out, outDtype, i, acc);
  }
}

/** slerp's and model_stock's output: out = fround(s0 * a) + fround(s1 * b), a and b f32 values. */
export function blend(a: usize, b: usize, s0: f32, s1: f32, out: usize, outDtype: i32, n: i32): void {
  const whole = <usize>(n & ~3);
  const s04 = f32x4.splat(s0);
  const s14 = f32x4.splat(s1);
  for (let i: usize = 0; i < whole; i += 4) {
    const v = f32x4.add(f32x4.mul(s04, v128.load(a + (i << 2))), f32x4.mul(s14, v128.load(b + (i << 2))));
    store4(out, outDtype, i, v);
  }
  for (let i = whole; i < <usize>n; i++) {
    store1(out, outDtype, i, s0 * load<f32>(a + (i << 2)) + s1 * load<f32>(b + (i << 2)));
  }
}

// ---------------------------------------------------------------------------------------------
// TIES / breadcrumbs magnitude selection (rank-select.ts MagnitudeRangeSelector)

// @ts-ignore: decorator
@inline
function orderKey(bits: u32, flip: u32): u32 {
  const abs = bits & 0x7fffffff;
  return (abs > 0x7f800000 ? 0x7fc00000 : abs) ^ flip;
}

/** counts[index]++ (u32 counts). */
// @ts-ignore: decorator
@inline
function bump(counts: usize, index: usize): void {
  const p = counts + (index << 2);
  store<u32>(p, load<u32>(p) + 1);
}

/**
 * The low-bit count of `key` in a cut's window when its bucket (the high 16 bits) lies in
 * [start, start + buckets): the window holds 65536 counts per bucket.
 */
// @ts-ignore: decorator
@inline
function countInWindow(key: u32, window: usize, start: u32, buckets: u32): void {
  const offset = (key >>> 16) - start;
  if (offset < buckets) bump(window, <usize>((offset << 16) | (key & 0xffff)));
}

/**
 * Pass 0 after the sample: the histogram of the high 16 bits of the order keys of the f32 values
 * at `values`, plus the low 16 bits of keys whose bucket lies in a cut's window (bucket - start
 * below `buckets`; two windows, either may be empty).
 */
export function countWindowed(
  values: usize,
  n: i32,
  flip: u32,
  high: usize,
  window0: usize,
  start0: u32,
  buckets0: u32,
  window1: usize,
  start1: u32,
  buckets1: u32,
): void {
  for (let i: usize = 0; i < <usize>n; i++) {
    const key = orderKey(load<u32>(values + (i << 2)), flip);
    bump(high, <usize>(key >>> 16));
    countInWindow(key, window0, start0, buckets0);
    countInWindow(key, window1, start1, buckets1);
  }
}

/** Pass 0 while sampling: the high histogram, and every key kept in `sample`. */
export function countSampled(values: usize, n: i32, flip: u32, high: usize, sample: usize): void {
  for (let i: usize = 0; i < <usize>n; i++) {
    const key = orderKey(load<u32>(values + (i << 2)), flip);
    bump(high, <usize>(key >>> 16));
    store<u32>(sample + (i << 2), key);
  }
}

/** Pass 1: low-bit histograms within the buckets holding open cuts (-1: none). */
export function countLow(values: usize, n: i32, flip: u32, low0: usize, bucket0: i32, low1: usize, bucket1: i32): void {
  for (let i: usize = 0; i < <usize>n; i++) {
    const key = orderKey(load<u32>(values + (i << 2)), flip);
    const bucket = <i32>(key >>> 16);
    if (bucket == bucket0) bump(low0, <usize>(key & 0xffff));
    if (bucket == bucket1) bump(low1, <usize>(key & 0xffff));
  }
}

// Running tie counts of the two cuts while a mask runs, kept between calls at `state` (two f64).
let upToTies: f64 = 0;
let belowTies: f64 = 0;

// @ts-ignore: decorator
@inline
function loadTies(state: usize): void {
  upToTies = load<f64>(state);
  belowTies = load<f64>(state, 8);
}

// @ts-ignore: decorator
@inline
function saveTies(state: usize): void {
  store<f64>(state, upToTies);
  store<f64>(state, belowTies, 8);
}

/** maskRange's decision for one value: 1 kept, 0 dropped (the tie counts advance). */
// @ts-ignore: decorator
@inline
function keep1(bits: u32, flip: u32, upToKey: u32, upToTaken: f64, hasBelow: i32, belowKey: u32, belowTaken: f64): f32 {
  const k = orderKey(bits, flip);
  let keep: f32 = k < upToKey ? 1 : 0;
  if (k == upToKey && upToTies < upToTaken) {
    upToTies++;
    keep = 1;
  }
  if (hasBelow) {
    let inBelow = k < belowKey;
    if (k == belowKey && belowTies < belowTaken) {
      belowTies++;
      inBelow = true;
    }
    if (inBelow) keep = 0;
  }
  return keep;
}

/** The f32 value at `q` times its keep1. */
// @ts-ignore: decorator
@inline
function maskOne(q: usize, flip: u32, upToKey: u32, upToTaken: f64, hasBelow: i32, belowKey: u32, belowTaken: f64): void {
  store<f32>(q, load<f32>(q) * keep1(load<u32>(q), flip, upToKey, upToTaken, hasBelow, belowKey, belowTaken));
}

/**
 * values[i] *= selected(i) in place for i in [0, n) (torch's x * mask: a dropped NaN or Inf becomes
 * NaN). Selected: key < upToKey, or key == upToKey among the first `upToTiesTaken` such ties
 * counted from `state[0]`; and not (key < belowKey, or a tie at belowKey among the first
 * `belowTiesTaken` from `state[1]`), when `hasBelow`. The tie counts are written back to state.
 */
export function maskRange(
  values: usize,
  n: i32,
  flip: u32,
  upToKey: u32,
  upToTiesTaken: f64,
  hasBelow: i32,
  belowKey: u32,
  belowTiesTaken: f64,
  state: usize,
): void {
  loadTies(state);
  const whole = <usize>(n & ~3);
  const up4 = i32x4.splat(upToKey);
  const below4 = i32x4.splat(belowKey);
  const one = f32x4.splat(1);
  const nanKey = i32x4.splat(0x7fc00000);
  const flip4 = i32x4.splat(flip);
  for (let i: usize = 0; i < whole; i += 4) {
    const p = values + (i << 2);
    const v = v128.load(p);
    const abs = v128.and(v, i32x4.splat(0x7fffffff));
    const key = v128.xor(v128.bitselect(nanKey, abs, i32x4.gt_s(abs, i32x4.splat(0x7f800000))), flip4);
    let tie = i32x4.eq(key, up4);
    if (hasBelow) tie = v128.or(tie, i32x4.eq(key, below4));
    if (v128.any_true(tie)) {
      // A tie at a cut: the lanes in order, counting ties as the reference does.
      for (let j: usize = 0; j < 4; j++) {
        maskOne(p + (j << 2), flip, upToKey, upToTiesTaken, hasBelow, belowKey, belowTiesTaken);
      }
      continue;
    }
    let selected = i32x4.lt_u(key, up4);
    if (hasBelow) selected = v128.andnot(selected, i32x4.lt_u(key, below4));
    v128.store(p, f32x4.mul(v, v128.and(selected, one)));
  }
  for (let i = whole; i < <usize>n; i++) {
    maskOne(values + (i << 2), flip, upToKey, upToTiesTaken, hasBelow, belowKey, belowTiesTaken);
  }
  saveTies(state);
}

// ---------------------------------------------------------------------------------------------
// Philox4x32-10 uniforms (counter-rng.ts fillUniform)

/**
 * dst[j] = uniform of element offset + j for j in [0, n): word 0 of Philox4x32-10 of the counter
 * (index low, model, stream, index high) under the key (seed, nameHash), as (x0 >>> 8) * 2^-24.
 * `offsetHigh` is floor(offset / 2^32); a tile must not cross a multiple of 2^32.
 */
export function uniforms(
  dst: usize,
  n: i32,
  seed: u32,
  nameHash: u32,
  model: u32,
  stream: u32,
  offsetLow: u32,
  offsetHigh: u32,
): void {
  const m0 = i32x4.splat(0xd2511f53);
  const m1 = i32x4.splat(0xcd9e8d57);
  const lanes = i32x4(0, 1, 2, 3);
  const whole = <usize>(n & ~3);
  const scale = f32x4.splat(5.9604644775390625e-8);
  for (let j: usize = 0; j < whole; j += 4) {
    let c0 = i32x4.add(i32x4.splat(offsetLow + <u32>j), lanes);
    let c1 = i32x4.splat(model);
    let c2 = i32x4.splat(stream);
    let c3 = i32x4.splat(offsetHigh);
    let k0 = seed;
    let k1 = nameHash;
    for (let round = 0; round < 10; round++) {
      if (round > 0) {
        k0 += 0x9e3779b9;
        k1 += 0xbb67ae85;
      }
      // 64-bit products of the four lanes, as two pairs; then the high and low words gathered back.
      const p0lo = i64x2.extmul_low_i32x4_u(c0, m0);
      const p0hi = i64x2.extmul_high_i32x4_u(c0, m0);
      const p1lo = i64x2.extmul_low_i32x4_u(c2, m1);
      const p1hi = i64x2.extmul_high_i32x4_u(c2, m1);
      const hi0 = v128.shuffle<i32>(p0lo, p0hi, 1, 3, 5, 7);
      const lo0 = v128.shuffle<i32>(p0lo, p0hi, 0, 2, 4, 6);
      const hi1 = v128.shuffle<i32>(p1lo, p1hi, 1, 3, 5, 7);
      const lo1 = v128.shuffle<i32>(p1lo, p1hi, 0, 2, 4, 6);
      c0 = v128.xor(v128.xor(hi1, c1), i32x4.splat(<i32>k0));
      c1 = lo1;
      c2 = v128.xor(v128.xor(hi0, c3), i32x4.splat(<i32>k1));
      c3 = lo0;
    }
    v128.store(dst + (j << 2), f32x4.mul(f32x4.convert_i32x4_u(i32x4.shr_u(c0, 8)), scale));
  }
  for (let j = whole; j < <usize>n; j++) {
    let c0: u32 = offsetLow + <u32>j;
    let c1 = model;
    let c2 = stream;
    let c3 = offsetHigh;
    let k0 = seed;
    let k1 = nameHash;
    for (let round = 0; round < 10; round++) {
      if (round > 0) {
        k0 += 0x9e3779b9;
        k1 += 0xbb67ae85;
      }
      const p0 = <u64>c0 * 0xd2511f53;
      const p1 = <u64>c2 * 0xcd9e8d57;
      c0 = <u32>(p1 >>> 32) ^ c1 ^ k0;
      c1 = <u32>p1;
      c2 = <u32>(p0 >>> 32) ^ c3 ^ k1;
      c3 = <u32>p0;
    }
    store<f32>(dst + (j << 2), <f32>(c0 >>> 8) * <f32>5.9604644775390625e-8);
  }
}

/** mask[j] = 1 iff uniform[j] < p (p a number) for j in [0, n); values[j] *= mask[j] when values != 0. */
export function bernoulliMask(uniform: usize, n: i32, p: f32, values: usize): void {
  const whole = <usize>(n & ~3);
  const p4 = f32x4.splat(p);
  const one = f32x4.splat(1);
  for (let j: usize = 0; j < whole; j += 4) {
    const keep = v128.and(f32x4.lt(v128.load(uniform + (j << 2)), p4), one);
    v128.store(values + (j << 2), f32x4.mul(v128.load(values + (j << 2)), keep));
  }
  for (let j = whole; j < <usize>n; j++) {
    const keep: f32 = load<f32>(uniform + (j << 2)) < p ? 1 : 0;
    store<f32>(values + (j << 2), load<f32>(values + (j << 2)) * keep);
  }
}

/** histogram[key >>> 16]++ for the n order keys at `keys` (the sample's histogram). */
export function keyHistogram(keys: usize, n: i32, histogram: usize): void {
  for (let i: usize = 0; i < <usize>n; i++) bump(histogram, <usize>(load<u32>(keys + (i << 2)) >>> 16));
}

/** Low-bit counts of the n keys at `keys` whose bucket lies in [start, start + buckets): a replayed sample. */
export function replayKeys(keys: usize, n: i32, window: usize, start: u32, buckets: u32): void {
  for (let i: usize = 0; i < <usize>n; i++) countInWindow(load<u32>(keys + (i << 2)), window, start, buckets);
}

/**
 * mixSum for one model stored as bf16, a bf16 base and a bf16 output (task_arithmetic's common
 * case), eight elements a step: the same operations as mixSum, with the 16-bit lanes widened by a
 * shuffle and narrowed by one saturating pack (every lane is at most 0xffff).
 */
export function mixSumOneBf16(
  x: usize,
  base: usize,
  out: usize,
  n: i32,
  weight: f32,
  divisor: f32,
  divide: i32,
  lambda: f32,
  scale: i32,
): void {
  const whole = <usize>(n & ~7);
  // Constants through page 0, as the TIES kernels below (CONSTANTS) explain.
  const zero = constant(4, i32x4.splat(0));
  const absMask = constant(0, i32x4.splat(0x7fffffff));
  const inf = constant(2, i32x4.splat(0x7f800000));
  const lsb1 = constant(5, i32x4.splat(1));
  const round = constant(6, i32x4.splat(0x7fff));
  const quiet = constant(7, i32x4.splat(0x0040));
  const low16 = constant(8, i32x4.splat(0xffff));
  const w = f32x4.splat(weight);
  const divisor4 = f32x4.splat(divisor);
  const lambda4 = f32x4.splat(lambda);
  for (let i: usize = 0; i < whole; i += 8) {
    const xv = v128.load(x + (i << 1));
    const bv = v128.load(base + (i << 1));
    const bLow = bf16Low(bv, zero);
    const bHigh = bf16High(bv, zero);
    let low = f32x4.mul(f32x4.sub(bf16Low(xv, zero), bLow), w);
    let high = f32x4.mul(f32x4.sub(bf16High(xv, zero), bHigh), w);
    if (divide) {
      low = f32x4.div(low, divisor4);
      high = f32x4.div(high, divisor4);
    }
    if (scale) {
      low = f32x4.mul(low, lambda4);
      high = f32x4.mul(high, lambda4);
    }
    store16x8(
      out,
      i,
      bf16Bits4k(f32x4.add(bLow, low), absMask, inf, lsb1, round, quiet, low16),
      bf16Bits4k(f32x4.add(bHigh, high), absMask, inf, lsb1, round, quiet, low16),
    );
  }
  for (let i = whole; i < <usize>n; i++) {
    const b = load1(base, BF16, i);
    let acc = (load1(x, BF16, i) - b) * weight;
    if (divide) acc = acc / divisor;
    if (scale) acc = acc * lambda;
    store1(out, BF16, i, b + acc);
  }
}

// ---------------------------------------------------------------------------------------------
// slerp's and model_stock's reductions (f32-reduce.ts BlockedSumF32) and outputs (slerp.ts,
// model-stock.ts)
//
// The blocked sum adds each block of REDUCTION_BLOCK consecutive terms sequentially, every
// addition rounded to f32; the blocks themselves are independent, so four whole blocks run at once,
// one block per lane (a 4x4 transpose turns four consecutive terms of each block into four steps).
// These kernels give the level-0 block sums; the caller adds them into the upper levels. A block
// that a call leaves open (its running sum and term count at `state`) is continued by the next call.

const REDUCTION_BLOCK: usize = 256;
const TERM_SQUARES: i32 = 0;
const TERM_PRODUCTS: i32 = 1;
const TERM_UNIT_PRODUCTS: i32 = 2;

/** Terms i..i+3: fround(x*x), fround(x*y), or fround(fround(x/xNorm) * fround(y/yNorm)). */
// @ts-ignore: decorator
@inline
function terms4(mode: i32, x: usize, xDtype: i32, xNorm: v128, y: usize, yDtype: i32, yNorm: v128, i: usize): v128 {
  let a = load4(x, xDtype, i);
  if (mode == TERM_SQUARES) return f32x4.mul(a, a);
  let b = load4(y, yDtype, i);
  if (mode == TERM_UNIT_PRODUCTS) {
    a = f32x4.div(a, xNorm);
    b = f32x4.div(b, yNorm);
  }
  return f32x4.mul(a, b);
}

// @ts-ignore: decorator
@inline
function term1(mode: i32, x: usize, xDtype: i32, xNorm: f32, y: usize, yDtype: i32, yNorm: f32, i: usize): f32 {
  let a = load1(x, xDtype, i);
  if (mode == TERM_SQUARES) return a * a;
  let b = load1(y, yDtype, i);
  if (mode == TERM_UNIT_PRODUCTS) {
    a = a / xNorm;
    b = b / yNorm;
  }
  return a * b;
}

/**
 * Adds the terms of elements [0, n) to the blocked sum whose open block is at `state` (f32 running
 * sum, i32 count): writes the sums of the blocks it closes to `sums` in order, returns how many,
 * and leaves the new open block at `state`.
 */
// @ts-ignore: decorator
@inline
function blockSums(
  mode: i32,
  x: usize,
  xDtype: i32,
  xNorm: f32,
  y: usize,
  yDtype: i32,
  yNorm: f32,
  n: i32,
  state: usize,
  sums: usize,
): i32 {
  const end = <usize>n;
  const xNorm4 = f32x4.splat(xNorm);
  const yNorm4 = f32x4.splat(yNorm);
  let open = load<f32>(state);
  let count = <usize>load<i32>(state, 4);
  let closed: usize = 0;
  let i: usize = 0;
  if (count > 0) {
    while (i < end && count < REDUCTION_BLOCK) {
      open += term1(mode, x, xDtype, xNorm, y, yDtype, yNorm, i);
      i++;
      count++;
    }
    if (count < REDUCTION_BLOCK) {
      store<f32>(state, open);
      store<i32>(state, <i32>count, 4);
      return 0;
    }
    store<f32>(sums, open);
    closed = 1;
    count = 0;
  }
  while (end - i >= 4 * REDUCTION_BLOCK) {
    let acc = f32x4.splat(0);
    for (let j: usize = 0; j < REDUCTION_BLOCK; j += 4) {
      const v0 = terms4(mode, x, xDtype, xNorm4, y, yDtype, yNorm4, i + j);
      const v1 = terms4(mode, x, xDtype, xNorm4, y, yDtype, yNorm4, i + REDUCTION_BLOCK + j);
      const v2 = terms4(mode, x, xDtype, xNorm4, y, yDtype, yNorm4, i + 2 * REDUCTION_BLOCK + j);
      const v3 = terms4(mode, x, xDtype, xNorm4, y, yDtype, yNorm4, i + 3 * REDUCTION_BLOCK + j);
      const lo01 = v128.shuffle<f32>(v0, v1, 0, 4, 1, 5);
      const lo23 = v128.shuffle<f32>(v2, v3, 0, 4, 1, 5);
      const hi01 = v128.shuffle<f32>(v0, v1, 2, 6, 3, 7);
      const hi23 = v128.shuffle<f32>(v2, v3, 2, 6, 3, 7);
      const t0 = v128.shuffle<f32>(lo01, lo23, 0, 1, 4, 5);
      // A block's sum starts from its first term (not 0 + term: that would turn -0 into +0).
      acc = j == 0 ? t0 : f32x4.add(acc, t0);
      acc = f32x4.add(acc, v128.shuffle<f32>(lo01, lo23, 2, 3, 6, 7));
      acc = f32x4.add(acc, v128.shuffle<f32>(hi01, hi23, 0, 1, 4, 5));
      acc = f32x4.add(acc, v128.shuffle<f32>(hi01, hi23, 2, 3, 6, 7));
    }
    v128.store(sums + (closed << 2), acc);
    closed += 4;
    i += 4 * REDUCTION_BLOCK;
  }
  while (end - i >= REDUCTION_BLOCK) {
    let acc = term1(mode, x, xDtype, xNorm, y, yDtype, yNorm, i);
    for (let j: usize = 1; j < REDUCTION_BLOCK; j++) acc += term1(mode, x, xDtype, xNorm, y, yDtype, yNorm, i + j);
    store<f32>(sums + (closed << 2), acc);
    closed++;
    i += REDUCTION_BLOCK;
  }
  if (i < end) {
    open = term1(mode, x, xDtype, xNorm, y, yDtype, yNorm, i);
    count = 1;
    for (i++; i < end; i++, count++) open += term1(mode, x, xDtype, xNorm, y, yDtype, yNorm, i);
  }
  store<f32>(state, open);
  store<i32>(state, <i32>count, 4);
  return <i32>closed;
}

/** Block sums of fround(x[i] * x[i]) (f32-reduce.ts addSquares). */
export function squareBlockSums(x: usize, xDtype: i32, n: i32, state: usize, sums: usize): i32 {
  return blockSums(TERM_SQUARES, x, xDtype, 1, x, xDtype, 1, n, state, sums);
}

/** Block sums of fround(x[i] * y[i]) (f32-reduce.ts addProducts). */
export function productBlockSums(x: usize, xDtype: i32, y: usize, yDtype: i32, n: i32, state: usize, sums: usize): i32 {
  return blockSums(TERM_PRODUCTS, x, xDtype, 1, y, yDtype, 1, n, state, sums);
}

/**
 * Block sums of fround(fround(x[i] / xNorm) * fround(y[i] / yNorm)): slerp's cosine of the unit
 * vectors (a norm of 1 leaves its vector as it is, exactly).
 */
export function unitProductBlockSums(
  x: usize,
  xDtype: i32,
  xNorm: f32,
  y: usize,
  yDtype: i32,
  yNorm: f32,
  n: i32,
  state: usize,
  sums: usize,
): i32 {
  return blockSums(TERM_UNIT_PRODUCTS, x, xDtype, xNorm, y, yDtype, yNorm, n, state, sums);
}

/** slerp's output from the stored values: out = fround(s0 * a) + fround(s1 * b). */
export function blendStored(
  a: usize,
  aDtype: i32,
  b: usize,
  bDtype: i32,
  s0: f32,
  s1: f32,
  out: usize,
  outDtype: i32,
  n: i32,
): void {
  const s04 = f32x4.splat(s0);
  const s14 = f32x4.splat(s1);
  let from: usize = 0;
  if (aDtype == BF16 && bDtype == BF16 && outDtype == BF16) {
    // bf16 throughout, eight elements a step (as mixSumOneBf16): the same operations, lanes widened
    // by a shuffle and narrowed by one pack.
    from = <usize>(n & ~7);
    const zero = i32x4.splat(0);
    for (let i: usize = 0; i < from; i += 8) {
      const av = v128.load(a + (i << 1));
      const bv = v128.load(b + (i << 1));
      const low = f32x4.add(f32x4.mul(s04, bf16Low(av, zero)), f32x4.mul(s14, bf16Low(bv, zero)));
      const high = f32x4.add(f32x4.mul(s04, bf16High(av, zero)), f32x4.mul(s14, bf16High(bv, zero)));
      store16x8(out, i, bf16Bits4(low), bf16Bits4(high));
    }
  }
  const whole = <usize>(n & ~3);
  for (let i: usize = from; i < whole; i += 4) {
    store4(out, outDtype, i, f32x4.add(f32x4.mul(s04, load4(a, aDtype, i)), f32x4.mul(s14, load4(b, bDtype, i))));
  }
  for (let i = whole; i < <usize>n; i++) {
    store1(out, outDtype, i, s0 * load1(a, aDtype, i) + s1 * load1(b, bDtype, i));
  }
}

/**
 * model_stock's output over a model table (pointer, dtype; the weight is unused) of the `count`
 * models other than the base: avg = fround(sum in table order from the first / count),
 * out = fround(t * avg) + fround(baseShare * base).
 */
export function stockBlend(
  table: usize,
  count: i32,
  base: usize,
  baseDtype: i32,
  t: f32,
  baseShare: f32,
  out: usize,
  outDtype: i32,
  n: i32,
): void {
  const whole = <usize>(n & ~3);
  const t4 = f32x4.splat(t);
  const share4 = f32x4.splat(baseShare);
  const count4 = f32x4.splat(<f32>count);
  const first = load<usize>(table);
  const firstDtype = load<i32>(table, 4);
  for (let i: usize = 0; i < whole; i += 4) {
    let sum = load4(first, firstDtype, i);
    for (let k = 1; k < count; k++) {
      const entry = table + <usize>k * ENTRY_BYTES;
      sum = f32x4.add(sum, load4(load<usize>(entry), load<i32>(entry, 4), i));
    }
    const avg = f32x4.div(sum, count4);
    store4(out, outDtype, i, f32x4.add(f32x4.mul(t4, avg), f32x4.mul(share4, load4(base, baseDtype, i))));
  }
  for (let i = whole; i < <usize>n; i++) {
    let sum = load1(first, firstDtype, i);
    for (let k = 1; k < count; k++) {
      const entry = table + <usize>k * ENTRY_BYTES;
      sum += load1(load<usize>(entry), load<i32>(entry, 4), i);
    }
    store1(out, outDtype, i, t * (sum / <f32>count) + baseShare * load1(base, baseDtype, i));
  }
}

// ---------------------------------------------------------------------------------------------
// DELLA's keep probabilities (sparsify.ts dellaChunkProbabilities, rank-select.ts
// fiberRanksFromBits): each fiber along dimension 1 ranked by magnitude, stably ascending (NaN
// above +Inf, equal magnitudes in index order), by an LSD radix sort of (key << 32 | index) on the
// key's four bytes (stable, so the index order of equal keys stays), skipping bytes that all keys share.

const RADIX_BUCKETS: usize = 256;
const RADIX_HISTOGRAM_BYTES: i32 = 4 * 256 * 4;

/** Bytes of dellaProbabilities' scratch for fibers of `length` elements. */
export function dellaScratchBytes(length: i32): i32 {
  return length * 16 + RADIX_HISTOGRAM_BYTES;
}

/**
 * probabilities[j] = low + fround(fround(fround(rank_j / rankSpan) * 2) * epsilon) for the n values
 * at `values` (whole slabs of `length` fibers of `inner` elements each, fiber element j at stride
 * `inner`), rank_j the 0-based position of |values[j]| in its fiber's stable ascending order.
 */
export function dellaProbabilities(
  values: usize,
  n: i32,
  length: i32,
  inner: i32,
  low: f32,
  epsilon: f32,
  rankSpan: f32,
  probabilities: usize,
  scratch: usize,
): void {
  const count = <usize>length;
  const stride = <usize>inner;
  const slab = count * stride;
  if (slab == 0) return;
  const keysA = scratch;
  const keysB = scratch + (count << 3);
  const histogram = scratch + (count << 4);
  for (let slabStart: usize = 0; slabStart < <usize>n; slabStart += slab) {
    for (let r: usize = 0; r < stride; r++) {
      const offset = slabStart + r;
      memory.fill(histogram, 0, <usize>RADIX_HISTOGRAM_BYTES);
      for (let j: usize = 0; j < count; j++) {
        const abs = load<u32>(values + ((offset + j * stride) << 2)) & 0x7fffffff;
        const key: u32 = abs > 0x7f800000 ? 0x7fc00000 : abs;
        store<u64>(keysA + (j << 3), (<u64>key << 32) | <u64>j);
        for (let b: usize = 0; b < 4; b++) {
          const h = histogram + ((b * RADIX_BUCKETS + ((key >>> (<u32>b << 3)) & 0xff)) << 2);
          store<u32>(h, load<u32>(h) + 1);
        }
      }
      let from = keysA;
      let to = keysB;
      for (let b: usize = 0; b < 4; b++) {
        const counts = histogram + ((b * RADIX_BUCKETS) << 2);
        // Every key has the same byte here: the order is already sorted on it.
        let trivial = false;
        let total: u32 = 0;
        for (let d: usize = 0; d < RADIX_BUCKETS; d++) {
          const c = load<u32>(counts + (d << 2));
          if (c == <u32>count) trivial = true;
          store<u32>(counts + (d << 2), total);
          total += c;
        }
        if (trivial) continue;
        const shift = <u64>(32 + (b << 3));
        for (let j: usize = 0; j < count; j++) {
          const entry = load<u64>(from + (j << 3));
          const h = counts + ((<usize>((entry >>> shift) & 0xff)) << 2);
          const position = load<u32>(h);
          store<u32>(h, position + 1);
          store<u64>(to + (<usize>position << 3), entry);
        }
        const swap = from;
        from = to;
        to = swap;
      }
      for (let position: usize = 0; position < count; position++) {
        const j = <usize>(<u32>load<u64>(from + (position << 3)));
        const norm = <f32>position / rankSpan;
        store<f32>(probabilities + ((offset + j * stride) << 2), low + norm * 2 * epsilon);
      }
    }
  }
}

/** values[j] *= +(uniform[j] < probabilities[j]) for j in [0, n): DELLA's mask (sparsify.ts maskInPlace). */
export function varyingBernoulliMask(uniform: usize, n: i32, probabilities: usize, values: usize): void {
  const whole = <usize>(n & ~3);
  const one = f32x4.splat(1);
  for (let j: usize = 0; j < whole; j += 4) {
    const keep = v128.and(f32x4.lt(v128.load(uniform + (j << 2)), v128.load(probabilities + (j << 2))), one);
    v128.store(values + (j << 2), f32x4.mul(v128.load(values + (j << 2)), keep));
  }
  for (let j = whole; j < <usize>n; j++) {
    const keep: f32 = load<f32>(uniform + (j << 2)) < load<f32>(probabilities + (j << 2)) ? 1 : 0;
    store<f32>(values + (j << 2), load<f32>(values + (j << 2)) * keep);
  }
}

// ---------------------------------------------------------------------------------------------
// TIES / breadcrumbs, fused passes (rank-select.ts MagnitudeRangeSelector, the same decisions)

// V8 builds a v128.const anew at each use inside a loop (a few instructions each), which costs the
// loops below as much as their arithmetic. So their constants are stored once per call in page 0
// (which the arena never hands out, src/kernels/wasm.ts) and loaded into locals before the loop:
// Binaryen cannot fold a load back into a constant.
const CONSTANTS: usize = 1024;

// @ts-ignore: decorator
@inline
function constant(slot: usize, value: v128): v128 {
  v128.store(CONSTANTS + (slot << 4), value);
  return v128.load(CONSTANTS + (slot << 4));
}

/** Order keys of four f32 values (orderKey, four lanes); the masks as loaded by `constant`. */
// @ts-ignore: decorator
@inline
function orderKey4(v: v128, flip4: v128, absMask: v128, nanKey: v128, inf: v128): v128 {
  const abs = v128.and(v, absMask);
  return v128.xor(v128.bitselect(nanKey, abs, i32x4.gt_s(abs, inf)), flip4);
}

/** bf16Bits4 with its constants in locals. */
// @ts-ignore: decorator
@inline
function bf16Bits4k(u: v128, absMask: v128, inf: v128, one: v128, round: v128, quiet: v128, low16: v128): v128 {
  const isNaN = i32x4.gt_s(v128.and(u, absMask), inf);
  const lsb = v128.and(i32x4.shr_u(u, 16), one);
  const rounded = i32x4.shr_u(i32x4.add(i32x4.add(u, round), lsb), 16);
  return v128.and(v128.bitselect(v128.or(i32x4.shr_u(u, 16), quiet), rounded, isNaN), low16);
}

/**
 * countWindowed with the window counts deferred: keys inside either window are gathered in order in
 * `scratch` (room for `capacity` keys, a multiple of 4) and counted when it fills and at the end, so
 * the main loop has no data-dependent branch and scatters only into the high histogram.
 */
export function countWindowedGathered(
  values: usize,
  n: i32,
  flip: u32,
  high: usize,
  window0: usize,
  start0: u32,
  buckets0: u32,
  window1: usize,
  start1: u32,
  buckets1: u32,
  scratch: usize,
  capacity: i32,
): void {
  const whole = <usize>(n & ~3);
  const absMask = constant(0, i32x4.splat(0x7fffffff));
  const nanKey = constant(1, i32x4.splat(0x7fc00000));
  const inf = constant(2, i32x4.splat(0x7f800000));
  const flip4 = i32x4.splat(flip);
  const s0 = i32x4.splat(start0);
  const b0 = i32x4.splat(buckets0);
  const s1 = i32x4.splat(start1);
  const b1 = i32x4.splat(buckets1);
  let gathered: usize = 0;
  for (let i: usize = 0; i < whole; i += 4) {
    const key = orderKey4(v128.load(values + (i << 2)), flip4, absMask, nanKey, inf);
    gathered = countGathered4(key, high, s0, b0, s1, b1, scratch, gathered);
    gathered = replayWhenFull(scratch, gathered, capacity - 4, window0, start0, buckets0, window1, start1, buckets1);
  }
  replayKeysTwo(scratch, <i32>gathered, window0, start0, buckets0, window1, start1, buckets1);
  if (whole < <usize>n)
    countWindowed(values + (whole << 2), n - <i32>whole, flip, high, window0, start0, buckets0, window1, start1, buckets1);
}

/**
 * countWindowedGathered on the task vector x[i] - base[i] of [0, n), computed here (never stored):
 * TIES' pass 0 in one pass over the chunk's inputs.
 */
export function countWindowedDelta(
  x: usize,
  xDtype: i32,
  base: usize,
  baseDtype: i32,
  n: i32,
  flip: u32,
  high: usize,
  window0: usize,
  start0: u32,
  buckets0: u32,
  window1: usize,
  start1: u32,
  buckets1: u32,
  scratch: usize,
  capacity: i32,
): void {
  const absMask = constant(0, i32x4.splat(0x7fffffff));
  const nanKey = constant(1, i32x4.splat(0x7fc00000));
  const inf = constant(2, i32x4.splat(0x7f800000));
  const zero = constant(4, i32x4.splat(0));
  const flip4 = i32x4.splat(flip);
  const s0 = i32x4.splat(start0);
  const b0 = i32x4.splat(buckets0);
  const s1 = i32x4.splat(start1);
  const b1 = i32x4.splat(buckets1);
  let gathered: usize = 0;
  let i: usize = 0;
  if (xDtype == BF16 && baseDtype == BF16) {
    // Eight elements a step, the 16-bit lanes widened by a shuffle (tiesOneBf16).
    const whole8 = <usize>(n & ~7);
    for (; i < whole8; i += 8) {
      const xv = v128.load(x + (i << 1));
      const bv = v128.load(base + (i << 1));
      const dLow = f32x4.sub(bf16Low(xv, zero), bf16Low(bv, zero));
      const dHigh = f32x4.sub(bf16High(xv, zero), bf16High(bv, zero));
      gathered = countGathered4(orderKey4(dLow, flip4, absMask, nanKey, inf), high, s0, b0, s1, b1, scratch, gathered);
      gathered = countGathered4(orderKey4(dHigh, flip4, absMask, nanKey, inf), high, s0, b0, s1, b1, scratch, gathered);
      gathered = replayWhenFull(scratch, gathered, capacity - 8, window0, start0, buckets0, window1, start1, buckets1);
    }
  }
  const whole = <usize>(n & ~3);
  for (; i < whole; i += 4) {
    const d = f32x4.sub(load4(x, xDtype, i), load4(base, baseDtype, i));
    gathered = countGathered4(orderKey4(d, flip4, absMask, nanKey, inf), high, s0, b0, s1, b1, scratch, gathered);
    gathered = replayWhenFull(scratch, gathered, capacity - 4, window0, start0, buckets0, window1, start1, buckets1);
  }
  for (; i < <usize>n; i++) {
    const key = orderKey(reinterpret<u32>(load1(x, xDtype, i) - load1(base, baseDtype, i)), flip);
    bump(high, <usize>(key >>> 16));
    store<u32>(scratch + (gathered << 2), key);
    gathered++;
  }
  replayKeysTwo(scratch, <i32>gathered, window0, start0, buckets0, window1, start1, buckets1);
}

/**
 * The high-histogram counts of four order keys, and the keys of the lanes inside either window
 * appended in order at scratch[gathered]; returns the new count. The windows hold about 1% of the
 * keys, so most vectors have no lane in one and the branch is predicted.
 */
// @ts-ignore: decorator
@inline
function countGathered4(
  key: v128,
  high: usize,
  s0: v128,
  b0: v128,
  s1: v128,
  b1: v128,
  scratch: usize,
  gathered: usize,
): usize {
  const bucket = bumpHigh4(high, key);
  const inWindow = v128.or(i32x4.lt_u(i32x4.sub(bucket, s0), b0), i32x4.lt_u(i32x4.sub(bucket, s1), b1));
  if (v128.any_true(inWindow)) {
    // Every lane written, the cursor advanced past the ones inside a window.
    store<u32>(scratch + (gathered << 2), i32x4.extract_lane(key, 0));
    gathered += <usize>(i32x4.extract_lane(inWindow, 0) & 1);
    store<u32>(scratch + (gathered << 2), i32x4.extract_lane(key, 1));
    gathered += <usize>(i32x4.extract_lane(inWindow, 1) & 1);
    store<u32>(scratch + (gathered << 2), i32x4.extract_lane(key, 2));
    gathered += <usize>(i32x4.extract_lane(inWindow, 2) & 1);
    store<u32>(scratch + (gathered << 2), i32x4.extract_lane(key, 3));
    gathered += <usize>(i32x4.extract_lane(inWindow, 3) & 1);
  }
  return gathered;
}

/**
 * Counts the `gathered` keys at `scratch` into both windows once more than `limit` are there (the
 * next step could overflow the scratch); returns how many stay gathered.
 */
// @ts-ignore: decorator
@inline
function replayWhenFull(
  scratch: usize,
  gathered: usize,
  limit: i32,
  window0: usize,
  start0: u32,
  buckets0: u32,
  window1: usize,
  start1: u32,
  buckets1: u32,
): usize {
  if (gathered <= <usize>limit) return gathered;
  replayKeysTwo(scratch, <i32>gathered, window0, start0, buckets0, window1, start1, buckets1);
  return 0;
}

/** The high-histogram counts of four order keys; returns their buckets. */
// @ts-ignore: decorator
@inline
function bumpHigh4(high: usize, key: v128): v128 {
  const bucket = i32x4.shr_u(key, 16);
  bump(high, <usize>i32x4.extract_lane(bucket, 0));
  bump(high, <usize>i32x4.extract_lane(bucket, 1));
  bump(high, <usize>i32x4.extract_lane(bucket, 2));
  bump(high, <usize>i32x4.extract_lane(bucket, 3));
  return bucket;
}

/** replayKeys into both windows. */
// @ts-ignore: decorator
@inline
function replayKeysTwo(
  keys: usize,
  n: i32,
  window0: usize,
  start0: u32,
  buckets0: u32,
  window1: usize,
  start1: u32,
  buckets1: u32,
): void {
  for (let i: usize = 0; i < <usize>n; i++) {
    const key = load<u32>(keys + (i << 2));
    countInWindow(key, window0, start0, buckets0);
    countInWindow(key, window1, start1, buckets1);
  }
}

/** countSampled, keys four lanes at a time. */
export function countSampled4(values: usize, n: i32, flip: u32, high: usize, sample: usize): void {
  const whole = <usize>(n & ~3);
  const absMask = constant(0, i32x4.splat(0x7fffffff));
  const nanKey = constant(1, i32x4.splat(0x7fc00000));
  const inf = constant(2, i32x4.splat(0x7f800000));
  const flip4 = i32x4.splat(flip);
  for (let i: usize = 0; i < whole; i += 4) {
    const key = orderKey4(v128.load(values + (i << 2)), flip4, absMask, nanKey, inf);
    v128.store(sample + (i << 2), key);
    bumpHigh4(high, key);
  }
  if (whole < <usize>n) countSampled(values + (whole << 2), n - <i32>whole, flip, high, sample + (whole << 2));
}

/**
 * Lanes of `key` in a cut's prefix: key < cutKey, or a tie at cutKey while fewer than `taken` ties
 * were taken (lowest index first, so lane order). A vector whose ties all fit is taken whole; the
 * one where the taken ties run out goes lane by lane.
 */
// @ts-ignore: decorator
@inline
function inPrefix4(key: v128, cut4: v128, cutKey: u32, taken: f64, below: bool): v128 {
  const lt = i32x4.lt_u(key, cut4);
  const tie = i32x4.eq(key, cut4);
  const count = <f64>popcnt(i32x4.bitmask(tie));
  const ties = below ? belowTies : upToTies;
  const room = taken - ties;
  if (count <= room) {
    if (below) belowTies = ties + count;
    else upToTies = ties + count;
    return v128.or(lt, tie);
  }
  if (room <= 0) return lt;
  // The last ties taken lie in this vector: lane by lane, in order.
  let t = ties;
  let lanes = lt;
  if (<u32>i32x4.extract_lane(key, 0) == cutKey && t < taken) {
    t++;
    lanes = i32x4.replace_lane(lanes, 0, -1);
  }
  if (<u32>i32x4.extract_lane(key, 1) == cutKey && t < taken) {
    t++;
    lanes = i32x4.replace_lane(lanes, 1, -1);
  }
  if (<u32>i32x4.extract_lane(key, 2) == cutKey && t < taken) {
    t++;
    lanes = i32x4.replace_lane(lanes, 2, -1);
  }
  if (<u32>i32x4.extract_lane(key, 3) == cutKey && t < taken) {
    t++;
    lanes = i32x4.replace_lane(lanes, 3, -1);
  }
  if (below) belowTies = t;
  else upToTies = t;
  return lanes;
}

/** 1.0 in the lanes of four values that the cuts keep (maskRange's mask), 0.0 elsewhere. */
// @ts-ignore: decorator
@inline
function keep4(
  key: v128,
  up4: v128,
  upToKey: u32,
  upToTaken: f64,
  hasBelow: i32,
  below4: v128,
  belowKey: u32,
  belowTaken: f64,
  one: v128,
): v128 {
  let selected = inPrefix4(key, up4, upToKey, upToTaken, false);
  if (hasBelow) selected = v128.andnot(selected, inPrefix4(key, below4, belowKey, belowTaken, true));
  return v128.and(selected, one);
}

/** fround(d * keep) of four task-vector values `d` under the cuts, times `rescale4` when `hasRescale`. */
// @ts-ignore: decorator
@inline
function masked4(
  d: v128,
  flip4: v128,
  up4: v128,
  upToKey: u32,
  upToTaken: f64,
  hasBelow: i32,
  below4: v128,
  belowKey: u32,
  belowTaken: f64,
  rescale4: v128,
  hasRescale: i32,
  absMask: v128,
  nanKey: v128,
  inf: v128,
  one: v128,
): v128 {
  const key = orderKey4(d, flip4, absMask, nanKey, inf);
  let m = f32x4.mul(d, keep4(key, up4, upToKey, upToTaken, hasBelow, below4, belowKey, belowTaken, one));
  if (hasRescale) m = f32x4.mul(m, rescale4);
  return m;
}

/** masked4 of one value. */
// @ts-ignore: decorator
@inline
function masked1(
  d: f32,
  flip: u32,
  upToKey: u32,
  upToTaken: f64,
  hasBelow: i32,
  belowKey: u32,
  belowTaken: f64,
  rescale: f32,
  hasRescale: i32,
): f32 {
  let m = d * keep1(reinterpret<u32>(d), flip, upToKey, upToTaken, hasBelow, belowKey, belowTaken);
  if (hasRescale) m = m * rescale;
  return m;
}

/**
 * The output pass of one task vector under a TIES / breadcrumbs mask, fused: dst[i] =
 * fround(fround(x[i] - base[i]) * keep(i)), then times `rescale` when `hasRescale` (sparsify.ts
 * MaskSparsifier.apply). Tie counts come from and go back to `state` as in maskRange.
 */
export function maskedDelta(
  x: usize,
  xDtype: i32,
  base: usize,
  baseDtype: i32,
  dst: usize,
  n: i32,
  flip: u32,
  upToKey: u32,
  upToTaken: f64,
  hasBelow: i32,
  belowKey: u32,
  belowTaken: f64,
  state: usize,
  rescale: f32,
  hasRescale: i32,
): void {
  loadTies(state);
  const whole = <usize>(n & ~3);
  const flip4 = i32x4.splat(flip);
  const up4 = i32x4.splat(upToKey);
  const below4 = i32x4.splat(belowKey);
  const rescale4 = f32x4.splat(rescale);
  const absMask = constant(0, i32x4.splat(0x7fffffff));
  const nanKey = constant(1, i32x4.splat(0x7fc00000));
  const inf = constant(2, i32x4.splat(0x7f800000));
  const one = constant(3, f32x4.splat(1));
  for (let i: usize = 0; i < whole; i += 4) {
    const d = f32x4.sub(load4(x, xDtype, i), load4(base, baseDtype, i));
    const m = masked4(d, flip4, up4, upToKey, upToTaken, hasBelow, below4, belowKey, belowTaken, rescale4, hasRescale, absMask, nanKey, inf, one);
    v128.store(dst + (i << 2), m);
  }
  for (let i = whole; i < <usize>n; i++) {
    const d = load1(x, xDtype, i) - load1(base, baseDtype, i);
    store<f32>(dst + (i << 2), masked1(d, flip, upToKey, upToTaken, hasBelow, belowKey, belowTaken, rescale, hasRescale));
  }
  saveTies(state);
}

/**
 * TIES' (and breadcrumbs_ties') output for one model, fused: maskedDelta, then mixConsensus with
 * that one model (kept where its weighted delta is a nonzero number, divided by its weight when
 * `normalize`), scaled by `lambda` when `scale`, added to the base and encoded.
 */
export function tiesOne(
  x: usize,
  xDtype: i32,
  base: usize,
  baseDtype: i32,
  out: usize,
  outDtype: i32,
  n: i32,
  flip: u32,
  upToKey: u32,
  upToTaken: f64,
  hasBelow: i32,
  belowKey: u32,
  belowTaken: f64,
  state: usize,
  rescale: f32,
  hasRescale: i32,
  weight: f32,
  normalize: i32,
  lambda: f32,
  scale: i32,
): void {
  loadTies(state);
  // One model's divisor is its weight where kept, else 1: a weight of 1 divides by 1 everywhere,
  // which changes no value, so the division (as costly as the rest of the loop) is skipped.
  const divide = normalize != 0 && weight != 1;
  const whole = <usize>(n & ~3);
  const flip4 = i32x4.splat(flip);
  const up4 = i32x4.splat(upToKey);
  const below4 = i32x4.splat(belowKey);
  const rescale4 = f32x4.splat(rescale);
  const w = f32x4.splat(weight);
  const lambda4 = f32x4.splat(lambda);
  const absMask = constant(0, i32x4.splat(0x7fffffff));
  const nanKey = constant(1, i32x4.splat(0x7fc00000));
  const inf = constant(2, i32x4.splat(0x7f800000));
  const one = constant(3, f32x4.splat(1));
  const zero = constant(4, i32x4.splat(0));
  const lsb1 = constant(5, i32x4.splat(1));
  const round = constant(6, i32x4.splat(0x7fff));
  const quiet = constant(7, i32x4.splat(0x0040));
  const low16 = constant(8, i32x4.splat(0xffff));
  for (let i: usize = 0; i < whole; i += 4) {
    const b = load4(base, baseDtype, i);
    const d = f32x4.sub(load4(x, xDtype, i), b);
    const m = masked4(d, flip4, up4, upToKey, upToTaken, hasBelow, below4, belowKey, belowTaken, rescale4, hasRescale, absMask, nanKey, inf, one);
    const dw = f32x4.mul(m, w);
    const keep = v128.and(v128.or(f32x4.gt(dw, zero), f32x4.lt(dw, zero)), one);
    let mixed = f32x4.mul(dw, keep);
    if (divide) {
      const divisor = f32x4.mul(w, keep);
      mixed = f32x4.div(mixed, f32x4.add(divisor, v128.and(f32x4.eq(divisor, zero), one)));
    }
    if (scale) mixed = f32x4.mul(mixed, lambda4);
    const u = f32x4.add(b, mixed);
    if (outDtype == BF16) store16x4(out, i, bf16Bits4k(u, absMask, inf, lsb1, round, quiet, low16));
    else store4(out, outDtype, i, u);
  }
  for (let i = whole; i < <usize>n; i++) {
    const b = load1(base, baseDtype, i);
    const d = load1(x, xDtype, i) - b;
    const dw = masked1(d, flip, upToKey, upToTaken, hasBelow, belowKey, belowTaken, rescale, hasRescale) * weight;
    const keep: f32 = dw > 0 || dw < 0 ? 1 : 0;
    let mixed = dw * keep;
    if (normalize) {
      const divisor = weight * keep;
      mixed = mixed / (divisor + (divisor == 0 ? <f32>1 : <f32>0));
    }
    if (scale) mixed = mixed * lambda;
    store1(out, outDtype, i, b + mixed);
  }
  saveTies(state);
}


/**
 * How many task-vector values x[i] - base[i] of [0, n) have the order key `upToKey`, and how many
 * `belowKey` (when `hasBelow`), as two f64 at `out`: a chunk's ties at the cuts, so that a chunk
 * masked on another thread knows the ties before it.
 */
export function countTies(
  x: usize,
  xDtype: i32,
  base: usize,
  baseDtype: i32,
  n: i32,
  flip: u32,
  upToKey: u32,
  hasBelow: i32,
  belowKey: u32,
  out: usize,
): void {
  const whole = <usize>(n & ~3);
  const absMask = constant(0, i32x4.splat(0x7fffffff));
  const nanKey = constant(1, i32x4.splat(0x7fc00000));
  const inf = constant(2, i32x4.splat(0x7f800000));
  const flip4 = i32x4.splat(flip);
  const up4 = i32x4.splat(upToKey);
  const below4 = i32x4.splat(belowKey);
  let upTo: i32 = 0;
  let below: i32 = 0;
  for (let i: usize = 0; i < whole; i += 4) {
    const d = f32x4.sub(load4(x, xDtype, i), load4(base, baseDtype, i));
    const key = orderKey4(d, flip4, absMask, nanKey, inf);
    upTo += <i32>popcnt(i32x4.bitmask(i32x4.eq(key, up4)));
    below += <i32>popcnt(i32x4.bitmask(i32x4.eq(key, below4)));
  }
  for (let i = whole; i < <usize>n; i++) {
    const k = orderKey(reinterpret<u32>(load1(x, xDtype, i) - load1(base, baseDtype, i)), flip);
    if (k == upToKey) upTo++;
    if (k == belowKey) below++;
  }
  store<f64>(out, <f64>upTo);
  store<f64>(out, hasBelow ? <f64>below : 0, 8);
}

/**
 * Four outputs of tiesOneBf16 (bf16 bits in the low halves of the lanes), from base values `b`,
 * task-vector values `d` and the lanes `sel` the cut keeps.
 */
// @ts-ignore: decorator
@inline
function tiesFour(
  b: v128,
  d: v128,
  sel: v128,
  w: v128,
  divide: bool,
  lambda4: v128,
  scale: i32,
  absMask: v128,
  inf: v128,
  one: v128,
  zero: v128,
  lsb1: v128,
  round: v128,
  quiet: v128,
  low16: v128,
): v128 {
  const dw = f32x4.mul(f32x4.mul(d, v128.and(sel, one)), w);
  // dw * keep is dw itself: keep is 1 unless dw is +-0 (times 0: the same signed zero) or NaN
  // (times 0: that NaN, an operand's NaN being what a product returns), so only the divisor needs it.
  let mixed = dw;
  if (divide) {
    const keep = v128.and(v128.or(f32x4.gt(dw, zero), f32x4.lt(dw, zero)), one);
    mixed = f32x4.mul(dw, keep);
    const divisor = f32x4.mul(w, keep);
    mixed = f32x4.div(mixed, f32x4.add(divisor, v128.and(f32x4.eq(divisor, zero), one)));
  }
  if (scale) mixed = f32x4.mul(mixed, lambda4);
  return bf16Bits4k(f32x4.add(b, mixed), absMask, inf, lsb1, round, quiet, low16);
}

/**
 * tiesOne for bf16 inputs and output and one cut (TIES), eight elements a step: the same
 * operations on each four, the 16-bit lanes widened by a shuffle and narrowed by one pack.
 */
export function tiesOneBf16(
  x: usize,
  base: usize,
  out: usize,
  n: i32,
  flip: u32,
  upToKey: u32,
  upToTaken: f64,
  state: usize,
  weight: f32,
  normalize: i32,
  lambda: f32,
  scale: i32,
): void {
  upToTies = load<f64>(state);
  const divide = normalize != 0 && weight != 1;
  const absMask = constant(0, i32x4.splat(0x7fffffff));
  const nanKey = constant(1, i32x4.splat(0x7fc00000));
  const inf = constant(2, i32x4.splat(0x7f800000));
  const one = constant(3, f32x4.splat(1));
  const zero = constant(4, i32x4.splat(0));
  const lsb1 = constant(5, i32x4.splat(1));
  const round = constant(6, i32x4.splat(0x7fff));
  const quiet = constant(7, i32x4.splat(0x0040));
  const low16 = constant(8, i32x4.splat(0xffff));
  const flip4 = i32x4.splat(flip);
  const up4 = i32x4.splat(upToKey);
  const w = f32x4.splat(weight);
  const lambda4 = f32x4.splat(lambda);
  const whole = <usize>(n & ~7);
  for (let i: usize = 0; i < whole; i += 8) {
    const xv = v128.load(x + (i << 1));
    const bv = v128.load(base + (i << 1));
    const bLow = bf16Low(bv, zero);
    const bHigh = bf16High(bv, zero);
    const dLow = f32x4.sub(bf16Low(xv, zero), bLow);
    const dHigh = f32x4.sub(bf16High(xv, zero), bHigh);
    const keyLow = orderKey4(dLow, flip4, absMask, nanKey, inf);
    const keyHigh = orderKey4(dHigh, flip4, absMask, nanKey, inf);
    let selLow = i32x4.lt_u(keyLow, up4);
    let selHigh = i32x4.lt_u(keyHigh, up4);
    // Ties at the cut are rare: eight lanes without one leave the running count alone; eight whose
    // ties all fit take them at once; otherwise inPrefix4 takes them lane by lane, elements
    // i..i+3 first (the lowest index first).
    const tieLow = i32x4.eq(keyLow, up4);
    const tieHigh = i32x4.eq(keyHigh, up4);
    const tieLanes = i32x4.bitmask(tieLow) | (i32x4.bitmask(tieHigh) << 4);
    if (tieLanes != 0) {
      const count = <f64>popcnt(tieLanes);
      if (count <= upToTaken - upToTies) {
        upToTies += count;
        selLow = v128.or(selLow, tieLow);
        selHigh = v128.or(selHigh, tieHigh);
      } else {
        selLow = inPrefix4(keyLow, up4, upToKey, upToTaken, false);
        selHigh = inPrefix4(keyHigh, up4, upToKey, upToTaken, false);
      }
    }
    const low = tiesFour(bLow, dLow, selLow, w, divide, lambda4, scale, absMask, inf, one, zero, lsb1, round, quiet, low16);
    const high = tiesFour(bHigh, dHigh, selHigh, w, divide, lambda4, scale, absMask, inf, one, zero, lsb1, round, quiet, low16);
    store16x8(out, i, low, high);
  }
  store<f64>(state, upToTies);
  if (whole < <usize>n) {
    const tail = <i32>whole;
    tiesOne(x + (whole << 1), BF16, base + (whole << 1), BF16, out + (whole << 1), BF16, n - tail, flip, upToKey, upToTaken, 0, 0, 0, state, 1, 0, weight, normalize, lambda, scale);
  }
}
