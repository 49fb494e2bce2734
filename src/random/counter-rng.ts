/**
 * Counter-based random numbers for the randomized merge methods (DARE, DELLA) and random projections.
 *
 * Generator: Philox4x32-10 (Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3", SC11; the
 * Random123 library). A pure function of a 128-bit counter and a 64-bit key, so every element's random
 * number is computed independently, in any order, on the CPU or in a GPU thread, with the same bits.
 *
 * Scheme (the WGSL kernels implement exactly this):
 * - key:     k0 = seed >>> 0 (the low 32 bits of the seed),
 *            k1 = FNV-1a 32-bit hash of the UTF-8 bytes of the output tensor name.
 * - counter: c0 = element index, low 32 bits (flat row-major index in the tensor),
 *            c1 = model index (position of the model in `MergeInputs.tensors`),
 *            c2 = stream (RNG_STREAM_SPARSIFY = 0 for sparsification masks,
 *                 RNG_STREAM_GAUSSIAN = 1 reserved for Gaussian test matrices of the SVD family,
 *                 RNG_STREAM_SAMPLING = 2 for token sampling: see `samplingUniform`),
 *            c3 = element index, high bits (floor(index / 2^32); 0 below 2^32 elements).
 * - output:  word 0 of the Philox block, x0.
 * - uniform: u = (x0 >>> 8) * 2^-24, exact in f32, in [0, 1).
 * - Bernoulli(p): keep iff u < Math.fround(p).
 *
 * Philox4x32 round, with M0 = 0xD2511F53, M1 = 0xCD9E8D57:
 *   (hi0, lo0) = mulhilo32(M0, c0); (hi1, lo1) = mulhilo32(M1, c2)
 *   c = [hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0]
 * Ten rounds; between rounds the key is bumped: k0 += 0x9E3779B9, k1 += 0xBB67AE85 (mod 2^32).
 *
 * mulhilo32 splits both operands into 16-bit limbs so that every intermediate fits in 32 bits: WGSL has
 * no 64-bit integers, and the same limb arithmetic here keeps the two implementations line for line.
 */

export const PHILOX_M0 = 0xd2511f53;
export const PHILOX_M1 = 0xcd9e8d57;
export const PHILOX_W0 = 0x9e3779b9;
export const PHILOX_W1 = 0xbb67ae85;
export const PHILOX_ROUNDS = 10;

/** Counter word c2 for sparsification masks (DARE, DELLA). */
export const RNG_STREAM_SPARSIFY = 0;
/** Counter word c2 for Gaussian test matrices of the randomized-SVD methods. */
export const RNG_STREAM_GAUSSIAN = 1;
/**
 * Counter word c2 for sampling generated tokens (src/model/sampling.ts). No tensor there: the key is
 * (seed, 0) and the element index is the position of the sampled token in the sequence.
 */
export const RNG_STREAM_SAMPLING = 2;

/** 2^-24: the spacing of the uniform grid; (x0 >>> 8) * 2^-24 is exact in f32. */
const UNIFORM_SCALE = 1 / 16777216;
const TWO_POW_32 = 4294967296;

export type PhiloxCounter = [number, number, number, number];
export type PhiloxKey = [number, number];

/**
 * High 32 bits of the 64-bit product a * b of two u32 values, from 16-bit limbs:
 *   a*b = aHi*bHi*2^32 + (aHi*bLo + aLo*bHi)*2^16 + aLo*bLo
 * Each limb product is below 2^32, and the middle terms are added in 16-bit halves so that no sum
 * overflows 32 bits. Math.imul is exact here (the products fit in u32; imul returns them mod 2^32).
 */
export function mulhi32(a: number, b: number): number {
  const aLo = a & 0xffff;
  const aHi = a >>> 16;
  const bLo = b & 0xffff;
  const bHi = b >>> 16;
  const crossA = Math.imul(aHi, bLo);
  const crossB = Math.imul(aLo, bHi);
  const carry = (crossA & 0xffff) + (crossB & 0xffff) + (Math.imul(aLo, bLo) >>> 16);
  return (Math.imul(aHi, bHi) + (crossA >>> 16) + (crossB >>> 16) + (carry >>> 16)) >>> 0;
}

/** Low 32 bits of the 64-bit product a * b of two u32 values. */
export function mullo32(a: number, b: number): number {
  return Math.imul(a, b) >>> 0;
}

/** Philox4x32-10 of counter `c` under key `k`; all words are u32. */
export function philox4x32(c: PhiloxCounter, k: PhiloxKey): PhiloxCounter {
  let c0 = c[0] >>> 0;
  let c1 = c[1] >>> 0;
  let c2 = c[2] >>> 0;
  let c3 = c[3] >>> 0;
  let k0 = k[0] >>> 0;
  let k1 = k[1] >>> 0;
  for (let round = 0; round < PHILOX_ROUNDS; round++) {
    if (round > 0) {
      k0 = (k0 + PHILOX_W0) >>> 0;
      k1 = (k1 + PHILOX_W1) >>> 0;
    }
    const hi0 = mulhi32(PHILOX_M0, c0);
    const lo0 = mullo32(PHILOX_M0, c0);
    const hi1 = mulhi32(PHILOX_M1, c2);
    const lo1 = mullo32(PHILOX_M1, c2);
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  return [c0, c1, c2, c3];
}

/** FNV-1a 32-bit hash of the UTF-8 bytes of `s` (offset basis 0x811C9DC5, prime 0x01000193). */
export function fnv1a32(s: string): number {
  const bytes = new TextEncoder().encode(s);
  let hash = 0x811c9dc5;
  for (const byte of bytes) {
    hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/** The uniform in [0, 1) that word 0 of a Philox block stands for: (x0 >>> 8) * 2^-24. */
export function uniformFromWord(x0: number): number {
  return (x0 >>> 8) * UNIFORM_SCALE;
}

/** The uniform of one element; `elementIndex` is a non-negative integer below 2^53. */
export function uniformAt(
  seed: number,
  tensorName: string,
  modelIndex: number,
  stream: number,
  elementIndex: number,
): number {
  const counter: PhiloxCounter = [
    elementIndex >>> 0,
    modelIndex >>> 0,
    stream >>> 0,
    Math.floor(elementIndex / TWO_POW_32) >>> 0,
  ];
  const block = philox4x32(counter, [seed >>> 0, fnv1a32(tensorName)]);
  return uniformFromWord(block[0]);
}

/**
 * The uniform that decides the token at sequence position `position` (0-based, prompt included):
 * key [seed >>> 0, 0], counter [position low 32 bits, 0, RNG_STREAM_SAMPLING, position high bits].
 */
export function samplingUniform(seed: number, position: number): number {
  const counter: PhiloxCounter = [
    position >>> 0,
    0,
    RNG_STREAM_SAMPLING,
    Math.floor(position / TWO_POW_32) >>> 0,
  ];
  return uniformFromWord(philox4x32(counter, [seed >>> 0, 0])[0]);
}

const M0 = PHILOX_M0 | 0;
const M1 = PHILOX_M1 | 0;

/**
 * Fills `out[j]` with the uniform of element `elementOffset + j`, for the key (seed, nameHash) and the
 * counter words (modelIndex, stream). Same values as `uniformAt`; words are kept as int32 (same bits as
 * u32) and the rounds inlined, which V8 runs several times faster than u32 doubles. `elementOffset`
 * lets a caller fill a large tensor in tiles.
 */
export function fillUniform(
  out: Float32Array,
  seed: number,
  nameHash: number,
  modelIndex: number,
  stream: number,
  elementOffset = 0,
): void {
  const key0 = seed | 0;
  const key1 = nameHash | 0;
  const word1 = modelIndex | 0;
  const word2 = stream | 0;
  const bump0 = PHILOX_W0 | 0;
  const bump1 = PHILOX_W1 | 0;
  for (let j = 0; j < out.length; j++) {
    const index = elementOffset + j;
    let c0 = index | 0;
    let c1 = word1;
    let c2 = word2;
    let c3 = index >= TWO_POW_32 ? Math.floor(index / TWO_POW_32) | 0 : 0;
    let k0 = key0;
    let k1 = key1;
    for (let round = 0; round < PHILOX_ROUNDS; round++) {
      if (round > 0) {
        k0 = (k0 + bump0) | 0;
        k1 = (k1 + bump1) | 0;
      }
      const hi0 = mulhiInt32(M0, c0);
      const lo0 = Math.imul(M0, c0);
      const hi1 = mulhiInt32(M1, c2);
      const lo1 = Math.imul(M1, c2);
      c0 = hi1 ^ c1 ^ k0;
      c1 = lo1;
      c2 = hi0 ^ c3 ^ k1;
      c3 = lo0;
    }
    out[j] = (c0 >>> 8) * UNIFORM_SCALE;
  }
}

/** mulhi32 on int32-held words, returning int32 (same bits); small enough for V8 to inline. */
function mulhiInt32(a: number, b: number): number {
  const aLo = a & 0xffff;
  const aHi = a >>> 16;
  const bLo = b & 0xffff;
  const bHi = b >>> 16;
  const crossA = Math.imul(aHi, bLo);
  const crossB = Math.imul(aLo, bHi);
  const carry = (crossA & 0xffff) + (crossB & 0xffff) + (Math.imul(aLo, bLo) >>> 16);
  return (Math.imul(aHi, bHi) + (crossA >>> 16) + (crossB >>> 16) + (carry >>> 16)) | 0;
}
