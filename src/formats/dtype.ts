/**
 * safetensors dtypes and the codecs between the float ones and f32.
 *
 * All merge math runs in f32. Inputs are widened exactly (BF16 and F16 are subsets of f32);
 * results are rounded once, to nearest-even, when encoded. NaN and Inf pass through.
 */

export const DTYPE_BYTES = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
} as const;

export type DType = keyof typeof DTYPE_BYTES;

/** The float dtypes the engine merges and writes. */
export type FloatDType = 'F32' | 'F16' | 'BF16';

export function isDType(s: string): s is DType {
  return Object.hasOwn(DTYPE_BYTES, s);
}

export function isFloatDType(d: DType): d is FloatDType {
  return d === 'F32' || d === 'F16' || d === 'BF16';
}

/** mergekit / torch names for the dtypes a recipe may ask for. */
const RECIPE_DTYPES: Record<string, FloatDType> = {
  float32: 'F32',
  fp32: 'F32',
  float16: 'F16',
  fp16: 'F16',
  half: 'F16',
  bfloat16: 'BF16',
  bf16: 'BF16',
};

/** mergekit's dtype_from_name also accepts the `torch.` prefix (`torch.bfloat16`). */
export function dtypeFromRecipe(name: string): FloatDType | undefined {
  const key = name.toLowerCase().replace(/^torch\./, '');
  // Own keys only: `constructor` or `toString` must not resolve to Object.prototype members.
  return Object.hasOwn(RECIPE_DTYPES, key) ? RECIPE_DTYPES[key] : undefined;
}

/** The name transformers writes as `torch_dtype` in config.json. */
export function torchDTypeName(d: FloatDType): string {
  return d === 'F32' ? 'float32' : d === 'F16' ? 'float16' : 'bfloat16';
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** f32 -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN with its sign. */
export function f32ToBf16Bits(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x0040) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32(h: number): number {
  u32Scratch[0] = h << 16;
  return f32Scratch[0];
}

/** f32 -> IEEE half bits, round to nearest even, overflow to Inf, subnormals kept. */
export function f32ToF16Bits(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  // Unbiased exponent e; half normal range is e in [-14, 15].
  const e = exp - 127;
  if (e > 15) return sign | 0x7c00;
  if (e >= -14) {
    // Normal half: keep 10 mantissa bits, round on the 13 dropped ones.
    let h = ((e + 15) << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++; // may carry into the exponent: correct
    return sign | h;
  }
  if (e < -25) return sign; // below half the smallest subnormal: rounds to zero
  // Subnormal half: value = m * 2^-24 with m = (1.mant) * 2^(e+24).
  const full = mant | 0x800000; // 24 significant bits, value = full * 2^(e-23)
  const shift = -e - 1; // bits to drop so the unit is 2^-24: (e-23) - (-24) = e+1 -> shift = -(e+1)
  let m = full >>> shift;
  const rest = full & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rest > half || (rest === half && m & 1)) m++;
  return sign | m;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Lookup table for f16 -> f32: decoding a 7B model's f16 tensors is hot. */
let f16Table: Float32Array | undefined;
function f16ToF32Table(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = f16BitsToF32(i);
  }
  return f16Table;
}

/** Widen little-endian tensor bytes to f32. `bytes` may be at any alignment. */
export function decodeToF32(bytes: Uint8Array, dtype: FloatDType, out?: Float32Array): Float32Array {
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  // Typed-array constructors truncate a fractional length, which would silently drop a partial element.
  if (!Number.isInteger(n)) {
    throw new RangeError(`${bytes.byteLength} bytes are not a whole number of ${dtype} elements`);
  }
  const res = out ?? new Float32Array(n);
  if (dtype === 'F32') {
    if (bytes.byteOffset % 4 === 0) res.set(new Float32Array(bytes.buffer, bytes.byteOffset, n));
    else new Uint8Array(res.buffer, res.byteOffset, n * 4).set(bytes);
    return res;
  }
  if (dtype === 'BF16') {
    decodeBf16(bytes, new Int32Array(res.buffer, res.byteOffset, n));
    return res;
  }
  const halves =
    bytes.byteOffset % 2 === 0
      ? new Uint16Array(bytes.buffer, bytes.byteOffset, n)
      : new Uint16Array(bytes.slice().buffer, 0, n);
  const table = f16ToF32Table();
  for (let i = 0; i < n; i++) res[i] = table[halves[i]];
  return res;
}

/**
 * bf16 bytes to f32 bit patterns (bits of a bf16 are the high half of its f32). Reads two elements
 * per 32-bit word where the bytes are 4-aligned: this loop runs on every chunk of every input.
 */
function decodeBf16(bytes: Uint8Array, bits: Int32Array): void {
  const n = bits.length;
  if (bytes.byteOffset % 4 === 0) {
    const pairs = new Int32Array(bytes.buffer, bytes.byteOffset, n >>> 1);
    for (let p = 0, i = 0; p < pairs.length; p++, i += 2) {
      const word = pairs[p];
      bits[i] = word << 16;
      bits[i + 1] = word & -65536;
    }
    if (n & 1) bits[n - 1] = (bytes[2 * n - 2] | (bytes[2 * n - 1] << 8)) << 16;
    return;
  }
  const halves =
    bytes.byteOffset % 2 === 0
      ? new Uint16Array(bytes.buffer, bytes.byteOffset, n)
      : new Uint16Array(bytes.slice().buffer, 0, n);
  for (let i = 0; i < n; i++) bits[i] = halves[i] << 16;
}

/** f32 bit pattern (int32) -> bf16 bits, as f32ToBf16Bits; the low 16 bits of the result are the answer. */
function bf16Rounded(x: number): number {
  return (x & 0x7fffffff) > 0x7f800000 ? (x >>> 16) | 0x0040 : (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
}

/** Round f32 values once to `dtype` and return little-endian bytes. */
export function encodeFromF32(values: Float32Array, dtype: FloatDType): Uint8Array {
  const n = values.length;
  if (dtype === 'F32')
    return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + n * 4));
  const out = new Uint16Array(n);
  if (dtype === 'BF16') {
    // Two elements per 32-bit store (little-endian: the first element is the low half).
    const x = new Int32Array(values.buffer, values.byteOffset, n);
    const words = new Int32Array(out.buffer, 0, n >>> 1);
    for (let p = 0, i = 0; p < words.length; p++, i += 2) {
      words[p] = (bf16Rounded(x[i]) & 0xffff) | (bf16Rounded(x[i + 1]) << 16);
    }
    if (n & 1) out[n - 1] = bf16Rounded(x[n - 1]);
  } else {
    for (let i = 0; i < n; i++) out[i] = f32ToF16Bits(values[i]);
  }
  return new Uint8Array(out.buffer);
}

/**
 * How many values of little-endian `bytes` in `dtype` are Inf or NaN (all exponent bits set). Works
 * on the encoded bytes so that every path to the output (CPU, GPU, streamed parts) is checked alike.
 * One 32-bit load per two 16-bit values: adding one to an all-ones exponent carries into the bit
 * above it (the sign position, masked off first), which flags the value without a branch.
 */
export function countNonFinite(bytes: Uint8Array, dtype: FloatDType): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let count = 0;
  if (dtype === 'F32') {
    const n = bytes.byteLength >> 2;
    if (bytes.byteOffset % 4 === 0) {
      const words = new Uint32Array(bytes.buffer, bytes.byteOffset, n);
      for (let i = 0; i < n; i++) if ((words[i] & 0x7f800000) === 0x7f800000) count++;
    } else {
      for (let i = 0; i < n; i++) if ((view.getUint32(i * 4, true) & 0x7f800000) === 0x7f800000) count++;
    }
    return count;
  }
  // Exponent masks of two packed values, and the one that carries each into its sign bit.
  const [exp, one] = dtype === 'BF16' ? [0x7f80, 0x0080] : [0x7c00, 0x0400];
  const exp2 = (exp * 0x10001) >>> 0;
  const one2 = one * 0x10001;
  const n = bytes.byteLength >> 1;
  let start = 0;
  if (bytes.byteOffset % 4 === 0) {
    const pairs = n >> 1;
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, pairs);
    for (let i = 0; i < pairs; i++) {
      const flags = (((words[i] & exp2) >>> 0) + one2) & 0x80008000;
      if (flags !== 0) count += ((flags >>> 15) & 1) + (flags >>> 31);
    }
    start = pairs * 2;
  }
  for (let i = start; i < n; i++) if ((view.getUint16(i * 2, true) & exp) === exp) count++;
  return count;
}
