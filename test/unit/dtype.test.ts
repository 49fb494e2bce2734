import { describe, expect, it } from 'vitest';
import {
  bf16BitsToF32,
  DTYPE_BYTES,
  decodeToF32,
  dtypeFromRecipe,
  encodeFromF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  isDType,
  isFloatDType,
  torchDTypeName,
} from '../../src/formats/dtype';

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);
/** The f32 whose bit pattern is `bits`. */
function f32(bits: number): number {
  u32Scratch[0] = bits;
  return f32Scratch[0];
}
function bitsOf(x: number): number {
  f32Scratch[0] = x;
  return u32Scratch[0];
}
const isNaNBits16 = (h: number, expBits: number) =>
  (h & expBits) === expBits && (h & ~(expBits | 0x8000)) !== 0;
const BF16_EXP = 0x7f80;
const F16_EXP = 0x7c00;

describe('bf16', () => {
  it('rounds exact halfway cases to the even neighbour', () => {
    // 1 + 2^-8 lies halfway between bf16 1.0 (0x3f80, even) and 1 + 2^-7 (0x3f81).
    expect(f32ToBf16Bits(f32(0x3f808000))).toBe(0x3f80);
    // 1 + 3*2^-8 lies halfway between 0x3f81 (odd) and 0x3f82 (even).
    expect(f32ToBf16Bits(f32(0x3f818000))).toBe(0x3f82);
    // One f32 ulp either side of a halfway point goes to the nearer neighbour.
    expect(f32ToBf16Bits(f32(0x3f808001))).toBe(0x3f81);
    expect(f32ToBf16Bits(f32(0x3f818000 - 1))).toBe(0x3f81);
    expect(f32ToBf16Bits(-f32(0x3f818000))).toBe(0xbf82);
  });

  it('rounds every midpoint between adjacent bf16 values to the even one', () => {
    for (let h = 0; h < 0x7f7f; h++) {
      const mid = (bf16BitsToF32(h) + bf16BitsToF32(h + 1)) / 2;
      const even = h % 2 === 0 ? h : h + 1;
      if (f32ToBf16Bits(mid) !== even)
        expect.fail(`midpoint after 0x${h.toString(16)} -> not 0x${even.toString(16)}`);
      if (f32ToBf16Bits(-mid) !== (even | 0x8000)) expect.fail(`negative midpoint after 0x${h.toString(16)}`);
    }
  });

  it('keeps subnormals and rounds them to nearest even', () => {
    expect(f32ToBf16Bits(f32(0x00010000))).toBe(0x0001); // smallest bf16 subnormal, exact
    expect(f32ToBf16Bits(f32(0x00008000))).toBe(0x0000); // half of it: tie to even zero
    expect(f32ToBf16Bits(f32(0x00008001))).toBe(0x0001);
    expect(f32ToBf16Bits(f32(0x00018000))).toBe(0x0002); // tie between 1 and 2
    expect(bf16BitsToF32(0x0001)).toBe(2 ** -133);
    expect(bf16BitsToF32(0x807f)).toBe(-127 * 2 ** -133);
  });

  it('overflows to Inf past the largest finite value', () => {
    expect(f32ToBf16Bits(f32(0x7f7f7fff))).toBe(0x7f7f); // below the midpoint to Inf
    expect(f32ToBf16Bits(f32(0x7f7f8000))).toBe(0x7f80); // midpoint, odd 0x7f7f rounds up to Inf
    expect(f32ToBf16Bits(f32(0x7f7fffff))).toBe(0x7f80); // f32 max
    expect(f32ToBf16Bits(-f32(0x7f7fffff))).toBe(0xff80);
    expect(f32ToBf16Bits(Number.POSITIVE_INFINITY)).toBe(0x7f80);
    expect(f32ToBf16Bits(Number.NEGATIVE_INFINITY)).toBe(0xff80);
  });

  it('keeps NaN (with its sign), including NaNs whose payload is only in the dropped bits', () => {
    for (const bits of [0x7fc00000, 0x7f800001, 0x7f80ffff, 0x7fffffff, 0xff800001, 0xffc00000]) {
      const h = f32ToBf16Bits(f32(bits));
      expect(isNaNBits16(h, BF16_EXP), `0x${bits.toString(16)} -> 0x${h.toString(16)}`).toBe(true);
      expect(h & 0x8000).toBe(bits >>> 31 ? 0x8000 : 0);
    }
    expect(bf16BitsToF32(0x7fc0)).toBeNaN();
    expect(bf16BitsToF32(0xff81)).toBeNaN();
  });

  it('keeps -0', () => {
    expect(f32ToBf16Bits(-0)).toBe(0x8000);
    expect(Object.is(bf16BitsToF32(0x8000), -0)).toBe(true);
  });

  it('decode(encode(x)) is the identity on all 65536 bf16 bit patterns', () => {
    for (let h = 0; h < 0x10000; h++) {
      const x = bf16BitsToF32(h);
      const back = f32ToBf16Bits(x);
      if (Number.isNaN(x)) {
        if (!isNaNBits16(back, BF16_EXP)) expect.fail(`NaN 0x${h.toString(16)} lost`);
      } else if (back !== h || !Object.is(bf16BitsToF32(back), x)) {
        expect.fail(`0x${h.toString(16)} -> ${x} -> 0x${back.toString(16)}`);
      }
    }
  });

  it('the bulk codecs agree with the scalar ones on all 65536 patterns', () => {
    const halves = new Uint16Array(0x10000).map((_, i) => i);
    const decoded = decodeToF32(new Uint8Array(halves.buffer), 'BF16');
    for (let h = 0; h < 0x10000; h++) {
      const scalar = bf16BitsToF32(h);
      if (!Object.is(decoded[h], scalar))
        expect.fail(`decode 0x${h.toString(16)}: ${decoded[h]} vs ${scalar}`);
    }
    const encoded = new Uint16Array(encodeFromF32(decoded, 'BF16').buffer);
    for (let h = 0; h < 0x10000; h++) {
      const ok = Number.isNaN(decoded[h]) ? isNaNBits16(encoded[h], BF16_EXP) : encoded[h] === h;
      if (!ok) expect.fail(`encode 0x${h.toString(16)} -> 0x${encoded[h].toString(16)}`);
    }
  });
});

describe('f16', () => {
  it('rounds exact halfway cases to the even neighbour', () => {
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // between 0x3c00 (even) and 0x3c01
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // between 0x3c01 and 0x3c02 (even)
    expect(f32ToF16Bits(f32(bitsOf(1 + 2 ** -11) + 1))).toBe(0x3c01);
    expect(f32ToF16Bits(f32(bitsOf(1 + 3 * 2 ** -11) - 1))).toBe(0x3c01);
    // Rounding up carries into the exponent: 2 - 2^-11 is halfway between 0x3bff and 2.0 (0x4000).
    expect(f32ToF16Bits(2 - 2 ** -11)).toBe(0x4000);
    expect(f32ToF16Bits(-(1 + 3 * 2 ** -11))).toBe(0xbc02);
  });

  it('rounds every midpoint between adjacent finite f16 values to the even one', () => {
    for (let h = 0; h < 0x7bff; h++) {
      const lo = f16BitsToF32(h);
      const hi = f16BitsToF32(h + 1);
      const mid = (lo + hi) / 2;
      const even = h % 2 === 0 ? h : h + 1;
      if (f32ToF16Bits(mid) !== even)
        expect.fail(`midpoint after 0x${h.toString(16)} -> not 0x${even.toString(16)}`);
      if (f32ToF16Bits(-mid) !== (even | 0x8000)) expect.fail(`negative midpoint after 0x${h.toString(16)}`);
      // One f32 ulp either side picks the nearer neighbour.
      if (f32ToF16Bits(f32(bitsOf(mid) - 1)) !== h)
        expect.fail(`just below midpoint after 0x${h.toString(16)}`);
      if (f32ToF16Bits(f32(bitsOf(mid) + 1)) !== h + 1)
        expect.fail(`just above midpoint after 0x${h.toString(16)}`);
    }
  });

  it('keeps subnormals, rounding to nearest even', () => {
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // half of it: tie to even zero
    expect(f32ToF16Bits(f32(bitsOf(2 ** -25) + 1))).toBe(0x0001); // just above the tie
    expect(f32ToF16Bits(2 ** -26)).toBe(0x0000);
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(0x0002); // 1.5 units: tie between 1 and 2
    expect(f32ToF16Bits(5 * 2 ** -25)).toBe(0x0002); // 2.5 units: tie between 2 and 3
    expect(f32ToF16Bits(1023 * 2 ** -24)).toBe(0x03ff); // largest subnormal
    expect(f32ToF16Bits(1023.5 * 2 ** -24)).toBe(0x0400); // tie, rounds up into the smallest normal
    expect(f32ToF16Bits(2 ** -14)).toBe(0x0400);
    expect(f32ToF16Bits(-(2 ** -24))).toBe(0x8001);
    expect(f32ToF16Bits(f32(0x00000001))).toBe(0x0000); // f32 subnormals are far below f16's range
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToF32(0x83ff)).toBe(-1023 * 2 ** -24);
  });

  it('overflows to Inf past the largest finite value', () => {
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(65519)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00); // halfway to 65536: odd 0x7bff rounds up to Inf
    expect(f32ToF16Bits(65536)).toBe(0x7c00);
    expect(f32ToF16Bits(1e10)).toBe(0x7c00);
    expect(f32ToF16Bits(-1e10)).toBe(0xfc00);
    expect(f32ToF16Bits(Number.POSITIVE_INFINITY)).toBe(0x7c00);
    expect(f32ToF16Bits(Number.NEGATIVE_INFINITY)).toBe(0xfc00);
    expect(f16BitsToF32(0x7c00)).toBe(Number.POSITIVE_INFINITY);
    expect(f16BitsToF32(0xfc00)).toBe(Number.NEGATIVE_INFINITY);
  });

  it('keeps NaN (with its sign), including NaNs whose payload is only in the dropped bits', () => {
    for (const bits of [0x7fc00000, 0x7f800001, 0x7f801fff, 0x7fffffff, 0xff800001]) {
      const h = f32ToF16Bits(f32(bits));
      expect(isNaNBits16(h, F16_EXP), `0x${bits.toString(16)} -> 0x${h.toString(16)}`).toBe(true);
      expect(h & 0x8000).toBe(bits >>> 31 ? 0x8000 : 0);
    }
    expect(f16BitsToF32(0x7e00)).toBeNaN();
    expect(f16BitsToF32(0xfc01)).toBeNaN();
  });

  it('keeps -0', () => {
    expect(f32ToF16Bits(-0)).toBe(0x8000);
    expect(Object.is(f16BitsToF32(0x8000), -0)).toBe(true);
    expect(f32ToF16Bits(-(2 ** -30))).toBe(0x8000); // underflow keeps the sign
  });

  it('decode(encode(x)) is the identity on all 65536 f16 bit patterns', () => {
    for (let h = 0; h < 0x10000; h++) {
      const x = f16BitsToF32(h);
      const back = f32ToF16Bits(x);
      if (Number.isNaN(x)) {
        if (!isNaNBits16(back, F16_EXP)) expect.fail(`NaN 0x${h.toString(16)} lost`);
      } else if (back !== h || !Object.is(f16BitsToF32(back), x)) {
        expect.fail(`0x${h.toString(16)} -> ${x} -> 0x${back.toString(16)}`);
      }
    }
  });

  it('the bulk codecs agree with the scalar ones on all 65536 patterns', () => {
    const halves = new Uint16Array(0x10000).map((_, i) => i);
    const decoded = decodeToF32(new Uint8Array(halves.buffer), 'F16');
    for (let h = 0; h < 0x10000; h++) {
      const scalar = f16BitsToF32(h);
      if (!Object.is(decoded[h], scalar))
        expect.fail(`decode 0x${h.toString(16)}: ${decoded[h]} vs ${scalar}`);
    }
    const encoded = new Uint16Array(encodeFromF32(decoded, 'F16').buffer);
    for (let h = 0; h < 0x10000; h++) {
      const ok = Number.isNaN(decoded[h]) ? isNaNBits16(encoded[h], F16_EXP) : encoded[h] === h;
      if (!ok) expect.fail(`encode 0x${h.toString(16)} -> 0x${encoded[h].toString(16)}`);
    }
  });
});

describe('decodeToF32 / encodeFromF32', () => {
  const values = new Float32Array([1, -2.5, 0.1, -0, 65504, 3.0e-5]);

  it('F32 round-trips bit for bit, also from unaligned bytes', () => {
    const bytes = encodeFromF32(values, 'F32');
    expect(bytes.byteLength).toBe(24);
    expect(Array.from(decodeToF32(bytes, 'F32'))).toEqual(Array.from(values));
    const unaligned = new Uint8Array(25).subarray(1);
    unaligned.set(bytes);
    expect(Array.from(decodeToF32(unaligned, 'F32'))).toEqual(Array.from(values));
  });

  it('reads little-endian 16-bit values from odd offsets', () => {
    // 0x3f80 = bf16 1.0, 0xc020 = bf16 -2.5; 0x3c00 = f16 1.0, 0xc100 = f16 -2.5.
    const bf = new Uint8Array([0xff, 0x80, 0x3f, 0x20, 0xc0]).subarray(1);
    expect(Array.from(decodeToF32(bf, 'BF16'))).toEqual([1, -2.5]);
    const f16 = new Uint8Array([0xff, 0x00, 0x3c, 0x00, 0xc1]).subarray(1);
    expect(Array.from(decodeToF32(f16, 'F16'))).toEqual([1, -2.5]);
  });

  it('writes into a caller-provided output array', () => {
    const out = new Float32Array(2);
    const res = decodeToF32(new Uint8Array([0x80, 0x3f, 0x20, 0xc0]), 'BF16', out);
    expect(res).toBe(out);
    expect(Array.from(out)).toEqual([1, -2.5]);
  });

  it('encodes from a Float32Array view that does not start at offset 0', () => {
    const backing = new Float32Array([99, 1, -2.5]);
    const view = backing.subarray(1);
    expect(Array.from(encodeFromF32(view, 'BF16'))).toEqual([0x80, 0x3f, 0x20, 0xc0]);
    expect(Array.from(encodeFromF32(view, 'F16'))).toEqual([0x00, 0x3c, 0x00, 0xc1]);
    expect(Array.from(encodeFromF32(view, 'F32'))).toEqual(
      Array.from(new Uint8Array(new Float32Array([1, -2.5]).buffer)),
    );
  });

  it('rounds once to nearest even when encoding (0.1 as bf16 and f16)', () => {
    // 0.1f = 0x3dcccccd: bf16 keeps 0x3dcc and the dropped 0xcccd > 0x8000 rounds up.
    expect(Array.from(new Uint16Array(encodeFromF32(new Float32Array([0.1]), 'BF16').buffer))).toEqual([
      0x3dcd,
    ]);
    // f16 0.1 = 0x2e66 (0.0999755859375).
    expect(Array.from(new Uint16Array(encodeFromF32(new Float32Array([0.1]), 'F16').buffer))).toEqual([
      0x2e66,
    ]);
  });

  it('rejects byte lengths that are not a whole number of elements', () => {
    expect(() => decodeToF32(new Uint8Array(3), 'BF16')).toThrow(RangeError);
    expect(() => decodeToF32(new Uint8Array(6), 'F32')).toThrow(RangeError);
  });

  it('rejects an output array too small for the input', () => {
    expect(() => decodeToF32(new Uint8Array(8), 'BF16', new Float32Array(3))).toThrow(RangeError);
  });
});

describe('dtype names', () => {
  it('knows element sizes', () => {
    expect(DTYPE_BYTES.BF16).toBe(2);
    expect(DTYPE_BYTES.F32).toBe(4);
    expect(DTYPE_BYTES.I64).toBe(8);
    expect(DTYPE_BYTES.F8_E4M3).toBe(1);
  });

  it('recognises safetensors dtypes only as own keys', () => {
    expect(isDType('BF16')).toBe(true);
    expect(isDType('bf16')).toBe(false);
    expect(isDType('toString')).toBe(false);
    expect(isDType('__proto__')).toBe(false);
    expect(isFloatDType('F16')).toBe(true);
    expect(isFloatDType('I32')).toBe(false);
    expect(isFloatDType('F64')).toBe(false);
  });

  it('maps recipe dtype names as mergekit does, including the torch. prefix', () => {
    expect(dtypeFromRecipe('bfloat16')).toBe('BF16');
    expect(dtypeFromRecipe('float16')).toBe('F16');
    expect(dtypeFromRecipe('float32')).toBe('F32');
    expect(dtypeFromRecipe('torch.bfloat16')).toBe('BF16');
    expect(dtypeFromRecipe('BF16')).toBe('BF16');
    expect(dtypeFromRecipe('int8')).toBeUndefined();
    expect(dtypeFromRecipe('constructor')).toBeUndefined();
  });

  it('names dtypes as transformers writes torch_dtype', () => {
    expect(torchDTypeName('BF16')).toBe('bfloat16');
    expect(torchDTypeName('F16')).toBe('float16');
    expect(torchDTypeName('F32')).toBe('float32');
  });
});
