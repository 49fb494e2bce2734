/**
 * config.json reading (both key forms, refusals naming the key and file), weight validation, and the
 * CPU runner on synthetic Qwen3 / Llama / Qwen2 models against a direct float64 transcription of
 * transformers' modelling code (full sequence, no cache).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { ModelFiles } from '../../src/engine/io';
import { bytesByteSource } from '../../src/formats/byte-source';
import { encodeFromF32 } from '../../src/formats/dtype';
import {
  checkContextLength,
  type ModelConfig,
  ModelConfigError,
  parseModelConfig,
  ropeInverseFrequencies,
  UnsupportedModelError,
} from '../../src/model/config';
import { createCpuRunner, linear } from '../../src/model/reference';
import { ContextOverflowError, TokenRangeError } from '../../src/model/runner';
import { GREEDY } from '../../src/model/sampling';
import { expectedShapes, ModelWeightsError, openModelWeights } from '../../src/model/weights';

const FIXTURE = 'test/fixtures/qwen2-tiny-l2s/system2/config.json';
const fixtureConfig = () => JSON.parse(readFileSync(FIXTURE, 'utf8')) as Record<string, unknown>;

function refused(json: Record<string, unknown>, key: string): UnsupportedModelError {
  let error: unknown;
  try {
    parseModelConfig(json, 'm/config.json');
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(UnsupportedModelError);
  const e = error as UnsupportedModelError;
  expect(e.key).toBe(key);
  expect(e.message).toContain('m/config.json');
  expect(e.message).toContain(key);
  return e;
}

describe('parseModelConfig', () => {
  it('reads the fixture (transformers 5 keys beside the older ones) and its generation config', () => {
    const cfg = parseModelConfig(fixtureConfig(), FIXTURE, { eos_token_id: [0, 5], bos_token_id: 0 });
    expect(cfg).toMatchObject({
      architecture: 'qwen2',
      hiddenSize: 128,
      numLayers: 4,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 32,
      intermediateSize: 512,
      vocabSize: 1024,
      ropeTheta: 10000,
      ropeType: 'default',
      rmsNormEps: 1e-6,
      tieWordEmbeddings: false,
      attentionBias: true,
      qkNorm: false,
      maxPositionEmbeddings: 512,
      slidingWindow: null,
      eosTokenIds: [0, 5],
      bosTokenId: 0,
    });
    // Without generation_config.json, config.json's eos.
    expect(parseModelConfig(fixtureConfig(), FIXTURE).eosTokenIds).toEqual([0]);
  });

  it('reads rope_theta from either form, and refuses the two when they disagree', () => {
    const onlyNew = fixtureConfig();
    delete onlyNew.rope_theta;
    (onlyNew.rope_parameters as Record<string, unknown>).rope_theta = 1e6;
    expect(parseModelConfig(onlyNew, 'm/config.json').ropeTheta).toBe(1e6);
    const onlyOld = fixtureConfig();
    delete onlyOld.rope_parameters;
    onlyOld.rope_theta = 500000;
    expect(parseModelConfig(onlyOld, 'm/config.json').ropeTheta).toBe(500000);
    const both = fixtureConfig();
    both.rope_theta = 1e6;
    expect(() => parseModelConfig(both, 'm/config.json')).toThrow(ModelConfigError);
    expect(() => parseModelConfig(both, 'm/config.json')).toThrow(/rope_theta.*rope_parameters\.rope_theta/);
  });

  it('reads a Qwen2.5-style hub config (rope_scaling null, sliding window off, tied)', () => {
    const cfg = parseModelConfig(
      {
        architectures: ['Qwen2ForCausalLM'],
        model_type: 'qwen2',
        hidden_size: 896,
        intermediate_size: 4864,
        num_hidden_layers: 24,
        num_attention_heads: 14,
        num_key_value_heads: 2,
        max_position_embeddings: 32768,
        max_window_layers: 21,
        rms_norm_eps: 1e-6,
        rope_scaling: null,
        rope_theta: 1000000.0,
        sliding_window: 32768,
        use_sliding_window: false,
        tie_word_embeddings: true,
        vocab_size: 151936,
        hidden_act: 'silu',
        eos_token_id: 151643,
      },
      'Qwen2.5-0.5B/config.json',
      { eos_token_id: [151645, 151643] },
    );
    expect(cfg).toMatchObject({ headDim: 64, ropeTheta: 1e6, slidingWindow: null, tieWordEmbeddings: true });
    expect(cfg.eosTokenIds).toEqual([151645, 151643]);
  });

  it('reads Qwen3 (head_dim key, q/k norms, no biases) and Llama', () => {
    const qwen3 = parseModelConfig(
      { ...syntheticConfig('qwen3'), head_dim: 24, hidden_size: 32 },
      'q3/config.json',
    );
    expect(qwen3).toMatchObject({ architecture: 'qwen3', headDim: 24, qkNorm: true, attentionBias: false });
    const llama = parseModelConfig(syntheticConfig('llama'), 'l/config.json');
    expect(llama).toMatchObject({ architecture: 'llama', headDim: 8, qkNorm: false, attentionBias: false });
  });

  it('refuses what the runtime does not implement, naming the key and the file', () => {
    refused(
      { ...fixtureConfig(), architectures: ['GemmaForCausalLM'], model_type: 'gemma' },
      'architectures',
    );
    refused({ ...fixtureConfig(), architectures: undefined, model_type: 'mistral' }, 'model_type');
    refused({ ...fixtureConfig(), hidden_act: 'gelu' }, 'hidden_act');
    const yarn = {
      ...fixtureConfig(),
      rope_parameters: undefined,
      rope_scaling: { type: 'yarn', factor: 4 },
    };
    expect(refused(yarn, 'rope_scaling.rope_type').message).toContain('"yarn"');
    refused(
      { ...fixtureConfig(), rope_parameters: { rope_type: 'llama3', rope_theta: 10000, factor: 8 } },
      'rope_parameters.rope_type',
    );
    refused({ ...syntheticConfig('llama'), attention_bias: true }, 'attention_bias');
    refused({ ...syntheticConfig('llama'), mlp_bias: true }, 'mlp_bias');
    refused({ ...fixtureConfig(), partial_rotary_factor: 0.5 }, 'partial_rotary_factor');
    refused({ ...fixtureConfig(), quantization_config: { quant_method: 'gptq' } }, 'quantization_config');
    refused(
      { ...fixtureConfig(), layer_types: ['full_attention', 'chunked', 'full_attention', 'full_attention'] },
      'layer_types[1]',
    );
  });

  it('reports malformed configs as ModelConfigError naming the file', () => {
    const missing = fixtureConfig();
    delete missing.hidden_size;
    expect(() => parseModelConfig(missing, 'm/config.json')).toThrow('m/config.json: missing hidden_size');
    expect(() => parseModelConfig({ ...fixtureConfig(), num_key_value_heads: 3 }, 'm/config.json')).toThrow(
      ModelConfigError,
    );
    expect(() => parseModelConfig([], 'm/config.json')).toThrow(ModelConfigError);
  });

  it('refuses a context longer than a sliding window, in either config form', () => {
    const old = parseModelConfig(
      {
        ...fixtureConfig(),
        layer_types: undefined,
        use_sliding_window: true,
        sliding_window: 64,
        max_window_layers: 2,
      },
      'm/config.json',
    );
    expect(old.slidingWindow).toBe(64);
    const fromTypes = parseModelConfig(
      {
        ...fixtureConfig(),
        sliding_window: 128,
        layer_types: ['full_attention', 'sliding_attention', 'full_attention', 'full_attention'],
      },
      'm/config.json',
    );
    expect(fromTypes.slidingWindow).toBe(128);
    expect(() => checkContextLength(old, 64)).not.toThrow();
    let error: unknown;
    try {
      checkContextLength(old, 65);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(UnsupportedModelError);
    expect((error as UnsupportedModelError).key).toBe('sliding_window');
    expect((error as Error).message).toMatch(/m\/config\.json: sliding_window: .*at most 64 tokens/);
    // A window beyond every layer's reach (use_sliding_window false) is no restriction.
    expect(
      parseModelConfig({ ...fixtureConfig(), sliding_window: 16 }, 'm/config.json').slidingWindow,
    ).toBeNull();
    expect(() => checkContextLength(parseModelConfig(fixtureConfig(), FIXTURE), 513)).toThrow(
      /max_position_embeddings/,
    );
  });
});

describe('ropeInverseFrequencies', () => {
  it('is 1 / theta^(2i/d) in f32 as transformers, divided by the factor for linear scaling', () => {
    const cfg = parseModelConfig(fixtureConfig(), FIXTURE);
    const inv = ropeInverseFrequencies(cfg);
    expect(inv.length).toBe(16);
    expect(inv[0]).toBe(1);
    for (let i = 0; i < 16; i++) expect(inv[i]).toBeCloseTo(1 / 10000 ** ((2 * i) / 32), 7);
    const linear = parseModelConfig(
      { ...fixtureConfig(), rope_parameters: { rope_type: 'linear', rope_theta: 10000, factor: 4 } },
      FIXTURE,
    );
    expect(linear.ropeType).toBe('linear');
    const scaled = ropeInverseFrequencies(linear);
    for (let i = 0; i < 16; i++) expect(scaled[i]).toBe(Math.fround(inv[i] / 4));
  });
});

// ---- synthetic models -----------------------------------------------------------------------------

function syntheticConfig(arch: 'qwen2' | 'qwen3' | 'llama', extra: Record<string, unknown> = {}) {
  const names = { qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM', llama: 'LlamaForCausalLM' };
  return {
    architectures: [names[arch]],
    model_type: arch,
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 40,
    max_position_embeddings: 64,
    rms_norm_eps: 1e-5,
    rope_theta: 1000,
    hidden_act: 'silu',
    tie_word_embeddings: false,
    eos_token_id: 1,
    ...extra,
  };
}

/** Deterministic values in [-scale, scale). */
function randomArray(n: number, seed: number, scale: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    out[i] = ((a / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}

function safetensors(tensors: Map<string, { shape: number[]; data: Float32Array }>, dtype: 'F32' | 'BF16') {
  const header: Record<string, unknown> = {};
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, { shape, data }] of tensors) {
    const bytes = encodeFromF32(data, dtype);
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes.byteLength] };
    parts.push(bytes);
    offset += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8 !== 0) json += ' ';
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(new TextEncoder().encode(json), 8);
  let at = 8 + json.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

function memoryModel(name: string, files: Map<string, Uint8Array>): ModelFiles {
  return {
    name,
    files: () => [...files.keys()],
    async open(file) {
      const bytes = files.get(file);
      if (!bytes) throw new Error(`${name}: no file ${file}`);
      return bytesByteSource(bytes, `${name}/${file}`);
    },
  };
}

interface Synthetic {
  files: ModelFiles;
  config: ModelConfig;
  tensors: Map<string, { shape: number[]; data: Float32Array }>;
}

/** A model with random weights (norm weights near 1); bf16 values when `dtype` is BF16. */
function syntheticModel(
  json: Record<string, unknown>,
  dtype: 'F32' | 'BF16' = 'F32',
  drop?: string,
): Synthetic {
  const config = parseModelConfig(json, 'synthetic/config.json');
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  let seed = 1;
  for (const [name, shape] of expectedShapes(config)) {
    if (name === drop) continue;
    const n = shape.reduce((a, b) => a * b, 1);
    const isNorm = name.endsWith('norm.weight');
    const data = randomArray(n, seed++, isNorm ? 0.3 : name.includes('bias') ? 0.5 : 0.35);
    if (isNorm) for (let i = 0; i < n; i++) data[i] += 1;
    // Stored values: what the model holds after rounding to its dtype.
    tensors.set(name, { shape, data: dtype === 'BF16' ? bf16Round(data) : data });
  }
  const files = new Map<string, Uint8Array>([
    ['config.json', new TextEncoder().encode(JSON.stringify(json))],
    ['model.safetensors', safetensors(tensors, dtype)],
  ]);
  return { files: memoryModel('synthetic', files), config, tensors };
}

function bf16Round(data: Float32Array): Float32Array {
  const bits = new Uint32Array(Float32Array.from(data).buffer);
  for (let i = 0; i < bits.length; i++) {
    const x = bits[i];
    bits[i] = ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) << 16;
  }
  return new Float32Array(bits.buffer);
}

/**
 * transformers' Qwen2/Qwen3/Llama forward written out directly in float64 over the whole sequence
 * (no KV cache): the independent check of the CPU runner on architectures without a transformers
 * fixture. Returns the logits of every position.
 */
function float64Forward(model: Synthetic, ids: number[]): number[][] {
  const c = model.config;
  const W = (name: string) =>
    model.tensors.get(name)?.data ?? model.tensors.get('model.embed_tokens.weight')?.data;
  const get = (name: string) => {
    const t = W(name);
    if (!t) throw new Error(`no ${name}`);
    return t;
  };
  const lin = (x: number[], w: Float32Array, out: number, bias?: Float32Array) =>
    Array.from({ length: out }, (_, o) => {
      let s = bias ? bias[o] : 0;
      for (let i = 0; i < x.length; i++) s += x[i] * w[o * x.length + i];
      return s;
    });
  const norm = (x: number[], w: Float32Array) => {
    const ms = x.reduce((a, v) => a + v * v, 0) / x.length;
    return x.map((v, i) => (v / Math.sqrt(ms + c.rmsNormEps)) * w[i]);
  };
  const rope = (x: number[], pos: number) => {
    const d = c.headDim;
    const half = d / 2;
    const rotated = x.map((_, i) => (i < half ? -x[i + half] : x[i - half]));
    return x.map((v, i) => {
      const freq = 1 / (c.ropeTheta ** ((2 * (i % half)) / d) * c.ropeFactor);
      return v * Math.cos(pos * freq) + rotated[i] * Math.sin(pos * freq);
    });
  };
  const heads = (v: number[], n: number) =>
    Array.from({ length: n }, (_, h) => v.slice(h * c.headDim, (h + 1) * c.headDim));
  let x = ids.map((id) =>
    Array.from(get('model.embed_tokens.weight').subarray(id * c.hiddenSize, (id + 1) * c.hiddenSize)),
  );
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`;
    const opt = (n: string) => model.tensors.get(n)?.data;
    const qs: number[][][] = [];
    const ks: number[][][] = [];
    const vs: number[][][] = [];
    for (const [t, row] of x.entries()) {
      const h = norm(row, get(`${p}.input_layernorm.weight`));
      let q = heads(
        lin(
          h,
          get(`${p}.self_attn.q_proj.weight`),
          c.numHeads * c.headDim,
          opt(`${p}.self_attn.q_proj.bias`),
        ),
        c.numHeads,
      );
      let k = heads(
        lin(
          h,
          get(`${p}.self_attn.k_proj.weight`),
          c.numKvHeads * c.headDim,
          opt(`${p}.self_attn.k_proj.bias`),
        ),
        c.numKvHeads,
      );
      const v = heads(
        lin(
          h,
          get(`${p}.self_attn.v_proj.weight`),
          c.numKvHeads * c.headDim,
          opt(`${p}.self_attn.v_proj.bias`),
        ),
        c.numKvHeads,
      );
      if (c.qkNorm) {
        q = q.map((hq) => norm(hq, get(`${p}.self_attn.q_norm.weight`)));
        k = k.map((hk) => norm(hk, get(`${p}.self_attn.k_norm.weight`)));
      }
      qs.push(q.map((hq) => rope(hq, t)));
      ks.push(k.map((hk) => rope(hk, t)));
      vs.push(v);
    }
    x = x.map((row, t) => {
      const attn: number[] = [];
      for (let h = 0; h < c.numHeads; h++) {
        const kv = Math.floor(h / (c.numHeads / c.numKvHeads));
        const scores = Array.from(
          { length: t + 1 },
          (_, s) => qs[t][h].reduce((a, qv, d) => a + qv * ks[s][kv][d], 0) / Math.sqrt(c.headDim),
        );
        const max = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - max));
        const z = e.reduce((a, b) => a + b, 0);
        for (let d = 0; d < c.headDim; d++) attn.push(e.reduce((a, w, s) => a + (w / z) * vs[s][kv][d], 0));
      }
      const o = lin(attn, get(`${p}.self_attn.o_proj.weight`), c.hiddenSize);
      const r = row.map((v, i) => v + o[i]);
      const h = norm(r, get(`${p}.post_attention_layernorm.weight`));
      const g = lin(h, get(`${p}.mlp.gate_proj.weight`), c.intermediateSize);
      const u = lin(h, get(`${p}.mlp.up_proj.weight`), c.intermediateSize);
      const a = g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i]);
      const down = lin(a, get(`${p}.mlp.down_proj.weight`), c.hiddenSize);
      return r.map((v, i) => v + down[i]);
    });
  }
  const head = c.tieWordEmbeddings ? get('model.embed_tokens.weight') : get('lm_head.weight');
  return x.map((row) => lin(norm(row, get('model.norm.weight')), head, c.vocabSize));
}

describe('CPU runner on synthetic architectures against a float64 transcription', { timeout: 60_000 }, () => {
  const cases: Array<[string, Record<string, unknown>, 'F32' | 'BF16']> = [
    ['Qwen3 (q/k norms, head_dim 12 != hidden/heads)', syntheticConfig('qwen3', { head_dim: 12 }), 'F32'],
    [
      'Llama (GQA 4:1, tied, bf16 weights)',
      syntheticConfig('llama', { num_key_value_heads: 1, tie_word_embeddings: true }),
      'BF16',
    ],
    [
      'Qwen2 (biases) with linear RoPE',
      syntheticConfig('qwen2', { rope_scaling: { type: 'linear', factor: 2 } }),
      'F32',
    ],
  ];
  for (const [label, json, dtype] of cases) {
    it(label, async () => {
      const model = syntheticModel(json, dtype);
      const runner = await createCpuRunner(await openModelWeights(model.files), { maxContext: 32 });
      const ids = [3, 17, 5, 39, 0, 22, 8, 8, 31, 2];
      const expected = float64Forward(model, ids);
      // Prefill of a prefix, then decode one token at a time through the KV cache.
      await runner.prefill(ids.slice(0, 4), GREEDY);
      let worst = 0;
      for (let n = 4; n <= ids.length; n++) {
        if (n > 4) await runner.decode(ids[n - 1], GREEDY);
        const logits = await runner.lastLogits();
        for (let i = 0; i < logits.length; i++)
          worst = Math.max(worst, Math.abs(logits[i] - expected[n - 1][i]));
      }
      expect(worst).toBeLessThan(1e-4);
      expect(runner.length).toBe(ids.length);
    });
  }

  it('calls the module-input observer with the input of every linear module', async () => {
    const model = syntheticModel(syntheticConfig('qwen2'));
    const runner = await createCpuRunner(await openModelWeights(model.files), { maxContext: 8 });
    const seen = new Map<string, number>();
    await runner.prefill([1, 2, 3], GREEDY, {
      onModuleInput: (module, x, channels) => seen.set(module, x.length / channels),
    });
    for (const proj of ['self_attn.q_proj', 'self_attn.o_proj', 'mlp.up_proj', 'mlp.down_proj']) {
      expect(seen.get(`model.layers.1.${proj}`)).toBe(3);
    }
    expect(seen.get('lm_head')).toBe(3);
  });
});

describe('linear', () => {
  it('equals x W^T + b for every tile shape (odd token and row counts)', () => {
    for (const [tokens, inDim, outDim] of [
      [1, 5, 3],
      [3, 7, 7],
      [4, 16, 9],
      [5, 3, 12],
    ]) {
      const x = randomArray(tokens * inDim, tokens, 1);
      const w = randomArray(outDim * inDim, outDim, 1);
      const b = randomArray(outDim, 99, 1);
      const plain = linear(x, tokens, inDim, w, outDim);
      const biased = linear(x, tokens, inDim, w, outDim, b);
      for (let t = 0; t < tokens; t++) {
        for (let o = 0; o < outDim; o++) {
          let s = 0;
          for (let i = 0; i < inDim; i++) s += x[t * inDim + i] * w[o * inDim + i];
          expect(plain[t * outDim + o]).toBe(Math.fround(s));
          expect(biased[t * outDim + o]).toBe(Math.fround(Math.fround(s) + b[o]));
        }
      }
    }
  });
});

describe('weights and runner errors', { timeout: 60_000 }, () => {
  it('refuses a missing lm_head of an untied model, naming the tensor', async () => {
    const model = syntheticModel(syntheticConfig('qwen2'), 'F32', 'lm_head.weight');
    await expect(openModelWeights(model.files)).rejects.toThrow(ModelWeightsError);
    await expect(openModelWeights(model.files)).rejects.toThrow(
      /synthetic: tensor 'lm_head\.weight': missing.*tie_word_embeddings/,
    );
  });

  it('refuses a config.json that is not JSON or nests absurdly deep, naming the file', async () => {
    const model = syntheticModel(syntheticConfig('qwen2'));
    const withConfig = (text: string) =>
      memoryModel(
        'bad',
        new Map<string, Uint8Array>([
          ['config.json', new TextEncoder().encode(text)],
          ['model.safetensors', safetensors(model.tensors, 'F32')],
        ]),
      );
    await expect(openModelWeights(withConfig('{"hidden_size": 32,'))).rejects.toThrow(
      /^bad\/config\.json: is not valid JSON/,
    );
    await expect(
      openModelWeights(withConfig(`${'['.repeat(100_000)}${']'.repeat(100_000)}`)),
    ).rejects.toThrow('bad/config.json: nests JSON deeper than 64 levels; the file is corrupt');
    await expect(openModelWeights(withConfig('[1]'))).rejects.toThrow(
      'bad/config.json: must be a JSON object',
    );
  });

  it('refuses a shape that config.json does not imply', async () => {
    const model = syntheticModel(syntheticConfig('qwen2'));
    const json = { ...syntheticConfig('qwen2'), intermediate_size: 40 };
    const files = new Map<string, Uint8Array>([
      ['config.json', new TextEncoder().encode(JSON.stringify(json))],
      ['model.safetensors', safetensors(model.tensors, 'F32')],
    ]);
    await expect(openModelWeights(memoryModel('bad', files))).rejects.toThrow(
      /bad: tensor 'model\.layers\.0\.mlp\.gate_proj\.weight': shape \[48, 32\] does not match config\.json, which implies \[40, 32\]/,
    );
  });

  it('refuses token ids outside the vocabulary and a full context', async () => {
    const model = syntheticModel(syntheticConfig('qwen2'));
    const runner = await createCpuRunner(await openModelWeights(model.files), { maxContext: 4 });
    await expect(runner.prefill([40], GREEDY)).rejects.toThrow(TokenRangeError);
    await runner.prefill([1, 2, 3], GREEDY);
    await runner.decode(4, GREEDY);
    await expect(runner.decode(5, GREEDY)).rejects.toThrow(ContextOverflowError);
  });

  it('refuses a context beyond a sliding window when the runner is made', async () => {
    const model = syntheticModel(
      syntheticConfig('qwen2', { use_sliding_window: true, sliding_window: 16, max_window_layers: 1 }),
    );
    const weights = await openModelWeights(model.files);
    await expect(createCpuRunner(weights, { maxContext: 32 })).rejects.toThrow(/sliding_window/);
    await expect(createCpuRunner(weights, { maxContext: 16 })).resolves.toBeDefined();
  });
});
