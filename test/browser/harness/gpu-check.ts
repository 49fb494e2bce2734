/** Assertions and test data shared by the GPU cases; they throw plain Errors with the first mismatch. */

export function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

export function bitsOf(values: Float32Array): Uint32Array {
  return new Uint32Array(values.buffer, values.byteOffset, values.length);
}

function isNaNBits(b: number): boolean {
  return (b & 0x7fffffff) > 0x7f800000;
}

/**
 * Bit-for-bit equality. With `nanEqual`, any NaN matches any NaN: the NaN a GPU produces from
 * arithmetic (Inf - Inf, 0 * Inf) need not carry the payload or sign that V8 gives it.
 */
export function checkBits(
  got: Float32Array,
  want: Float32Array,
  what: string,
  explain?: (i: number) => string,
  nanEqual = false,
): void {
  check(got.length === want.length, `${what}: ${got.length} values, expected ${want.length}`);
  const g = bitsOf(got);
  const w = bitsOf(want);
  let mismatches = 0;
  let first = -1;
  for (let i = 0; i < g.length; i++) {
    if (g[i] === w[i] || (nanEqual && isNaNBits(g[i]) && isNaNBits(w[i]))) continue;
    if (first < 0) first = i;
    mismatches++;
  }
  if (first >= 0) {
    const hex = (b: number) => `0x${b.toString(16).padStart(8, '0')}`;
    throw new Error(
      `${what}: ${mismatches} of ${g.length} values differ; first at ${first}` +
        `${explain ? ` (${explain(first)})` : ''}: got ${got[first]} (${hex(g[first])}), ` +
        `expected ${want[first]} (${hex(w[first])})`,
    );
  }
}

/** Largest distance in units of the last place of `dtype` between two arrays (NaN must match NaN). */
export function maxUlpDistance(got: Float32Array, want: Float32Array, mantissaBits: number): number {
  let worst = 0;
  for (let i = 0; i < got.length; i++) {
    const a = got[i];
    const b = want[i];
    if (Number.isNaN(a) || Number.isNaN(b)) {
      if (Number.isNaN(a) !== Number.isNaN(b)) return Number.POSITIVE_INFINITY;
      continue;
    }
    if (a === b) continue;
    const scale = Math.max(Math.abs(a), Math.abs(b));
    const exponent = scale === 0 ? -126 : Math.max(-126, Math.floor(Math.log2(scale)));
    const ulp = 2 ** (exponent - mantissaBits);
    worst = Math.max(worst, Math.abs(a - b) / ulp);
  }
  return worst;
}

/** Small seeded generator for test data. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random f32 bit patterns over every exponent (subnormals, NaN payloads and Inf included). */
export function randomBitsF32(n: number, seed: number): Float32Array {
  const rnd = mulberry32(seed);
  const out = new Float32Array(n);
  const bits = bitsOf(out);
  for (let i = 0; i < n; i++) bits[i] = Math.floor(rnd() * 4294967296) >>> 0;
  return out;
}

/** Values at the edges of the codecs and of division. */
export function specialF32(): number[] {
  const fromBits = (b: number) => new Float32Array(new Uint32Array([b]).buffer)[0];
  const out = [
    0,
    -0,
    1,
    -1,
    0.5,
    3,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    65504, // largest half
    65519.996, // rounds to 65504 in half
    65520, // rounds to Inf in half
    2 ** -14, // smallest normal half
    2 ** -24, // smallest subnormal half
    2 ** -25, // half of it: ties to even, to 0
    3 * 2 ** -26, // above the half-way point: rounds up
    1 + 2 ** -8, // BF16 tie, rounds to even (down)
    1 + 3 * 2 ** -8, // BF16 tie, rounds up
    1 + 2 ** -11, // F16 tie
    2 ** 127 * 1.99,
    2 ** -126,
    2 ** -149,
    3.4028234663852886e38,
  ];
  const bitPatterns = [
    0x7fc00000, // quiet NaN
    0xffc00000, // negative quiet NaN
    0x7f800001, // signalling NaN payload
    0x7fbfffff,
    0x007fffff, // largest subnormal
    0x80000001, // negative smallest subnormal
    0x7f7fffff, // largest finite
    0x477fefff, // just below the half overflow boundary
    0x387fc000, // half subnormal with a tie
    0x3f808000, // BF16 tie, odd: rounds up
  ];
  return [...out, ...out.map((v) => -v), ...bitPatterns.map(fromBits)];
}
