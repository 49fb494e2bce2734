/**
 * The cos/sin table rope.wgsl reads: entry (p, i) = (cos, sin) of the f32 angle f32(p * inv_freq[i])
 * (src/model/config.ts ropeInverseFrequencies), evaluated in double precision and rounded to f32, as
 * the CPU reference does. A table rather than sin/cos in the shader: WGSL allows those builtins a
 * large absolute error for big arguments, and positions run into the thousands.
 */
import { type ModelConfig, ropeInverseFrequencies } from '../config';

export function ropeTable(config: ModelConfig, positions: number): Float32Array {
  const inv = ropeInverseFrequencies(config);
  const half = inv.length;
  const out = new Float32Array(positions * half * 2);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * inv[i]);
      const o = 2 * (p * half + i);
      out[o] = Math.cos(angle);
      out[o + 1] = Math.sin(angle);
    }
  }
  return out;
}
