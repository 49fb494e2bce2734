/** The sampling specification of src/model/sampling.ts, on crafted logits. */
import { describe, expect, it } from 'vitest';
import {
  argmax,
  SamplingOptionsError,
  sampleStep,
  sampleToken,
  topLogprobs,
  validateSampling,
} from '../../src/model/sampling';
import {
  philox4x32,
  RNG_STREAM_SAMPLING,
  samplingUniform,
  uniformFromWord,
} from '../../src/random/counter-rng';

/** Logits whose softmax is exactly `probs` (up to f32 rounding of the logs). */
function logitsOf(probs: number[]): Float32Array {
  return Float32Array.from(probs, (p) => Math.log(p));
}

/** How often each token is chosen over `positions` sampling positions. */
function frequencies(
  logits: Float32Array,
  temperature: number,
  topP: number,
  seed: number,
  positions: number,
) {
  const counts = new Array<number>(logits.length).fill(0);
  for (let pos = 0; pos < positions; pos++) counts[sampleToken(logits, { temperature, topP, seed }, pos)]++;
  return counts.map((c) => c / positions);
}

describe('samplingUniform', () => {
  it('is Philox4x32-10 of counter [position, 0, RNG_STREAM_SAMPLING, position_hi] under key [seed, 0]', () => {
    expect(RNG_STREAM_SAMPLING).toBe(2);
    for (const [seed, pos] of [
      [0, 0],
      [42, 7],
      [0xffffffff, 123456],
      [5, 2 ** 32 + 3],
    ]) {
      const word = philox4x32([pos >>> 0, 0, 2, Math.floor(pos / 2 ** 32)], [seed, 0])[0];
      expect(samplingUniform(seed, pos)).toBe(uniformFromWord(word));
    }
  });

  it('is in [0, 1) and differs between seeds and positions', () => {
    const values = new Set<number>();
    for (let pos = 0; pos < 200; pos++) {
      const u = samplingUniform(1, pos);
      expect(u).toBeGreaterThanOrEqual(0);
      expect(u).toBeLessThan(1);
      values.add(u);
    }
    expect(values.size).toBe(200);
    expect(samplingUniform(1, 5)).not.toBe(samplingUniform(2, 5));
  });
});

describe('greedy', () => {
  it('takes the argmax, the lowest id on ties, and never a NaN', () => {
    expect(argmax(Float32Array.from([1, 3, 2, 3]))).toBe(1);
    expect(argmax(Float32Array.from([Number.NaN, -1, Number.NaN, 5, 5]))).toBe(3);
    expect(argmax(Float32Array.from([Number.NEGATIVE_INFINITY, Number.NEGATIVE_INFINITY]))).toBe(0);
    // temperature 0 ignores top-p and the seed.
    const logits = Float32Array.from([0.1, 0.9, 0.9, 0.2]);
    for (let pos = 0; pos < 20; pos++)
      expect(sampleToken(logits, { temperature: 0, topP: 0.1, seed: pos }, pos)).toBe(1);
  });
});

describe('temperature and top-p', () => {
  const probs = [0.05, 0.5, 0.15, 0.3];
  const logits = logitsOf(probs);

  it('follows the spec step by step: nucleus by descending probability, r = u * mass, first running sum above r', () => {
    // topP 0.7: tokens 1 (0.5) then 3 (0.3) reach 0.8 >= 0.7; the crossing token is included.
    for (let pos = 0; pos < 500; pos++) {
      const u = samplingUniform(9, pos);
      const mass = 0.5 + 0.3;
      const expected = u * mass < 0.5 ? 1 : 3;
      expect(sampleToken(logits, { temperature: 1, topP: 0.7, seed: 9 }, pos)).toBe(expected);
    }
  });

  it('keeps only the nucleus, with probabilities renormalized inside it', () => {
    const f = frequencies(logits, 1, 0.7, 3, 20000);
    expect(f[0]).toBe(0);
    expect(f[2]).toBe(0);
    expect(f[1]).toBeCloseTo(0.5 / 0.8, 1);
    expect(f[3]).toBeCloseTo(0.3 / 0.8, 1);
    // A top-p of exactly the top token's mass keeps it alone.
    expect(frequencies(logits, 1, 0.5, 3, 200)[1]).toBe(1);
  });

  it('samples softmax(logits / T): T = 1 keeps the distribution, T = 2 flattens it to p^(1/2)', () => {
    const n = 40000;
    const f1 = frequencies(logits, 1, 1, 11, n);
    for (let i = 0; i < probs.length; i++) expect(Math.abs(f1[i] - probs[i])).toBeLessThan(0.01);
    const roots = probs.map(Math.sqrt);
    const z = roots.reduce((a, b) => a + b, 0);
    const f2 = frequencies(logits, 2, 1, 11, n);
    for (let i = 0; i < probs.length; i++) expect(Math.abs(f2[i] - roots[i] / z)).toBeLessThan(0.01);
  });

  it('breaks probability ties in the nucleus by the lower id', () => {
    // Tokens 2 and 0 tie at 0.4; topP 0.3 takes only the first of them in nucleus order: token 0.
    const tied = Float32Array.from([1, 0, 1, Math.log(0.5)]);
    for (let pos = 0; pos < 100; pos++)
      expect(sampleToken(tied, { temperature: 1, topP: 0.3, seed: 1 }, pos)).toBe(0);
  });

  it('never picks a token of zero probability or a NaN logit', () => {
    const logits2 = Float32Array.from([0, Number.NEGATIVE_INFINITY, Number.NaN, 0]);
    const f = frequencies(logits2, 1, 1, 4, 2000);
    expect(f[1]).toBe(0);
    expect(f[2]).toBe(0);
    expect(f[0] + f[3]).toBe(1);
  });

  it('is reproducible with a seed and depends on it', () => {
    const wide = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i) * 2);
    const run = (seed: number) =>
      Array.from({ length: 64 }, (_, pos) => sampleToken(wide, { temperature: 0.8, topP: 0.95, seed }, pos));
    expect(run(7)).toEqual(run(7));
    expect(run(7)).not.toEqual(run(8));
  });
});

describe('top log-probabilities', () => {
  it('are log_softmax of the raw logits, most likely first, ties by lower id', () => {
    const logits = Float32Array.from([2, 5, -1, 5, 0.5, 3]);
    let z = 0;
    for (const l of logits) z += Math.exp(l);
    const top = topLogprobs(logits, 4);
    expect(top.map(([id]) => id)).toEqual([1, 3, 5, 0]);
    for (const [id, lp] of top) expect(lp).toBeCloseTo(logits[id] - Math.log(z), 12);
    expect(topLogprobs(logits, 10).length).toBe(6);
    // Temperature does not change them; the sampled token is reported beside them.
    const step = sampleStep(logits, { temperature: 3, topP: 1, seed: 0, topLogprobs: 2 }, 0);
    expect(step.topLogprobs).toEqual(top.slice(0, 2));
    expect(step.token).toBeGreaterThanOrEqual(0);
  });
});

describe('validation', () => {
  it('refuses options outside the spec with a named error', () => {
    const bad = [
      { temperature: -1, topP: 1, seed: 0 },
      { temperature: Number.NaN, topP: 1, seed: 0 },
      { temperature: 1, topP: 0, seed: 0 },
      { temperature: 1, topP: 1.5, seed: 0 },
      { temperature: 1, topP: 1, seed: -1 },
      { temperature: 1, topP: 1, seed: 2 ** 32 },
      { temperature: 1, topP: 1, seed: 1.5 },
    ];
    for (const options of bad) expect(() => validateSampling(options)).toThrow(SamplingOptionsError);
    expect(() => validateSampling({ temperature: 0.7, topP: 0.9, seed: 123 })).not.toThrow();
  });
});
