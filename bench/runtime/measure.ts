/**
 * The runtime bench's measurements, shared by Node (bench/runtime.mjs loads this through Vite) and
 * the browser worker (bench/runtime/worker.ts): synthetic Qwen2.5-0.5B- and 1.5B-shaped models
 * (random bf16 weights, bench/browser/synthetic-qwen.ts), prefill and decode tokens/s of a runner,
 * and the memory-bandwidth bound of decoding: every weight byte is read once per decoded token, so
 * tokens/s can be at most (copy bandwidth) / (weight bytes read per token). The copy bandwidth is
 * measured in the same run on the same device: a buffer-to-buffer copy on the GPU, a typed-array copy
 * on the CPU, counted as bytes read plus bytes written (a copy moves each byte twice; a matrix-vector
 * product reads each weight byte once).
 */

import type { TinyQwenShape } from '../../src/demo/tiny-qwen';
import type { ModelFiles } from '../../src/engine/io';
import { blobByteSource } from '../../src/formats/byte-source';
import type { GpuContext } from '../../src/gpu/device';
import { createGpuRunner } from '../../src/model/gpu/runner';
import { createCpuRunner } from '../../src/model/reference';
import type { ModelRunner } from '../../src/model/runner';
import { GREEDY } from '../../src/model/sampling';
import { openModelWeights } from '../../src/model/weights';
import { syntheticQwenModel } from '../browser/synthetic-qwen';

export const SHAPES: Record<string, TinyQwenShape> = {
  '0.5b': { hiddenSize: 896, intermediateSize: 4864, layers: 24, heads: 14, kvHeads: 2, vocabSize: 151936 },
  '1.5b': { hiddenSize: 1536, intermediateSize: 8960, layers: 28, heads: 12, kvHeads: 2, vocabSize: 151936 },
};

export interface RuntimeBenchOptions {
  model: string;
  layers: number;
  vocab: number;
  prompt: number;
  decode: number;
  rounds: number;
}

export interface RuntimeBenchRow {
  model: string;
  layers: number;
  device: 'gpu' | 'cpu';
  adapter: string;
  /** Weight bytes the runner reads per decoded token (bf16 on the GPU, f32 on the CPU reference). */
  bytesPerToken: number;
  prefillTokensPerS: number;
  decodeTokensPerS: number;
  /** Bytes read + written per second by a device copy. */
  copyBytesPerS: number;
  boundTokensPerS: number;
  ratio: number;
  loadS: number;
}

/** A synthetic model with a complete Qwen2.5 config.json (the merge bench's models carry a short one). */
export async function syntheticRuntimeModel(name: string, options: RuntimeBenchOptions): Promise<ModelFiles> {
  const base = SHAPES[options.model];
  if (!base) throw new Error(`unknown model shape '${options.model}' (0.5b or 1.5b)`);
  const shape = { ...base, layers: options.layers, vocabSize: options.vocab };
  const files = await syntheticQwenModel(name, shape);
  const config = {
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    hidden_size: shape.hiddenSize,
    intermediate_size: shape.intermediateSize,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    vocab_size: shape.vocabSize,
    max_position_embeddings: 32768,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000,
    hidden_act: 'silu',
    tie_word_embeddings: true,
    torch_dtype: 'bfloat16',
    use_sliding_window: false,
    bos_token_id: 151643,
    eos_token_id: 151643,
  };
  const configBlob = new Blob([JSON.stringify(config)], { type: 'application/json' });
  return {
    name,
    files: () => files.files(),
    open: (file) =>
      file === 'config.json'
        ? Promise.resolve(blobByteSource(configBlob, `${name}/config.json`))
        : files.open(file),
  };
}

/** Weight bytes one decoded token reads: every matrix and norm once; the tied lm_head is the embedding. */
function bytesPerToken(shape: TinyQwenShape, elementBytes: number): number {
  const { hiddenSize: h, intermediateSize: m, layers, heads, kvHeads, vocabSize } = shape;
  const kv = (h / heads) * kvHeads;
  const layer = h * h * 2 + 2 * kv * h + h + 2 * kv + 3 * h * m + 2 * h;
  return elementBytes * (layers * layer + vocabSize * h + h);
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Best of five 256 MiB buffer-to-buffer copies, in bytes read + written per second. */
export async function gpuCopyBandwidth(ctx: GpuContext): Promise<number> {
  const bytes = Math.min(256 * 2 ** 20, Math.floor(ctx.limits.maxBufferSize / 2 / 256) * 256);
  const usage = GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const src = ctx.device.createBuffer({ label: 'bench.copy.src', size: bytes, usage });
  const dst = ctx.device.createBuffer({ label: 'bench.copy.dst', size: bytes, usage });
  try {
    let best = Number.POSITIVE_INFINITY;
    for (let i = 0; i < 6; i++) {
      const enc = ctx.device.createCommandEncoder();
      enc.copyBufferToBuffer(src, 0, dst, 0, bytes);
      const t0 = performance.now();
      ctx.device.queue.submit([enc.finish()]);
      await ctx.device.queue.onSubmittedWorkDone();
      if (i > 0) best = Math.min(best, (performance.now() - t0) / 1000);
    }
    return (2 * bytes) / best;
  } finally {
    src.destroy();
    dst.destroy();
  }
}

/** Best of five 256 MiB typed-array copies, in bytes read + written per second. */
export function cpuCopyBandwidth(): number {
  const bytes = 256 * 2 ** 20;
  const src = new Uint8Array(bytes).fill(1);
  const dst = new Uint8Array(bytes);
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 6; i++) {
    const t0 = performance.now();
    dst.set(src);
    if (i > 0) best = Math.min(best, (performance.now() - t0) / 1000);
  }
  return (2 * bytes) / best;
}

/** A prompt of `n` token ids spread over the vocabulary (values do not change the speed). */
function promptOf(n: number, vocab: number): number[] {
  return Array.from({ length: n }, (_, i) => (i * 7919 + 13) % vocab);
}

async function timeRunner(
  runner: ModelRunner,
  options: RuntimeBenchOptions,
): Promise<{ prefill: number; decode: number }> {
  const prompt = promptOf(options.prompt, options.vocab);
  // A warm-up round compiles the pipelines (and fills caches) before anything is timed.
  const prefills: number[] = [];
  const decodes: number[] = [];
  for (let round = 0; round <= options.rounds; round++) {
    runner.reset();
    const t0 = performance.now();
    let step = await runner.prefill(prompt, GREEDY);
    const t1 = performance.now();
    for (let i = 0; i < options.decode; i++) step = await runner.decode(step.token, GREEDY);
    const t2 = performance.now();
    if (round === 0) continue;
    prefills.push((options.prompt * 1000) / (t1 - t0));
    decodes.push((options.decode * 1000) / (t2 - t1));
  }
  return { prefill: median(prefills), decode: median(decodes) };
}

/** One bench row: load the model on `device`, time prefill and decode, measure the copy bandwidth. */
export async function benchRuntime(
  files: ModelFiles,
  device: 'gpu' | 'cpu',
  options: RuntimeBenchOptions,
  context?: GpuContext,
): Promise<RuntimeBenchRow> {
  const shape = { ...SHAPES[options.model], layers: options.layers, vocabSize: options.vocab };
  const weights = await openModelWeights(files);
  const maxContext = options.prompt + options.decode + 8;
  const t0 = performance.now();
  const runner =
    device === 'gpu'
      ? await createGpuRunner(weights, { context, maxContext })
      : await createCpuRunner(weights, { maxContext });
  const loadS = (performance.now() - t0) / 1000;
  try {
    const { prefill, decode } = await timeRunner(runner, options);
    let copy: number;
    let adapter = 'JS (f32 reference)';
    if (device === 'gpu') {
      const ctx = (runner as Awaited<ReturnType<typeof createGpuRunner>>).ctx;
      copy = await gpuCopyBandwidth(ctx);
      const info = ctx.adapterInfo;
      adapter =
        [info?.vendor, info?.architecture, info?.device, info?.description].filter(Boolean).join(' ') ||
        'unknown';
    } else {
      copy = cpuCopyBandwidth();
    }
    const perToken = bytesPerToken(shape, device === 'gpu' ? 2 : 4);
    const bound = copy / perToken;
    return {
      model: options.model,
      layers: options.layers,
      device,
      adapter,
      bytesPerToken: perToken,
      prefillTokensPerS: prefill,
      decodeTokensPerS: decode,
      copyBytesPerS: copy,
      boundTokensPerS: bound,
      ratio: decode / bound,
      loadS,
    };
  } finally {
    runner.dispose();
  }
}
