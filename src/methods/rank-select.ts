/**
 * Ordering tensor elements by magnitude, exactly and reproducibly, without sorting whole tensors.
 *
 * The order: elements are compared by |x| and equal magnitudes by flat index, lowest first, in both
 * ascending and descending order (a stable order). |x| is compared through its f32 bit pattern with the
 * sign bit cleared, which orders non-negative floats like the numbers they hold; -0 and +0 are equal;
 * every NaN gets the one key 0x7FC00000, above +Inf. So NaN counts as the largest magnitude, as in
 * torch.sort/argsort, which place NaN after +Inf in ascending order.
 *
 * Selection of the r-th element is a radix select on the 32-bit keys: a histogram of the high 16 bits
 * finds the bucket holding rank r, a histogram of the low 16 bits within that bucket finds the key. Two
 * passes over the data, O(n), no sort, no copy of the tensor; each pass may visit the tensor a chunk
 * at a time, so a tensor larger than memory is selected exactly (MagnitudeRangeSelector). Descending
 * order uses the key XOR 0x7FFFFFFF (keys are below 2^31), which reverses the order of the keys.
 */

/** Key of every NaN: above +Inf (0x7F800000), so NaN magnitudes sort last ascending, first descending. */
export const NAN_MAGNITUDE_KEY = 0x7fc00000;

/** The magnitude key of an f32 given its bit pattern (u32 or int32). */
export function magnitudeKey(bits: number): number {
  const abs = bits & 0x7fffffff;
  return abs > 0x7f800000 ? NAN_MAGNITUDE_KEY : abs;
}

export type RankOrder = 'ascending' | 'descending';

/** XORed into a magnitude key to order it: keys are below 2^31, so 0x7fffffff ^ key reverses them. */
function flipOf(order: RankOrder): number {
  return order === 'descending' ? 0x7fffffff : 0;
}

const BUCKETS = 65536;

/**
 * Keys of the first elements kept to guess where the cuts fall (see MagnitudeRangeSelector); a
 * tensor of at most this many elements is selected in one pass, exactly.
 */
export const SELECTION_SAMPLE = 1 << 20;
/**
 * Share of the sample's order each side of a guessed cut that its window of buckets covers. Narrow
 * windows are cheap to fill and to scatter into (they stay in the caches); on the task vectors of
 * real models +-0.5% around the guess held the cut every time, and a miss only costs pass 1.
 */
const WINDOW_MARGIN = 0.005;
/** Most buckets (256 KiB of low-bit counts each) in one cut's window. */
const WINDOW_MAX_BUCKETS = 8;

/**
 * Faster loops for the selection's passes (the WebAssembly kernels, src/kernels), each the exact
 * equivalent of the TypeScript loop it replaces. Arrays come from `counts`, so that the kernels
 * can address them; a kernel returns false where it cannot run on the arrays it is given (values
 * outside its memory), and the TypeScript loop runs instead.
 */
export interface SelectionKernels {
  /** A zeroed array of `length` counts (or keys) in the kernels' memory. */
  counts(length: number): Uint32Array;
  /** high[key >>> 16]++ and sample[sampleOffset + j] = key for the keys of bits[from + j]. */
  countSampled(
    bits: Int32Array,
    from: number,
    to: number,
    flip: number,
    high: Uint32Array,
    sample: Int32Array,
    sampleOffset: number,
  ): boolean;
  /** histogram[key >>> 16]++ for every key (the sample's histogram). */
  keyHistogram(keys: Int32Array, histogram: Uint32Array): boolean;
  /** The low bits of the keys whose bucket lies in [start, start + buckets), counted into `window`. */
  replay(keys: Int32Array, window: Uint32Array, start: number, buckets: number): boolean;
  /** MagnitudeRangeSelector.countWindowed's loop; windows of 0 buckets are empty. */
  countWindowed(
    bits: Int32Array,
    from: number,
    to: number,
    flip: number,
    high: Uint32Array,
    windows: readonly [Uint32Array, number, number, Uint32Array, number, number],
  ): boolean;
  /** countLow's loop; a bucket of -1 counts nothing. */
  countLow(
    bits: Int32Array,
    from: number,
    to: number,
    flip: number,
    low0: Uint32Array | null,
    bucket0: number,
    low1: Uint32Array | null,
    bucket1: number,
  ): boolean;
  /**
   * maskValues' loop, in place on the floats whose bits are bits[from, to); `ties` holds the running
   * tie counts [upTo, below] and is updated.
   */
  maskInPlace(
    bits: Int32Array,
    from: number,
    to: number,
    flip: number,
    upToKey: number,
    upToTiesTaken: number,
    hasBelow: boolean,
    belowKey: number,
    belowTiesTaken: number,
    ties: Float64Array,
  ): boolean;
}

/** One selector's pass-0 counts (MagnitudeRangeSelector.partialCounts). */
export interface SelectionCounts {
  readonly high: Uint32Array;
  /** Per cut: low-bit counts of buckets [start, start + buckets). */
  readonly windows: readonly {
    readonly start: number;
    readonly buckets: number;
    readonly counts: Uint32Array;
  }[];
}

/** MagnitudeRangeSelector.beginMask: one chunk's keep decisions as kernel parameters. */
export interface RankMaskParameters {
  readonly flip: number;
  readonly upToKey: number;
  readonly upToTiesTaken: number;
  readonly hasBelow: boolean;
  readonly belowKey: number;
  readonly belowTiesTaken: number;
  /** The running tie counts [upTo, below], advanced in place by the kernel. */
  readonly ties: Float64Array;
}

/** The bucket of a histogram holding 1-based rank `rank`, and how many counts lie before it. */
function bucketOfRank(histogram: Uint32Array, rank: number): { bucket: number; before: number } {
  let before = 0;
  let bucket = 0;
  while (bucket < histogram.length - 1 && before + histogram[bucket] < rank) before += histogram[bucket++];
  return { bucket, before };
}

/**
 * The first `count` elements of the order: every element whose order key is below `key`, plus the
 * first `tiesTaken` elements (lowest indices) whose order key equals it. `none` and `all` need no key.
 */
class OrderPrefix {
  readonly none: boolean;
  readonly all: boolean;
  /** Bucket of the high 16 bits holding rank `count`, and how many elements lie in lower buckets. */
  highBucket = 0;
  beforeHigh = 0;
  /** Low-bit counts of buckets [windowStart, windowStart + windowBuckets), gathered in pass 0. */
  windowStart = 0;
  windowBuckets = 0;
  window: Uint32Array | null = null;
  /** Low-bit counts of the bucket holding the cut; null once the key is known. */
  low: Uint32Array | null = null;
  resolved = false;
  key = 0;
  tiesTaken = 0;

  constructor(
    readonly count: number,
    total: number,
  ) {
    this.none = count <= 0;
    this.all = count >= total;
  }

  get selects(): boolean {
    return !this.none && !this.all;
  }

  resolveHigh(high: Uint32Array, counts: (length: number) => Uint32Array): void {
    const { bucket, before } = bucketOfRank(high, this.count);
    this.highBucket = bucket;
    this.beforeHigh = before;
    const offset = bucket - this.windowStart;
    if (this.window !== null && offset >= 0 && offset < this.windowBuckets) {
      this.low = this.window.subarray(offset * BUCKETS, (offset + 1) * BUCKETS);
      this.resolveLow();
    } else {
      this.low = counts(BUCKETS);
    }
    this.window = null;
  }

  resolveLow(): void {
    const { bucket, before } = bucketOfRank(this.low as Uint32Array, this.count - this.beforeHigh);
    this.key = (this.highBucket << 16) | bucket;
    this.tiesTaken = this.count - this.beforeHigh - before;
    this.low = null;
    this.resolved = true;
  }
}

/**
 * Positions [from, to) of the stable magnitude order, selected exactly over a tensor visited in
 * chunks, in order: `countHigh` on every chunk (pass 0), then, while `passes` is still 2, `countLow`
 * on every chunk (pass 1), then `maskValues` on every chunk, in order, as often as needed: elements
 * before a cut are counted by key, and the ties at a cut's key go to the lowest indices through a
 * running count that restarts at the chunk starting at element 0.
 *
 * Pass 1 is usually skipped: pass 0 keeps the keys of the first SELECTION_SAMPLE elements, guesses
 * from them the buckets where each cut falls, and from then on also counts the low 16 bits of the
 * elements in a window of buckets around each guess (replaying the sample into them). When pass 0
 * ends with every cut inside its window, the keys are known and `passes` drops to 1; a tensor whose
 * first elements mislead the guess gets the exact pass 1. A tensor no larger than the sample is
 * always selected in pass 0 alone.
 */
export class MagnitudeRangeSelector {
  private readonly upTo: OrderPrefix;
  private readonly below: OrderPrefix;
  private readonly flip: number;
  private readonly total: number;
  private readonly sampleSize: number;
  private high: Uint32Array | null = null;
  private sample: Int32Array | null = null;
  private sampled = 0;
  private seen = 0;
  private statisticsPasses: number;
  private stage = 0;
  private upToTies = 0;
  private belowTies = 0;
  private ones = new Float32Array(0);

  /**
   * `total` elements; positions outside [0, total] are clamped, as in magnitudeRankRangeMask.
   * `sampleSize` (default SELECTION_SAMPLE) is for tests.
   */
  private readonly ties = new Float64Array(2);

  constructor(
    total: number,
    from: number,
    to: number,
    order: RankOrder,
    sampleSize = SELECTION_SAMPLE,
    private readonly kernels?: SelectionKernels,
  ) {
    const start = Math.max(0, Math.min(total, from));
    const end = Math.max(start, Math.min(total, to));
    this.upTo = new OrderPrefix(end, total);
    this.below = new OrderPrefix(start, total);
    this.flip = flipOf(order);
    this.total = total;
    this.sampleSize = Math.min(total, sampleSize);
    this.statisticsPasses = end > start && (this.upTo.selects || this.below.selects) ? 2 : 0;
    if (this.statisticsPasses > 0) {
      this.high = this.counts(BUCKETS);
      const sample = this.counts(this.sampleSize);
      this.sample = new Int32Array(sample.buffer, sample.byteOffset, sample.length);
    }
  }

  /** A zeroed array of counts, where the kernels can reach it when there are kernels. */
  private counts(length: number): Uint32Array {
    return this.kernels ? this.kernels.counts(length) : new Uint32Array(length);
  }

  /**
   * Statistics passes needed before `maskValues`: 0 when no cut needs a key, else 2 until pass 0 has
   * seen every element, then 1 where pass 0 found the keys.
   */
  get passes(): number {
    return this.statisticsPasses;
  }

  /** Pass 0: histogram of the high 16 bits of the order keys of f32 bit patterns bits[from, to). */
  countHigh(bits: Int32Array, from: number, to: number): void {
    const high = this.high;
    if (high === null || this.stage !== 0) return;
    const flip = this.flip;
    let i = from;
    const sample = this.sample;
    if (sample !== null) {
      const sampleEnd = Math.min(to, from + (sample.length - this.sampled));
      let k = this.sampled;
      if (this.kernels?.countSampled(bits, i, sampleEnd, flip, high, sample, k)) {
        k += sampleEnd - i;
        i = sampleEnd;
      }
      for (; i < sampleEnd; i++, k++) {
        const abs = bits[i] & 0x7fffffff;
        const key = (abs > 0x7f800000 ? NAN_MAGNITUDE_KEY : abs) ^ flip;
        high[key >>> 16]++;
        sample[k] = key;
      }
      this.sampled = k;
      if (k === sample.length) this.openWindows();
    }
    if (i < to) this.countWindowed(bits, i, to);
    this.seen += to - from;
    if (this.seen >= this.total) this.endPass0();
  }

  /** Pass 1: histograms of the low 16 bits within the buckets that hold the cuts pass 0 left open. */
  countLow(bits: Int32Array, from: number, to: number): void {
    if (this.stage !== 1) return;
    const flip = this.flip;
    const upToLow = this.upTo.low;
    const belowLow = this.below.low;
    const upToBucket = upToLow === null ? -1 : this.upTo.highBucket;
    const belowBucket = belowLow === null ? -1 : this.below.highBucket;
    if (this.kernels?.countLow(bits, from, to, flip, upToLow, upToBucket, belowLow, belowBucket)) return;
    for (let i = from; i < to; i++) {
      const abs = bits[i] & 0x7fffffff;
      const key = (abs > 0x7f800000 ? NAN_MAGNITUDE_KEY : abs) ^ flip;
      const bucket = key >>> 16;
      if (bucket === upToBucket) (upToLow as Uint32Array)[key & 0xffff]++;
      if (bucket === belowBucket) (belowLow as Uint32Array)[key & 0xffff]++;
    }
  }

  /** Pass 0 after the sample: the high histogram, plus low bits of the keys inside the windows. */
  private countWindowed(bits: Int32Array, from: number, to: number): void {
    const high = this.high as Uint32Array;
    const flip = this.flip;
    const upTo = this.upTo;
    const below = this.below;
    const upToWindow = upTo.window ?? new Uint32Array(0);
    const belowWindow = below.window ?? new Uint32Array(0);
    const upToStart = upTo.windowStart;
    const upToBuckets = upTo.windowBuckets;
    const belowStart = below.windowStart;
    const belowBuckets = below.windowBuckets;
    const windows = [upToWindow, upToStart, upToBuckets, belowWindow, belowStart, belowBuckets] as const;
    if (this.kernels?.countWindowed(bits, from, to, flip, high, windows)) return;
    for (let i = from; i < to; i++) {
      const abs = bits[i] & 0x7fffffff;
      const key = (abs > 0x7f800000 ? NAN_MAGNITUDE_KEY : abs) ^ flip;
      const bucket = key >>> 16;
      high[bucket]++;
      // Unsigned offsets: a bucket below the window start wraps to a large number.
      const upToOffset = (bucket - upToStart) >>> 0;
      if (upToOffset < upToBuckets) upToWindow[(upToOffset << 16) | (key & 0xffff)]++;
      const belowOffset = (bucket - belowStart) >>> 0;
      if (belowOffset < belowBuckets) belowWindow[(belowOffset << 16) | (key & 0xffff)]++;
    }
  }

  /** Guesses each cut's bucket from the sample, opens a window around it, and replays the sample. */
  private openWindows(): void {
    const sample = this.sample as Int32Array;
    this.sample = null;
    if (this.sampled >= this.total) {
      // The sample is the whole tensor: exact windows of one bucket each, found at the end of pass 0.
      this.finishFromSample(sample);
      return;
    }
    const histogram = this.counts(BUCKETS);
    if (!this.kernels?.keyHistogram(sample, histogram)) {
      for (let k = 0; k < sample.length; k++) histogram[sample[k] >>> 16]++;
    }
    const scale = sample.length / this.total;
    const margin = Math.ceil(WINDOW_MARGIN * sample.length);
    for (const cut of this.cuts()) {
      const guess = cut.count * scale;
      const first = bucketOfRank(histogram, Math.max(1, Math.floor(guess - margin))).bucket;
      const last = bucketOfRank(histogram, Math.min(sample.length, Math.ceil(guess + margin))).bucket;
      const center = bucketOfRank(histogram, Math.max(1, Math.round(guess))).bucket;
      const startBucket = Math.max(first, center - (WINDOW_MAX_BUCKETS >> 1));
      cut.windowStart = startBucket;
      cut.windowBuckets = Math.min(last - startBucket + 1, WINDOW_MAX_BUCKETS);
      cut.window = this.counts(cut.windowBuckets * BUCKETS);
    }
    this.replay(sample);
  }

  /** Counts the low bits of sampled keys into the cuts' windows. */
  private replay(sample: Int32Array): void {
    for (const cut of this.cuts()) {
      const window = cut.window as Uint32Array;
      if (this.kernels?.replay(sample, window, cut.windowStart, cut.windowBuckets)) continue;
      for (let k = 0; k < sample.length; k++) {
        const key = sample[k];
        const offset = (key >>> 16) - cut.windowStart;
        if (offset >= 0 && offset < cut.windowBuckets) window[(offset << 16) | (key & 0xffff)]++;
      }
    }
  }

  /** Pass 0 saw a tensor no larger than the sample: every cut's bucket is known, so count it exactly. */
  private finishFromSample(sample: Int32Array): void {
    const high = this.high as Uint32Array;
    for (const cut of this.cuts()) {
      cut.windowStart = bucketOfRank(high, cut.count).bucket;
      cut.windowBuckets = 1;
      cut.window = this.counts(BUCKETS);
    }
    this.replay(sample);
  }

  private endPass0(): void {
    // A sample that never filled (an element count below the total) still holds every key seen.
    if (this.sample !== null) {
      const sample = this.sample.subarray(0, this.sampled);
      this.sample = null;
      this.finishFromSample(sample);
    }
    const cuts = this.cuts();
    for (const cut of cuts) cut.resolveHigh(this.high as Uint32Array, (length) => this.counts(length));
    this.high = null;
    if (cuts.every((cut) => cut.resolved)) {
      this.statisticsPasses = 1;
      this.stage = 2;
    } else {
      this.stage = 1;
    }
  }

  /**
   * values[valuesOffset + j] = values[valuesOffset + j] * (1 if element bits[from + j] is selected, else
   * 0), for j in [0, to - from): torch's `x * mask` (a dropped NaN or ±Inf becomes NaN). `start` is the
   * tensor index of bits[from]; a chunk with start 0 restarts the tie counts. `values` may be the
   * very floats whose bit patterns `bits` holds.
   */
  maskValues(
    bits: Int32Array,
    from: number,
    to: number,
    start: number,
    values: Float32Array,
    valuesOffset = 0,
  ): void {
    if (this.stage === 1) {
      for (const cut of this.cuts()) if (!cut.resolved) cut.resolveLow();
      this.stage = 2;
    }
    if (start === 0) {
      this.upToTies = 0;
      this.belowTies = 0;
    }
    const upTo = this.upTo;
    const below = this.below;
    if (upTo.none || upTo.count === below.count) {
      for (let j = valuesOffset; j < valuesOffset + (to - from); j++) values[j] = values[j] * 0;
      return;
    }
    // Order keys lie in [0, 0x7fffffff]. `all` becomes "below 0x7fffffff, and every tie at it";
    // `none` becomes "below 0, and no tie at it". Then (key - cut) >>> 31 is 1 iff key < cut: no
    // data-dependent branch but the rare tie, which matters on the ~50% keep/drop decisions.
    const flip = this.flip;
    const upToKey = upTo.all ? 0x7fffffff : upTo.key;
    const upToTiesTaken = upTo.all ? Number.POSITIVE_INFINITY : upTo.tiesTaken;
    const belowKey = below.none ? 0 : below.key;
    const belowTiesTaken = below.none ? 0 : below.tiesTaken;
    const inPlace =
      values.buffer === bits.buffer && values.byteOffset + valuesOffset * 4 === bits.byteOffset + from * 4;
    if (inPlace && this.kernels) {
      const ties = this.ties;
      ties[0] = this.upToTies;
      ties[1] = this.belowTies;
      const hasBelow = !below.none;
      if (
        this.kernels.maskInPlace(
          bits,
          from,
          to,
          flip,
          upToKey,
          upToTiesTaken,
          hasBelow,
          belowKey,
          belowTiesTaken,
          ties,
        )
      ) {
        this.upToTies = ties[0];
        this.belowTies = ties[1];
        return;
      }
    }
    let upToTies = this.upToTies;
    let belowTies = this.belowTies;
    if (below.none) {
      // The k first of the order (TIES): the same loop without the lower cut.
      for (let i = from, j = valuesOffset; i < to; i++, j++) {
        const abs = bits[i] & 0x7fffffff;
        const key = (abs > 0x7f800000 ? NAN_MAGNITUDE_KEY : abs) ^ flip;
        let inUpTo = (key - upToKey) >>> 31;
        if (key === upToKey && upToTies < upToTiesTaken) {
          upToTies++;
          inUpTo = 1;
        }
        values[j] = values[j] * inUpTo;
      }
      this.upToTies = upToTies;
      return;
    }
    for (let i = from, j = valuesOffset; i < to; i++, j++) {
      const abs = bits[i] & 0x7fffffff;
      const key = (abs > 0x7f800000 ? NAN_MAGNITUDE_KEY : abs) ^ flip;
      let inUpTo = (key - upToKey) >>> 31;
      if (key === upToKey && upToTies < upToTiesTaken) {
        upToTies++;
        inUpTo = 1;
      }
      let inBelow = (key - belowKey) >>> 31;
      if (key === belowKey && belowTies < belowTiesTaken) {
        belowTies++;
        inBelow = 1;
      }
      values[j] = values[j] * (inUpTo & (inBelow ^ 1));
    }
    this.upToTies = upToTies;
    this.belowTies = belowTies;
  }

  /**
   * `maskValues`' decisions for the chunk starting at tensor element `start`, as parameters for a
   * kernel that fuses them with the task vector and the mix (the WebAssembly kernels): keep element
   * i iff its key is below `upToKey`, or ties it while fewer than `upToTiesTaken` ties were taken,
   * and not so for the lower cut when `hasBelow`. The running tie counts are `ties` ([upTo, below]):
   * the kernel advances them in place, then `endMask` takes them back. A chunk with start 0 restarts
   * them, as in `maskValues`.
   */
  beginMask(start: number): RankMaskParameters {
    if (this.stage === 1) {
      for (const cut of this.cuts()) if (!cut.resolved) cut.resolveLow();
      this.stage = 2;
    }
    if (start === 0) {
      this.upToTies = 0;
      this.belowTies = 0;
    }
    this.ties[0] = this.upToTies;
    this.ties[1] = this.belowTies;
    const { upTo, below } = this;
    if (upTo.none || upTo.count === below.count) {
      // Nothing kept: no key is below 0, and no tie at it is taken.
      return {
        flip: this.flip,
        upToKey: 0,
        upToTiesTaken: 0,
        hasBelow: false,
        belowKey: 0,
        belowTiesTaken: 0,
        ties: this.ties,
      };
    }
    return {
      flip: this.flip,
      upToKey: upTo.all ? 0x7fffffff : upTo.key,
      upToTiesTaken: upTo.all ? Number.POSITIVE_INFINITY : upTo.tiesTaken,
      hasBelow: !below.none,
      belowKey: below.none ? 0 : below.key,
      belowTiesTaken: below.none ? 0 : below.tiesTaken,
      ties: this.ties,
    };
  }

  /** The tie counts a fused kernel advanced in `beginMask`'s `ties`. */
  endMask(): void {
    this.upToTies = this.ties[0];
    this.belowTies = this.ties[1];
  }

  // -------------------------------------------------------------------------------------------
  // Split statistics: the tensor's chunks shared among threads, each with its own selector over
  // the whole tensor's `total` that sees only its chunks in pass 0 (and pass 1); the counts are
  // integers, so their sums are the same in any order, and every selector resolves the same keys.

  /**
   * This selector's counts after its chunks of pass 0: the high histogram, and for each cut (in
   * the order of `cuts`) the window of low-bit counts it gathered. A sample that never filled
   * leaves no window (its keys are in the high histogram already).
   */
  partialCounts(): SelectionCounts {
    if (this.sample !== null) this.sample = null;
    return {
      high: this.high as Uint32Array,
      windows: this.cuts().map((cut) => ({
        start: cut.windowStart,
        buckets: cut.window === null ? 0 : cut.windowBuckets,
        counts: cut.window ?? new Uint32Array(0),
      })),
    };
  }

  /**
   * Pass 0's end from every selector's `partialCounts` (this one's among them): the high histograms
   * summed find each cut's bucket; where every window holds it, their low counts summed find the
   * key. `passes` then drops to 1, or stays 2 when a cut needs pass 1 (`lowCounts`, `mergeLow`).
   */
  mergeCounts(parts: readonly SelectionCounts[]): void {
    const high = this.counts(BUCKETS);
    for (const part of parts) for (let b = 0; b < BUCKETS; b++) high[b] += part.high[b];
    const cuts = this.cuts();
    cuts.forEach((cut, c) => {
      const { bucket, before } = bucketOfRank(high, cut.count);
      cut.highBucket = bucket;
      cut.beforeHigh = before;
      cut.window = null;
      const held = parts.every((part) => {
        const w = part.windows[c];
        return bucket >= w.start && bucket < w.start + w.buckets;
      });
      cut.low = this.counts(BUCKETS);
      if (!held) return;
      const low = cut.low;
      for (const part of parts) {
        const w = part.windows[c];
        const offset = (bucket - w.start) * BUCKETS;
        for (let j = 0; j < BUCKETS; j++) low[j] += w.counts[offset + j];
      }
      cut.resolveLow();
    });
    this.high = null;
    if (cuts.every((cut) => cut.resolved)) {
      this.statisticsPasses = 1;
      this.stage = 2;
    } else {
      this.stage = 1;
    }
  }

  /** Pass 1's low-bit counts of the cuts still open (null where a cut is resolved), in `cuts` order. */
  lowCounts(): (Uint32Array | null)[] {
    return this.cuts().map((cut) => (cut.resolved ? null : cut.low));
  }

  /** Pass 1's end: every selector's `lowCounts` summed (this one's among them); the keys follow. */
  mergeLow(parts: readonly (readonly (Uint32Array | null)[])[]): void {
    this.cuts().forEach((cut, c) => {
      if (cut.resolved) return;
      const sum = this.counts(BUCKETS);
      for (const part of parts) {
        const low = part[c] as Uint32Array;
        for (let j = 0; j < BUCKETS; j++) sum[j] += low[j];
      }
      cut.low = sum;
      cut.resolveLow();
    });
    this.stage = 2;
  }

  /**
   * The running tie counts for a chunk that starts after `before` ([upTo, below]) elements tie
   * at the cuts' keys in the chunks before it (those of other threads included): `maskValues` and
   * `beginMask` then decide that chunk as if every chunk before it had been masked here.
   */
  setTiesBefore(before: readonly [number, number]): void {
    this.upToTies = Math.min(before[0], this.upTo.all ? Number.POSITIVE_INFINITY : this.upTo.tiesTaken);
    this.belowTies = Math.min(before[1], this.below.none ? 0 : this.below.tiesTaken);
  }

  /**
   * mask[maskOffset + j] = 1 iff element bits[from + j] is selected, 0 otherwise: `maskValues` on
   * ones, for callers that want the decisions rather than masked values (same tie bookkeeping).
   */
  selectMask(
    bits: Int32Array,
    from: number,
    to: number,
    start: number,
    mask: Uint8Array,
    maskOffset = 0,
  ): void {
    if (this.ones.length < to - from) this.ones = new Float32Array(to - from);
    const ones = this.ones.subarray(0, to - from).fill(1);
    this.maskValues(bits, from, to, start, ones);
    for (let j = 0; j < ones.length; j++) mask[maskOffset + j] = ones[j];
  }

  private cuts(): OrderPrefix[] {
    return [this.upTo, this.below].filter((cut) => cut.selects);
  }
}

/**
 * mask[i] = 1 iff element i's 0-based position in the stable magnitude order lies in [from, to);
 * positions outside [0, n] are clamped. With 'descending', [0, k) are the k largest magnitudes, ties
 * to the lowest indices; with 'ascending', [0, k) are the k smallest, ties to the lowest indices.
 */
export function magnitudeRankRangeMask(
  values: Float32Array,
  from: number,
  to: number,
  order: RankOrder,
): Uint8Array {
  const n = values.length;
  const bits = new Int32Array(values.buffer, values.byteOffset, n);
  const selector = new MagnitudeRangeSelector(n, from, to, order);
  for (let pass = 0; pass < selector.passes; pass++) {
    if (pass === 0) selector.countHigh(bits, 0, n);
    else selector.countLow(bits, 0, n);
  }
  const mask = new Uint8Array(n);
  selector.selectMask(bits, 0, n, 0, mask);
  return mask;
}

/** Largest row length whose (key, position) pairs pack exactly into a double: key * 2^21 + j < 2^53. */
export const PACKED_SORT_MAX = 1 << 21;

/**
 * 0-based ascending ranks of |x| within one strided fiber: element j is x[offset + j * stride] for
 * j in [0, count); ranks[j] is its position in the stable ascending magnitude order (equal
 * magnitudes: lower j first). Used by DELLA, which ranks magnitudes within each row.
 */
export function fiberMagnitudeRanks(
  values: Float32Array,
  offset: number,
  count: number,
  stride: number,
  ranks: Uint32Array,
): void {
  const bits = new Int32Array(values.buffer, values.byteOffset, values.length);
  fiberRanksFromBits(
    bits,
    offset,
    count,
    stride,
    ranks,
    new Float64Array(count <= PACKED_SORT_MAX ? count : 0),
  );
}

/**
 * fiberMagnitudeRanks on the f32 bit patterns of the values; `packed` is sort scratch of at least
 * `count` entries when count <= PACKED_SORT_MAX.
 */
export function fiberRanksFromBits(
  bits: Int32Array,
  offset: number,
  count: number,
  stride: number,
  ranks: Uint32Array,
  packed: Float64Array,
): void {
  if (count <= PACKED_SORT_MAX) {
    const keys = packed.length === count ? packed : packed.subarray(0, count);
    for (let j = 0; j < count; j++) {
      keys[j] = magnitudeKey(bits[offset + j * stride]) * PACKED_SORT_MAX + j;
    }
    keys.sort();
    for (let position = 0; position < count; position++) {
      ranks[keys[position] % PACKED_SORT_MAX] = position;
    }
    return;
  }
  const order = new Uint32Array(count);
  const keys = new Uint32Array(count);
  for (let j = 0; j < count; j++) {
    order[j] = j;
    keys[j] = magnitudeKey(bits[offset + j * stride]);
  }
  order.sort((a, b) => keys[a] - keys[b] || a - b);
  for (let position = 0; position < count; position++) ranks[order[position]] = position;
}
