/**
 * Statistics of task vectors (a model's weights minus the base's), accumulated over chunks of a
 * tensor so that no tensor has to be held whole: norms, sign conflicts between models, and the share
 * of a task vector that TIES' magnitude trimming keeps. Sums are f64 in element order; the task
 * vector itself is f32, as the merge methods compute it.
 */
import { MagnitudeRangeSelector } from '../methods/rank-select';

/** model - base, elementwise, rounded to f32 like the merge methods' task vectors. */
export function taskVector(model: Float32Array, base: Float32Array, out?: Float32Array): Float32Array {
  if (model.length !== base.length) {
    throw new RangeError(`task vector of ${model.length} values against a base of ${base.length}`);
  }
  const delta = out ?? new Float32Array(model.length);
  for (let i = 0; i < model.length; i++) delta[i] = model[i] - base[i];
  return delta;
}

/** Squared Frobenius norms of a task vector and of the base over the same elements. */
export interface NormSums {
  delta2: number;
  base2: number;
  elements: number;
}

export function emptyNormSums(): NormSums {
  return { delta2: 0, base2: 0, elements: 0 };
}

export function addNormSums(into: NormSums, base: Float32Array, delta: Float32Array): void {
  let d2 = 0;
  let b2 = 0;
  for (let i = 0; i < delta.length; i++) {
    d2 += delta[i] * delta[i];
    b2 += base[i] * base[i];
  }
  into.delta2 += d2;
  into.base2 += b2;
  into.elements += delta.length;
}

export function mergeNormSums(into: NormSums, from: NormSums): void {
  into.delta2 += from.delta2;
  into.base2 += from.base2;
  into.elements += from.elements;
}

/**
 * ||theta_m - theta_base||_F / ||theta_base||_F. A zero base with a zero delta gives 0 (nothing
 * moved); a zero base with a non-zero delta gives Infinity. NaN when there are no elements.
 */
export function relativeNorm(sums: NormSums): number {
  if (sums.elements === 0) return Number.NaN;
  if (sums.base2 === 0) return sums.delta2 === 0 ? 0 : Number.POSITIVE_INFINITY;
  return Math.sqrt(sums.delta2 / sums.base2);
}

/**
 * Sign agreement of several task vectors over the same elements. A coordinate is contested when at
 * least two task vectors are non-zero there, and in conflict when those non-zero values have both
 * signs (a NaN has no sign and is left out).
 */
export interface SignCounts {
  elements: number;
  contested: number;
  conflicts: number;
}

export function emptySignCounts(): SignCounts {
  return { elements: 0, contested: 0, conflicts: 0 };
}

export function addSignConflicts(into: SignCounts, deltas: readonly Float32Array[]): void {
  const n = deltas[0]?.length ?? 0;
  for (const d of deltas) {
    if (d.length !== n) throw new RangeError(`sign conflicts of task vectors of ${d.length} and ${n} values`);
  }
  let contested = 0;
  let conflicts = 0;
  for (let i = 0; i < n; i++) {
    let positive = 0;
    let negative = 0;
    for (const d of deltas) {
      const v = d[i];
      if (v > 0) positive++;
      else if (v < 0) negative++;
    }
    if (positive + negative >= 2) contested++;
    if (positive > 0 && negative > 0) conflicts++;
  }
  into.elements += n;
  into.contested += contested;
  into.conflicts += conflicts;
}

export function mergeSignCounts(into: SignCounts, from: SignCounts): void {
  into.elements += from.elements;
  into.contested += from.contested;
  into.conflicts += from.conflicts;
}

/** Share of all coordinates where the task vectors disagree in sign; NaN when there are none. */
export function conflictFraction(counts: SignCounts): number {
  return counts.elements === 0 ? Number.NaN : counts.conflicts / counts.elements;
}

/** How much of a task vector TIES keeps: entries, L1 mass and energy (sum of squares). */
export interface KeptMass {
  elements: number;
  kept: number;
  l1: number;
  keptL1: number;
  energy: number;
  keptEnergy: number;
}

export function emptyKeptMass(): KeptMass {
  return { elements: 0, kept: 0, l1: 0, keptL1: 0, energy: 0, keptEnergy: 0 };
}

export function mergeKeptMass(into: KeptMass, from: KeptMass): void {
  into.elements += from.elements;
  into.kept += from.kept;
  into.l1 += from.l1;
  into.keptL1 += from.keptL1;
  into.energy += from.energy;
  into.keptEnergy += from.keptEnergy;
}

/** Shares of entries, L1 mass and energy kept; NaN where the whole is zero. */
export function keptShares(mass: KeptMass): { entries: number; l1: number; energy: number } {
  const share = (part: number, whole: number) => (whole > 0 ? part / whole : Number.NaN);
  return {
    entries: share(mass.kept, mass.elements),
    l1: share(mass.keptL1, mass.l1),
    energy: share(mass.keptEnergy, mass.energy),
  };
}

/**
 * Entries TIES keeps of a tensor of n elements at `density`: int(density * n) as mergekit computes it,
 * all of them at density >= 1, none when that is below one (where a merge would stop with an error).
 */
export function tiesKeepCount(n: number, density: number): number {
  if (density >= 1) return n;
  return Math.max(0, Math.trunc(density * n));
}

/**
 * TIES' trimming of one task vector measured over chunks, with the merge methods' exact selector
 * (the floor(density * n) largest magnitudes, ties to the lowest index, NaN counted as largest):
 * call `count(pass, chunk)` on every chunk in order for each pass < `passes`, then `measure(chunk,
 * start)` on every chunk in order. Chunks are task-vector values; elements [start, start + length).
 */
export class TiesKeptMass {
  readonly passes: number;
  readonly keep: number;
  private readonly selector: MagnitudeRangeSelector;
  private readonly sums = emptyKeptMass();
  private mask = new Uint8Array(0);

  constructor(
    readonly elements: number,
    readonly density: number,
  ) {
    this.keep = tiesKeepCount(elements, density);
    this.selector = new MagnitudeRangeSelector(elements, 0, this.keep, 'descending');
    this.passes = this.selector.passes;
  }

  count(pass: number, delta: Float32Array): void {
    const bits = bitsOf(delta);
    if (pass === 0) this.selector.countHigh(bits, 0, delta.length);
    else this.selector.countLow(bits, 0, delta.length);
  }

  measure(delta: Float32Array, start: number): void {
    if (this.mask.length < delta.length) this.mask = new Uint8Array(delta.length);
    const mask = this.mask;
    this.selector.selectMask(bitsOf(delta), 0, delta.length, start, mask);
    let kept = 0;
    let l1 = 0;
    let keptL1 = 0;
    let energy = 0;
    let keptEnergy = 0;
    for (let i = 0; i < delta.length; i++) {
      const a = Math.abs(delta[i]);
      const e = a * a;
      l1 += a;
      energy += e;
      if (mask[i]) {
        kept++;
        keptL1 += a;
        keptEnergy += e;
      }
    }
    const s = this.sums;
    s.elements += delta.length;
    s.kept += kept;
    s.l1 += l1;
    s.keptL1 += keptL1;
    s.energy += energy;
    s.keptEnergy += keptEnergy;
  }

  result(): KeptMass {
    return { ...this.sums };
  }
}

/** TIES' kept mass of a whole task vector held in memory. */
export function tiesKeptMass(delta: Float32Array, density: number): KeptMass {
  const ties = new TiesKeptMass(delta.length, density);
  for (let pass = 0; pass < ties.passes; pass++) ties.count(pass, delta);
  ties.measure(delta, 0);
  return ties.result();
}

function bitsOf(values: Float32Array): Int32Array {
  return new Int32Array(values.buffer, values.byteOffset, values.length);
}
