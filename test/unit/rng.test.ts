import { describe, expect, it } from 'vitest';
import {
  fillUniform,
  fnv1a32,
  mulhi32,
  mullo32,
  PHILOX_M0,
  PHILOX_M1,
  philox4x32,
  RNG_STREAM_GAUSSIAN,
  RNG_STREAM_SPARSIFY,
  uniformAt,
  uniformFromWord,
} from '../../src/random/counter-rng';

describe('philox4x32', () => {
  // Random123 kat_vectors, "philox4x32 10" lines: counter[4] key[2] -> output[4].
  const KNOWN_ANSWERS: Array<[[number, number, number, number], [number, number], number[]]> = [
    [
      [0, 0, 0, 0],
      [0, 0],
      [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
    ],
    [
      [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
      [0xffffffff, 0xffffffff],
      [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
    ],
    [
      [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
      [0xa4093822, 0x299f31d0],
      [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    ],
  ];

  it.each(KNOWN_ANSWERS)('matches the Random123 known answer for counter %j key %j', (c, k, expected) => {
    expect(philox4x32(c, k)).toEqual(expected);
  });

  it('computes the high and low product words exactly with 16-bit limbs', () => {
    let a = 0x12345678;
    let b = 0x9abcdef1;
    const operands: Array<[number, number]> = [
      [0, 0],
      [0xffffffff, 0xffffffff],
      [PHILOX_M0, 0xffffffff],
      [PHILOX_M1, 1],
      [0x10000, 0x10000],
    ];
    for (let i = 0; i < 2000; i++) {
      a = Math.imul(a ^ (a >>> 15), 0x2c1b3c6d) >>> 0;
      b = Math.imul(b ^ (b >>> 13), 0x297a2d39) >>> 0;
      operands.push([a, b]);
    }
    for (const [x, y] of operands) {
      const product = BigInt(x) * BigInt(y);
      expect(mulhi32(x, y)).toBe(Number(product >> 32n));
      expect(mullo32(x, y)).toBe(Number(product & 0xffffffffn));
    }
  });
});

describe('fnv1a32', () => {
  it('matches the FNV-1a reference values', () => {
    expect(fnv1a32('')).toBe(0x811c9dc5);
    expect(fnv1a32('a')).toBe(0xe40c292c);
    expect(fnv1a32('foobar')).toBe(0xbf9cf968);
  });

  it('hashes the UTF-8 bytes, not UTF-16 code units', () => {
    // "é" is C3 A9 in UTF-8.
    let hash = 0x811c9dc5;
    for (const byte of [0xc3, 0xa9]) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
    expect(fnv1a32('é')).toBe(hash);
  });
});

describe('uniforms', () => {
  it('maps the top 24 bits of word 0 onto [0, 1) exactly', () => {
    expect(uniformFromWord(0)).toBe(0);
    expect(uniformFromWord(0xff)).toBe(0);
    expect(uniformFromWord(0x100)).toBe(2 ** -24);
    expect(uniformFromWord(0xffffffff)).toBe(1 - 2 ** -24);
    expect(Math.fround(uniformFromWord(0xabcdef12))).toBe(uniformFromWord(0xabcdef12));
  });

  it('builds the counter and key as documented', () => {
    const seed = 42;
    const name = 'model.layers.0.mlp.up_proj.weight';
    const block = philox4x32([5, 2, RNG_STREAM_SPARSIFY, 0], [seed, fnv1a32(name)]);
    expect(uniformAt(seed, name, 2, RNG_STREAM_SPARSIFY, 5)).toBe(((block[0] >>> 8) * 2 ** -24) as number);
    const high = philox4x32([3, 1, RNG_STREAM_GAUSSIAN, 1], [seed, fnv1a32(name)]);
    expect(uniformAt(seed, name, 1, RNG_STREAM_GAUSSIAN, 2 ** 32 + 3)).toBe((high[0] >>> 8) * 2 ** -24);
    // The seed is taken modulo 2^32.
    expect(uniformAt(-1, name, 0, 0, 7)).toBe(uniformAt(0xffffffff, name, 0, 0, 7));
  });

  it('fills in bulk exactly what uniformAt gives, across the 2^32 element boundary', () => {
    const name = 'lm_head.weight';
    const offset = 2 ** 32 - 3;
    const out = new Float32Array(7);
    fillUniform(out, 9, fnv1a32(name), 3, RNG_STREAM_SPARSIFY, offset);
    for (let j = 0; j < out.length; j++) {
      expect(out[j]).toBe(uniformAt(9, name, 3, RNG_STREAM_SPARSIFY, offset + j));
    }
  });

  it('gives the same bytes for the same key and different bytes for another seed, name, model or stream', () => {
    const fill = (seed: number, name: string, model: number, stream: number) => {
      const out = new Float32Array(4096);
      fillUniform(out, seed, fnv1a32(name), model, stream);
      return new Uint8Array(out.buffer);
    };
    const reference = fill(1, 'a.weight', 0, 0);
    expect(fill(1, 'a.weight', 0, 0)).toEqual(reference);
    for (const other of [fill(2, 'a.weight', 0, 0), fill(1, 'b.weight', 0, 0), fill(1, 'a.weight', 1, 0)]) {
      let differing = 0;
      for (let i = 0; i < reference.length; i++) if (other[i] !== reference[i]) differing++;
      expect(differing).toBeGreaterThan(reference.length / 2);
    }
    expect(fill(1, 'a.weight', 0, 1)).not.toEqual(reference);
  });

  it('is uniform: mean and bucket counts within a few standard deviations on 2^18 draws', () => {
    const n = 1 << 18;
    const out = new Float32Array(n);
    fillUniform(out, 123, fnv1a32('t'), 0, 0);
    let sum = 0;
    const buckets = new Array<number>(16).fill(0);
    let outside = 0;
    for (const u of out) {
      if (!(u >= 0 && u < 1)) outside++;
      sum += u;
      buckets[Math.floor(u * 16)]++;
    }
    expect(outside).toBe(0);
    // mean of U(0,1): 1/2, standard deviation of the mean sqrt(1/12/n)
    expect(Math.abs(sum / n - 0.5)).toBeLessThan(4 * Math.sqrt(1 / 12 / n));
    const expected = n / 16;
    const sigma = Math.sqrt(n * (1 / 16) * (15 / 16));
    for (const count of buckets) expect(Math.abs(count - expected)).toBeLessThan(4 * sigma);
  });
});
