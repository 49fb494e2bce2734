/**
 * The model's WGSL kernels (shaders/model/, one file per op), each with the libraries it uses
 * prepended, and the facts their TS callers need: the step uniform's layout, dtype codes, weight
 * padding. Every kernel has a TS twin in test/unit/model-gpu-kernels.test.ts (and the CPU reference,
 * src/model/reference.ts, is the specification of the whole forward pass).
 */

import codecLib from '../../../shaders/codec.lib.wgsl?raw';
import argmax from '../../../shaders/model/argmax.wgsl?raw';
import attention from '../../../shaders/model/attention.wgsl?raw';
import biasAdd from '../../../shaders/model/bias-add.wgsl?raw';
import embedding from '../../../shaders/model/embedding.wgsl?raw';
import matmul from '../../../shaders/model/matmul.wgsl?raw';
import matvec from '../../../shaders/model/matvec.wgsl?raw';
import modelLib from '../../../shaders/model/model.lib.wgsl?raw';
import residualAdd from '../../../shaders/model/residual-add.wgsl?raw';
import rmsnorm from '../../../shaders/model/rmsnorm.wgsl?raw';
import rope from '../../../shaders/model/rope.wgsl?raw';
import sampleTopP from '../../../shaders/model/sample-top-p.wgsl?raw';
import siluGate from '../../../shaders/model/silu-gate.wgsl?raw';
import topLogprobs from '../../../shaders/model/top-logprobs.wgsl?raw';
import weightsLib from '../../../shaders/model/weights.lib.wgsl?raw';
import philoxLib from '../../../shaders/philox.lib.wgsl?raw';
import type { FloatDType } from '../../formats/dtype';
import type { KernelSource } from '../../gpu/device';

function modelKernel(name: string, code: string, ...libraries: string[]): KernelSource {
  return { name: `model.${name}`, code: [codecLib, modelLib, ...libraries, code].join('\n') };
}

export const MODEL_KERNELS = {
  embedding: modelKernel('embedding', embedding, weightsLib),
  rmsnorm: modelKernel('rmsnorm', rmsnorm, weightsLib),
  matmul: modelKernel('matmul', matmul, weightsLib),
  matvec: modelKernel('matvec', matvec, weightsLib),
  biasAdd: modelKernel('bias-add', biasAdd, weightsLib),
  rope: modelKernel('rope', rope),
  attention: modelKernel('attention', attention),
  siluGate: modelKernel('silu-gate', siluGate),
  residualAdd: modelKernel('residual-add', residualAdd),
  argmax: modelKernel('argmax', argmax),
  topLogprobs: modelKernel('top-logprobs', topLogprobs),
  sampleTopP: modelKernel('sample-top-p', sampleTopP, philoxLib),
} as const satisfies Record<string, KernelSource>;

/** DTYPE_* of shaders/codec.lib.wgsl. */
export const DTYPE_CODE: Record<FloatDType, number> = { F32: 0, F16: 1, BF16: 2 };

/** Weight and activation buffers are bound as vec4 arrays (16-byte loads), so sizes are padded to 16. */
export function padded16(bytes: number): number {
  return Math.max(16, Math.ceil(bytes / 16) * 16);
}

/** Bytes of the Step uniform of shaders/model/model.lib.wgsl. */
export const STEP_BYTES = 32;

export interface StepValues {
  tokens: number;
  start: number;
  seed?: number;
  samplePosition?: number;
  temperature?: number;
  topP?: number;
  topLogprobs?: number;
}

/** The Step uniform's bytes (field order of model.lib.wgsl). */
export function stepBytes(s: StepValues): ArrayBuffer {
  const buf = new ArrayBuffer(STEP_BYTES);
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  u[0] = s.tokens;
  u[1] = s.start;
  u[2] = (s.seed ?? 0) >>> 0;
  u[3] = (s.samplePosition ?? 0) >>> 0;
  f[4] = s.temperature ?? 0;
  f[5] = s.topP ?? 1;
  u[6] = s.topLogprobs ?? 0;
  return buf;
}

/** Workgroup size of the one-workgroup token selection kernels (argmax, top-logprobs, top-p). */
export const SELECT_WORKGROUP = 256;
/** Most log-probabilities top-logprobs.wgsl reports. */
export const MAX_TOP_LOGPROBS = 16;
/** u32 words of the selection result buffer: the token, then [id, logprob bits] pairs. */
export const RESULT_WORDS = 1 + 2 * MAX_TOP_LOGPROBS;

/** Invocations per matvec.wgsl workgroup (LANES x ROWS_PER_GROUP). */
export const MATVEC_WORKGROUP = 256;
/** Output block edge of matmul.wgsl. */
export const MATMUL_TILE = 64;
/** Workgroup size of attention.wgsl; head_dim must be at most 4 x this. */
export const ATTENTION_WORKGROUP = 64;
export const MAX_HEAD_DIM = 256;
/** Workgroup size of the elementwise kernels. */
export const ELEMENTWISE_WORKGROUP = 256;
