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
 *
 * `BlockedSumF32` computes the same sum from terms that arrive in pieces (a tensor visited a chunk of
 * rows at a time, chunks of any length): it keeps the open block of every level and closes a block
 * when it holds REDUCTION_BLOCK terms, so piece boundaries never change the result.
 */

/** Terms per block at every level of the reduction. */
export const REDUCTION_BLOCK = 256;

const fround = Math.fround;

/** Levels needed for 2^53 terms (256^7 > 2^53): the open blocks never outgrow this. */
const MAX_LEVELS = 8;

/** A blocked f32 sum fed with terms in order, in pieces of any length (module comment). */
export class BlockedSumF32 {
  /** The open level-0 block: its running sum and how many terms it holds. */
  private open = 0;
  private count = 0;
  /** Open blocks of the upper levels (index = level; 0 unused), and whether a level ever closed a block. */
  private readonly upperOpen = new Float64Array(MAX_LEVELS);
  private readonly upperCount = new Int32Array(MAX_LEVELS);
  private readonly everClosed = new Uint8Array(MAX_LEVELS);

  reset(): void {
    this.open = 0;
    this.count = 0;
    this.upperOpen.fill(0);
    this.upperCount.fill(0);
    this.everClosed.fill(0);
  }

  /** Adds one term (rounded to f32 first). */
  add(term: number): void {
    const t = fround(term);
    this.open = this.count === 0 ? t : fround(this.open + t);
    if (++this.count === REDUCTION_BLOCK) this.closeBlock();
  }

  /** Adds |x[i]| for i in [from, to). */
  addAbs(x: Float32Array, from: number, to: number): void {
    let i = from;
    while (i < to) {
      const end = Math.min(to, i + (REDUCTION_BLOCK - this.count));
      let acc = this.open;
      if (this.count === 0) acc = Math.abs(x[i]);
      else acc = fround(acc + Math.abs(x[i]));
      for (let j = i + 1; j < end; j++) acc = fround(acc + Math.abs(x[j]));
      this.endRun(acc, end - i);
      i = end;
    }
  }

  /** Adds fround(x[i] * x[i]) for i in [from, to). */
  addSquares(x: Float32Array, from: number, to: number): void {
    this.addProducts(x, x, from, to);
  }

  /** Adds fround(x[i] * y[i]) for i in [from, to). */
  addProducts(x: Float32Array, y: Float32Array, from: number, to: number): void {
    let i = from;
    while (i < to) {
      const end = Math.min(to, i + (REDUCTION_BLOCK - this.count));
      const first = fround(x[i] * y[i]);
      let acc = this.count === 0 ? first : fround(this.open + first);
      for (let j = i + 1; j < end; j++) acc = fround(acc + fround(x[j] * y[j]));
      this.endRun(acc, end - i);
      i = end;
    }
  }

  /** The open level-0 block's running sum and term count, for a kernel that continues it. */
  get openBlock(): { sum: number; count: number } {
    return { sum: this.open, count: this.count };
  }

  /**
   * Continues with terms a kernel summed from the open block on (src/kernels/reduce-kernels.ts):
   * the sums of the `closed` level-0 blocks it completed, in order, then its new open block.
   */
  addBlockSums(blockSums: ArrayLike<number>, closed: number, openSum: number, openCount: number): void {
    for (let k = 0; k < closed; k++) {
      this.open = blockSums[k];
      this.count = REDUCTION_BLOCK;
      this.closeBlock();
    }
    this.open = openCount === 0 ? 0 : openSum;
    this.count = openCount;
  }

  /** The blocked sum of every term added so far. */
  result(): number {
    if (this.everClosed[0] === 0) return this.count === 0 ? 0 : this.open;
    // Close the open blocks bottom-up; the first level that never closed a block holds all its terms.
    let hasCarry = this.count > 0;
    let carry = this.open;
    for (let level = 1; level < MAX_LEVELS; level++) {
      let sum = this.upperOpen[level];
      let count = this.upperCount[level];
      if (hasCarry) {
        sum = count === 0 ? carry : fround(sum + carry);
        count++;
      }
      if (this.everClosed[level] === 0) return sum;
      hasCarry = count > 0;
      carry = sum;
    }
    throw new RangeError('blocked sum over more terms than a tensor can hold');
  }

  /** Records a run of `length` terms that brought the open level-0 block to `acc`. */
  private endRun(acc: number, length: number): void {
    this.open = acc;
    this.count += length;
    if (this.count === REDUCTION_BLOCK) this.closeBlock();
  }

  private closeBlock(): void {
    let carry = this.open;
    this.open = 0;
    this.count = 0;
    this.everClosed[0] = 1;
    for (let level = 1; level < MAX_LEVELS; level++) {
      const count = this.upperCount[level];
      this.upperOpen[level] = count === 0 ? carry : fround(this.upperOpen[level] + carry);
      if (count + 1 < REDUCTION_BLOCK) {
        this.upperCount[level] = count + 1;
        return;
      }
      carry = this.upperOpen[level];
      this.upperOpen[level] = 0;
      this.upperCount[level] = 0;
      this.everClosed[level] = 1;
    }
    throw new RangeError('blocked sum over more terms than a tensor can hold');
  }
}

/** Blocked f32 sum of term(i) for i in [0, count). */
export function blockedSumF32(count: number, term: (i: number) => number): number {
  const sum = new BlockedSumF32();
  for (let i = 0; i < count; i++) sum.add(term(i));
  return sum.result();
}

/** L1 norm: blocked f32 sum of |x[offset + i]| for i in [0, length). NaN if any element is NaN. */
export function sumAbsF32(x: Float32Array, offset = 0, length = x.length - offset): number {
  const sum = new BlockedSumF32();
  sum.addAbs(x, offset, offset + length);
  return sum.result();
}

/** Blocked f32 sum of fround(x[i] * x[i]) over a range. */
export function sumSquaresF32(x: Float32Array, offset = 0, length = x.length - offset): number {
  const sum = new BlockedSumF32();
  sum.addSquares(x, offset, offset + length);
  return sum.result();
}

/** Blocked f32 sum of fround(x[i] * y[i]) over the same range of both. */
export function dotF32(x: Float32Array, y: Float32Array, offset = 0, length = x.length - offset): number {
  const sum = new BlockedSumF32();
  sum.addProducts(x, y, offset, offset + length);
  return sum.result();
}

/** Euclidean norm: fround(sqrt(sumSquaresF32)); sqrt is correctly rounded in both f64 and f32. */
export function normF32(x: Float32Array, offset = 0, length = x.length - offset): number {
  return fround(Math.sqrt(sumSquaresF32(x, offset, length)));
}
