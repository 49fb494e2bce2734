/**
 * Sums over the elements of a tensor in f32, in one fixed order that a GPU can reproduce bit for bit.
 *
 * The order (a blocked sum, applied level by level):
 *   reduce(terms) = terms.length <= REDUCTION_BLOCK
 *     ? sequential(terms)
 *     : reduce([sequential(block) for each consecutive block of REDUCTION_BLOCK terms; the last may be short])
 *   sequential(t) = (((t[0] + t[1]) + t[2]) + ...), every addition rounded to f32; an empty sum is 0.
 * Each level is one GPU dispatch with one thread per block; the blocked order also keeps the rounding
 * error far below that of one long sequential f32 sum.
 *
 * A term is itself rounded to f32 before it is added (|x| is exact; x*x and x*y are rounded once).
 */

/** Terms per block at every level of the reduction. */
export const REDUCTION_BLOCK = 256;

const fround = Math.fround;

/** Applies the upper levels of the reduction to level-0 block sums. */
function reduceBlockSums(sums: Float32Array): number {
  let level = sums;
  while (level.length > 1) {
    const next = new Float32Array(Math.ceil(level.length / REDUCTION_BLOCK));
    for (let block = 0; block < next.length; block++) {
      const start = block * REDUCTION_BLOCK;
      const end = Math.min(start + REDUCTION_BLOCK, level.length);
      let acc = level[start];
      for (let i = start + 1; i < end; i++) acc = fround(acc + level[i]);
      next[block] = acc;
    }
    level = next;
  }
  return level.length === 0 ? 0 : level[0];
}

/** Blocked f32 sum of term(i) for i in [0, count). */
export function blockedSumF32(count: number, term: (i: number) => number): number {
  if (count <= 0) return 0;
  const sums = new Float32Array(Math.ceil(count / REDUCTION_BLOCK));
  for (let block = 0; block < sums.length; block++) {
    const start = block * REDUCTION_BLOCK;
    const end = Math.min(start + REDUCTION_BLOCK, count);
    let acc = fround(term(start));
    for (let i = start + 1; i < end; i++) acc = fround(acc + fround(term(i)));
    sums[block] = acc;
  }
  return reduceBlockSums(sums);
}

/** L1 norm: blocked f32 sum of |x[offset + i]| for i in [0, length). NaN if any element is NaN. */
export function sumAbsF32(x: Float32Array, offset = 0, length = x.length - offset): number {
  if (length <= 0) return 0;
  const sums = new Float32Array(Math.ceil(length / REDUCTION_BLOCK));
  for (let block = 0; block < sums.length; block++) {
    const start = offset + block * REDUCTION_BLOCK;
    const end = Math.min(start + REDUCTION_BLOCK, offset + length);
    let acc = Math.abs(x[start]);
    for (let i = start + 1; i < end; i++) acc = fround(acc + Math.abs(x[i]));
    sums[block] = acc;
  }
  return reduceBlockSums(sums);
}

/** Blocked f32 sum of fround(x[i] * x[i]) over a range. */
export function sumSquaresF32(x: Float32Array, offset = 0, length = x.length - offset): number {
  return blockedSumF32(length, (i) => {
    const v = x[offset + i];
    return v * v;
  });
}

/** Blocked f32 sum of fround(x[i] * y[i]) over the same range of both. */
export function dotF32(x: Float32Array, y: Float32Array, offset = 0, length = x.length - offset): number {
  return blockedSumF32(length, (i) => x[offset + i] * y[offset + i]);
}

/** Euclidean norm: fround(sqrt(sumSquaresF32)); sqrt is correctly rounded in both f64 and f32. */
export function normF32(x: Float32Array, offset = 0, length = x.length - offset): number {
  return fround(Math.sqrt(sumSquaresF32(x, offset, length)));
}
