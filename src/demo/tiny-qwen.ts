/**
 * Tiny Qwen2-shaped models, generated deterministically: the built-in L2S demo and the test fixtures.
 *
 * The trio mirrors the paper's setting at toy scale: a System 1 base that ties lm_head to the
 * embeddings (like Qwen2.5-Math-1.5B), an instruct model fine-tuned from it (also tied), and a System 2
 * reasoner with an untied lm_head stored in two shards (like DeepSeek-R1-Distill-Qwen-1.5B).
 * Fine-tuned models are the base plus structured deltas (a low-rank part plus sparse outliers), so
 * merges have sign conflicts, magnitude tails and decaying spectra worth looking at.
 */
import { encodeFromF32, type FloatDType } from '../formats/dtype';
import { type PlannedTensor, planShards, ShardWriter } from '../formats/shard-writer';

export interface TinyQwenShape {
  hiddenSize: number;
  intermediateSize: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocabSize: number;
}

export const TINY_QWEN_SHAPE: TinyQwenShape = {
  hiddenSize: 64,
  intermediateSize: 176,
  layers: 4,
  heads: 4,
  kvHeads: 2,
  vocabSize: 384,
};

export interface TinyModelSpec {
  /** Folder name, e.g. `tiny-qwen-system1`. */
  name: string;
  /** Seed of this model's delta from the base; 0 means the base itself. */
  deltaSeed: number;
  /** Scale of the delta relative to the base weights. */
  deltaScale: number;
  tied: boolean;
  /** Shards the safetensors are split into (1 writes `model.safetensors`). */
  shards: number;
  dtype: FloatDType;
  /** Extra vocabulary rows beyond the base's (R1-distill models add tokens). */
  extraVocab?: number;
}

export const TINY_TRIO: readonly TinyModelSpec[] = [
  { name: 'tiny-qwen-system1', deltaSeed: 0, deltaScale: 0, tied: true, shards: 1, dtype: 'BF16' },
  { name: 'tiny-qwen-instruct', deltaSeed: 7, deltaScale: 0.08, tied: true, shards: 1, dtype: 'BF16' },
  { name: 'tiny-qwen-system2', deltaSeed: 13, deltaScale: 0.2, tied: false, shards: 2, dtype: 'BF16' },
];

/** mulberry32: a small deterministic generator; only for making fixture data. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(rand: () => number): number {
  const u = Math.max(rand(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

function hashName(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export function tinyQwenTensorShapes(shape: TinyQwenShape, tied: boolean, extraVocab = 0): PlannedTensor[] {
  const { hiddenSize: h, intermediateSize: im, layers, heads, kvHeads, vocabSize } = shape;
  const kv = (h / heads) * kvHeads;
  const v = vocabSize + extraVocab;
  const out: PlannedTensor[] = [{ name: 'model.embed_tokens.weight', dtype: 'BF16', shape: [v, h] }];
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}.`;
    out.push(
      { name: `${p}input_layernorm.weight`, dtype: 'BF16', shape: [h] },
      { name: `${p}self_attn.q_proj.weight`, dtype: 'BF16', shape: [h, h] },
      { name: `${p}self_attn.q_proj.bias`, dtype: 'BF16', shape: [h] },
      { name: `${p}self_attn.k_proj.weight`, dtype: 'BF16', shape: [kv, h] },
      { name: `${p}self_attn.k_proj.bias`, dtype: 'BF16', shape: [kv] },
      { name: `${p}self_attn.v_proj.weight`, dtype: 'BF16', shape: [kv, h] },
      { name: `${p}self_attn.v_proj.bias`, dtype: 'BF16', shape: [kv] },
      { name: `${p}self_attn.o_proj.weight`, dtype: 'BF16', shape: [h, h] },
      { name: `${p}post_attention_layernorm.weight`, dtype: 'BF16', shape: [h] },
      { name: `${p}mlp.gate_proj.weight`, dtype: 'BF16', shape: [im, h] },
      { name: `${p}mlp.up_proj.weight`, dtype: 'BF16', shape: [im, h] },
      { name: `${p}mlp.down_proj.weight`, dtype: 'BF16', shape: [h, im] },
    );
  }
  out.push({ name: 'model.norm.weight', dtype: 'BF16', shape: [h] });
  if (!tied) out.push({ name: 'lm_head.weight', dtype: 'BF16', shape: [v, h] });
  return out;
}

/** Base weights of one tensor: norms near 1, matrices ~ N(0, 1/fan_in). */
function baseValues(t: PlannedTensor): Float32Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  const rand = mulberry32(hashName(t.name));
  if (t.name.endsWith('layernorm.weight') || t.name === 'model.norm.weight') {
    for (let i = 0; i < n; i++) out[i] = 1 + 0.05 * gaussian(rand);
  } else {
    const fanIn = t.shape[t.shape.length - 1];
    const std = t.shape.length === 1 ? 0.02 : 1 / Math.sqrt(fanIn);
    for (let i = 0; i < n; i++) out[i] = std * gaussian(rand);
  }
  return out;
}

/** A fine-tune's delta: rank-2 structure plus sparse outliers, scaled to the base's magnitude. */
function addDelta(values: Float32Array, t: PlannedTensor, seed: number, scale: number): void {
  const rand = mulberry32(hashName(t.name) ^ Math.imul(seed, 0x9e3779b1));
  const n = values.length;
  const cols = t.shape.length === 2 ? t.shape[1] : n;
  const rows = n / cols;
  const fanIn = t.shape[t.shape.length - 1];
  const std = (t.shape.length === 1 ? 0.02 : 1 / Math.sqrt(fanIn)) * scale;
  for (let r = 0; r < 2; r++) {
    const u = Array.from({ length: rows }, () => gaussian(rand));
    const v = Array.from({ length: cols }, () => gaussian(rand));
    const w = std * (r === 0 ? 1 : 0.5);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) values[i * cols + j] += w * u[i] * v[j];
  }
  for (let i = 0; i < n; i++) {
    values[i] += 0.3 * std * gaussian(rand);
    if (rand() < 0.01) values[i] += 4 * std * gaussian(rand);
  }
}

/** The smallest shard size limit that splits the tensors into at most `shards` files. */
function shardLimitFor(tensors: PlannedTensor[], total: number, shards: number): number {
  if (shards <= 1) return Number.MAX_SAFE_INTEGER;
  let lo = Math.ceil(total / shards);
  let hi = total;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (planShards(tensors, mid).shards.length <= shards) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

export interface TinyModelFiles {
  name: string;
  files: Map<string, Uint8Array>;
}

const encoder = new TextEncoder();

function qwenConfig(shape: TinyQwenShape, spec: TinyModelSpec): Record<string, unknown> {
  return {
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    hidden_size: shape.hiddenSize,
    intermediate_size: shape.intermediateSize,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    vocab_size: shape.vocabSize + (spec.extraVocab ?? 0),
    max_position_embeddings: 4096,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    hidden_act: 'silu',
    tie_word_embeddings: spec.tied,
    torch_dtype: spec.dtype === 'BF16' ? 'bfloat16' : spec.dtype === 'F16' ? 'float16' : 'float32',
    bos_token_id: 1,
    eos_token_id: 2,
  };
}

/** Every file of one tiny model, byte for byte the same on every run. */
export async function makeTinyModel(
  spec: TinyModelSpec,
  shape: TinyQwenShape = TINY_QWEN_SHAPE,
): Promise<TinyModelFiles> {
  const files = new Map<string, Uint8Array>();
  const tensors = tinyQwenTensorShapes(shape, spec.tied, spec.extraVocab).map((t) => ({
    ...t,
    dtype: spec.dtype,
  }));
  const total = tensors.reduce(
    (s, t) => s + t.shape.reduce((a, b) => a * b, 1) * (spec.dtype === 'F32' ? 4 : 2),
    0,
  );
  const layout = planShards(tensors, shardLimitFor(tensors, total, spec.shards));
  const writer = new ShardWriter(layout, async (file) => {
    const parts: Uint8Array[] = [];
    return {
      async write(bytes: Uint8Array) {
        parts.push(bytes.slice());
      },
      async close() {
        const size = parts.reduce((s, p) => s + p.byteLength, 0);
        const all = new Uint8Array(size);
        let at = 0;
        for (const p of parts) {
          all.set(p, at);
          at += p.byteLength;
        }
        files.set(file, all);
      },
    };
  });
  const baseVocab = shape.vocabSize;
  for (const t of tensors) {
    // The base of a model with extra vocabulary rows: the shared rows equal the base's.
    const baseShape =
      t.shape.length === 2 && t.shape[0] === baseVocab + (spec.extraVocab ?? 0) && spec.extraVocab
        ? [baseVocab, t.shape[1]]
        : t.shape;
    const isHead = t.name === 'lm_head.weight';
    // An untied head starts from the base's (tied) embeddings, as when a tied model is untied.
    const source = isHead
      ? { ...t, name: 'model.embed_tokens.weight', shape: baseShape }
      : { ...t, shape: baseShape };
    const base = baseValues(source);
    let values = base;
    if (baseShape !== t.shape) {
      values = new Float32Array(t.shape[0] * t.shape[1]);
      values.set(base);
      const rand = mulberry32(hashName(`${t.name}#extra`));
      for (let i = base.length; i < values.length; i++) values[i] = gaussian(rand) / Math.sqrt(t.shape[1]);
    }
    if (spec.deltaSeed) addDelta(values, t, spec.deltaSeed, spec.deltaScale);
    await writer.writeTensor(t.name, encodeFromF32(values, spec.dtype));
  }
  await writer.finish();
  files.set('config.json', encoder.encode(`${JSON.stringify(qwenConfig(shape, spec), null, 2)}\n`));
  files.set(
    'generation_config.json',
    encoder.encode(`${JSON.stringify({ bos_token_id: 1, eos_token_id: 2, do_sample: false }, null, 2)}\n`),
  );
  files.set(
    'tokenizer_config.json',
    encoder.encode(`${JSON.stringify(tokenizerConfig(spec.name), null, 2)}\n`),
  );
  files.set(
    'tokenizer.json',
    encoder.encode(`${JSON.stringify(tokenizer(shape.vocabSize + (spec.extraVocab ?? 0)))}\n`),
  );
  return { name: spec.name, files };
}

function tokenizerConfig(name: string): Record<string, unknown> {
  return { tokenizer_class: 'PreTrainedTokenizerFast', model_max_length: 4096, name_or_path: name };
}

/** A word-level tokenizer over a synthetic vocabulary: enough for loaders to accept the folder. */
function tokenizer(vocab: number): Record<string, unknown> {
  const entries: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let i = 3; i < vocab; i++) entries[`t${i}`] = i;
  return {
    version: '1.0',
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: { type: 'Whitespace' },
    model: { type: 'WordLevel', vocab: entries, unk_token: '<unk>' },
  };
}

export async function makeTinyTrio(shape: TinyQwenShape = TINY_QWEN_SHAPE): Promise<TinyModelFiles[]> {
  return Promise.all(TINY_TRIO.map((spec) => makeTinyModel(spec, shape)));
}
