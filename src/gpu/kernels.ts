/**
 * The WGSL programs, each a kernel file with the libraries it uses prepended (WGSL has no imports).
 *
 * Why the arithmetic in the kernels is written the way it is (the CPU methods are the spec, bit for
 * bit):
 * - Contraction: WGSL compilers may fuse `a * b + c` into one fma, which rounds once where the CPU
 *   rounds twice. Measured here: NVIDIA's Vulkan driver (580, through Dawn) fused 20000 of 20000 such
 *   expressions in the probe of test/browser/harness/gpu-cases.ts; SwiftShader fused none. So every
 *   product that feeds an addition is written `a * b + neg_zero`, with neg_zero a uniform -0.0 the
 *   compiler cannot see: fused or not, that rounds the product alone (and x + -0 keeps both zeros).
 *   No reassociation was seen (Dawn compiles without fast-math).
 * - Division: WGSL allows `x / y` an error of 2.5 ULP (GPUs divide through a reciprocal); quotients
 *   use div_rn (divide.lib.wgsl), integer long division, correctly rounded.
 * - NaN: comparisons and sign tests go through bit patterns where NaN decides the result.
 * - Sums: in the blocked order of src/methods/f32-reduce.ts (block-sum.wgsl).
 */
import blend from '../../shaders/blend.wgsl?raw';
import blockSum from '../../shaders/block-sum.wgsl?raw';
import codecLib from '../../shaders/codec.lib.wgsl?raw';
import decode from '../../shaders/decode.wgsl?raw';
import divideLib from '../../shaders/divide.lib.wgsl?raw';
import encode from '../../shaders/encode.wgsl?raw';
import fiberRank from '../../shaders/fiber-rank.wgsl?raw';
import mix from '../../shaders/mix.wgsl?raw';
import philoxLib from '../../shaders/philox.lib.wgsl?raw';
import radixHistogram from '../../shaders/radix-histogram.wgsl?raw';
import random from '../../shaders/random.wgsl?raw';
import sparsify from '../../shaders/sparsify.wgsl?raw';
import taskVectors from '../../shaders/task-vectors.wgsl?raw';
import weightedSum from '../../shaders/weighted-sum.wgsl?raw';
import type { KernelSource } from './device';

function kernel(name: string, ...parts: string[]): KernelSource {
  return { name, code: parts.join('\n') };
}

export const KERNELS = {
  decode: kernel('decode', codecLib, decode),
  encode: kernel('encode', codecLib, encode),
  random: kernel('random', philoxLib, random),
  radixHistogram: kernel('radix-histogram', radixHistogram),
  taskVectors: kernel('task-vectors', taskVectors),
  blockSum: kernel('block-sum', divideLib, blockSum),
  sparsify: kernel('sparsify', philoxLib, sparsify),
  fiberRank: kernel('fiber-rank', divideLib, fiberRank),
  mix: kernel('mix', divideLib, mix),
  weightedSum: kernel('weighted-sum', divideLib, weightedSum),
  blend: kernel('blend', divideLib, blend),
} as const satisfies Record<string, KernelSource>;

export const WGSL_LIBRARIES = { codec: codecLib, philox: philoxLib, divide: divideLib } as const;
