// Shared by the bench scripts: synthetic models with real Qwen2.5 tensor shapes, and running one
// case per child process (so each case's peak RSS is its own).
import { spawnSync } from 'node:child_process';
import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const QWEN25_05B = {
  hiddenSize: 896,
  intermediateSize: 4864,
  layers: 24,
  heads: 14,
  kvHeads: 2,
  vocabSize: 151936,
};
export const QWEN25_15B = {
  hiddenSize: 1536,
  intermediateSize: 8960,
  layers: 28,
  heads: 12,
  kvHeads: 2,
  vocabSize: 151936,
};
export const QWEN25_7B = {
  hiddenSize: 3584,
  intermediateSize: 18944,
  layers: 28,
  heads: 28,
  kvHeads: 4,
  vocabSize: 152064,
};

/** xorshift32 noise, uniform with standard deviation `std` around `offset` (or `base[i]`). */
export function fillNoise(values, seed, std, base, offset = 0) {
  let x = seed >>> 0 || 1;
  for (let i = 0; i < values.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    values[i] = (base ? base[i] : offset) + (x / 4294967296 - 0.5) * std * 3.4641;
  }
}

/** Elements generated and written at once: large tensors go a slice at a time. */
const SLICE = 1 << 24;

/**
 * Writes a bf16 model.safetensors and config.json with `shape`'s tensors into `dir`: matrices of
 * standard deviation 1/sqrt(fan-in), vectors 0.02 around 0, or around 1 for the norms with
 * `normsAtOne` (a model that runs). With `delta`, each value is the base model's (same shape, seed 0)
 * plus a tenth of its standard deviation of noise keyed by `seed`, like a fine-tune of it.
 */
export async function writeSyntheticModel(
  api,
  dir,
  { shape, tied, seed = 0, delta = false, normsAtOne = false },
) {
  await mkdir(dir, { recursive: true });
  const tensors = api.tinyQwenTensorShapes(shape, tied);
  const layout = api.planShards(tensors, Number.MAX_SAFE_INTEGER);
  const handle = await open(join(dir, 'model.safetensors'), 'w');
  const writer = new api.ShardWriter(layout, async () => ({
    write: async (b) => {
      await handle.write(b);
    },
    close: async () => {},
  }));
  let h = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const norm = normsAtOne && t.name.endsWith('norm.weight');
    const std = norm ? 0.05 : t.shape.length === 1 ? 0.02 : 1 / Math.sqrt(t.shape[t.shape.length - 1]);
    h = (h * 31 + n) >>> 0;
    writer.beginTensor(t.name);
    for (let at = 0, k = 0; at < n; at += SLICE, k++) {
      const values = new Float32Array(Math.min(SLICE, n - at));
      fillNoise(values, (h + k * 7919) ^ 0x5bd1e995, std, undefined, norm ? 1 : 0);
      if (delta) fillNoise(values, (h + k * 7919) ^ seed, std * 0.1, values.slice());
      await writer.writeTensorPart(api.encodeFromF32(values, 'BF16'));
    }
    await writer.endTensor();
  }
  await writer.finish();
  await handle.close();
  const config = {
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    hidden_size: shape.hiddenSize,
    intermediate_size: shape.intermediateSize,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    vocab_size: shape.vocabSize,
    max_position_embeddings: 131072,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    hidden_act: 'silu',
    tie_word_embeddings: tied,
    torch_dtype: 'bfloat16',
    bos_token_id: 151643,
    eos_token_id: 151643,
  };
  await writeFile(join(dir, 'config.json'), JSON.stringify(config, null, 2));
}

/** Runs `script --case NAME args...` in a child process; returns the JSON of its last stdout line. */
export function runCaseProcess(script, name, args) {
  const child = spawnSync(process.execPath, ['--expose-gc', script, '--case', name, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 << 20,
  });
  if (child.status !== 0) throw new Error(`bench case ${name} failed (exit ${child.status})`);
  return JSON.parse(child.stdout.trim().split('\n').at(-1));
}

/** The process's peak resident set so far, in MB. */
export function peakRssMB() {
  return process.resourceUsage().maxRSS / 1024;
}

/** Seconds of CPU time (all threads) since `since` (a `process.cpuUsage()`). */
export function cpuSecondsSince(since) {
  const cpu = process.cpuUsage(since);
  return (cpu.user + cpu.system) / 1e6;
}
