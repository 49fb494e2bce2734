import { describe, expect, it } from 'vitest';
import { countNonFinite, decodeToF32, encodeFromF32, type FloatDType } from '../../src/formats/dtype';
import { DTYPE_CODE, type KernelArena, loadKernels } from '../../src/kernels/wasm';

const arena = loadKernels('auto') as KernelArena;

/** f32 bit patterns that exercise every rounding branch: all specials, boundaries, random words. */
function edgeBits(count: number): Uint32Array {
  const bits: number[] = [
    0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001, 0xff812345, 0x7fbfffff,
    0x00000001, 0x807fffff, 0x00800000, 0x33000000, 0x33000001, 0x32ffffff, 0x33800000, 0x387fc000,
    0x387fe000, 0x38800000, 0x477fe000, 0x477ff000, 0x477fefff, 0x47800000, 0x3f808000, 0x3f818000,
    0x3f807fff, 0x3f800001, 0x3f801000, 0x3f803000, 0xbf808000, 0x7f7fffff, 0xff7fffff,
  ];
  let x = 0x9e3779b9;
  while (bits.length < count) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    bits.push(x);
  }
  return Uint32Array.from(bits.slice(0, count));
}

describe('WASM dtype codecs equal dtype.ts', () => {
  it('loads (WebAssembly SIMD is available in Node 20)', () => {
    expect(arena).not.toBeNull();
  });

  for (const dtype of ['BF16', 'F16', 'F32'] as FloatDType[]) {
    it(`encodes f32 to ${dtype} byte for byte, odd lengths too`, () => {
      for (const n of [1, 3, 5, 4099, 20_001]) {
        const values = new Float32Array(edgeBits(n).buffer);
        arena.reset(n * 8 + 64);
        const src = arena.alloc(n * 4);
        const dst = arena.alloc(n * 4);
        arena.f32(src, n).set(values);
        arena.exports.encode(src, dst, DTYPE_CODE[dtype], n);
        const expected = encodeFromF32(values, dtype);
        expect(Buffer.from(arena.bytes(dst, expected.byteLength)).equals(Buffer.from(expected))).toBe(true);
      }
    });
  }

  it('counts Inf and NaN values as dtype.ts countNonFinite does, every 16-bit pattern and f32 edges', () => {
    const halves = new Uint16Array(65536 + 5);
    for (let i = 0; i < halves.length; i++) halves[i] = (i * 40503) & 0xffff;
    const words = edgeBits(20_003);
    for (const [dtype, bytes] of [
      ['BF16', new Uint8Array(halves.buffer)],
      ['F16', new Uint8Array(halves.buffer)],
      ['F32', new Uint8Array(words.buffer)],
    ] as [FloatDType, Uint8Array][]) {
      const elt = dtype === 'F32' ? 4 : 2;
      for (const n of [0, 1, 7, 9, 4099, bytes.byteLength / elt]) {
        arena.reset(bytes.byteLength + 64);
        const view = arena.bytes(arena.alloc(n * elt), n * elt);
        view.set(bytes.subarray(0, n * elt));
        const expected = countNonFinite(bytes.subarray(0, n * elt), dtype);
        expect(arena.countNonFinite(view, dtype), `${dtype} n=${n}`).toBe(expected);
        if (n > 4000) expect(expected).toBeGreaterThan(0);
      }
    }
  });

  for (const dtype of ['BF16', 'F16'] as FloatDType[]) {
    it(`decodes every ${dtype} bit pattern to the reference's f32 bits`, () => {
      const n = 65536 + 3;
      const halves = new Uint16Array(n);
      for (let i = 0; i < n; i++) halves[i] = i & 0xffff;
      const bytes = new Uint8Array(halves.buffer);
      arena.reset(n * 6 + 64);
      const src = arena.alloc(n * 2);
      const dst = arena.alloc(n * 4);
      arena.bytes(src, n * 2).set(bytes);
      arena.exports.decode(src, DTYPE_CODE[dtype], dst, n);
      const expected = new Uint32Array(decodeToF32(bytes, dtype).buffer);
      expect(Array.from(arena.u32(dst, n))).toEqual(Array.from(expected));
    });
  }
});
