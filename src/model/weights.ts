/**
 * A model's weights as the runtime reads them: one tensor at a time, straight from its shard through
 * the project's ModelFiles / ByteSource (library Blob, folder file, OPFS output, Node file), so a
 * whole model is never held in JS memory. Names and shapes are checked against config.json on open,
 * so a runner never finds out halfway through a forward pass that a tensor is missing.
 */
import type { ModelFiles } from '../engine/io';
import { DTYPE_BYTES, decodeToF32, type FloatDType, isFloatDType } from '../formats/dtype';
import { jsonDepthOver, MAX_JSON_DEPTH } from '../formats/json-text';
import { type ModelTensorIndex, readModelTensorBytes, readModelTensors } from '../formats/model-index';
import { type ModelConfig, ModelConfigError, parseModelConfig } from './config';

export const CONFIG_FILE = 'config.json';
export const GENERATION_CONFIG_FILE = 'generation_config.json';

/** Largest config.json / generation_config.json we read (real ones are a few KB). */
const MAX_CONFIG_BYTES = 10_000_000;

export const EMBED_TOKENS = 'model.embed_tokens.weight';
export const FINAL_NORM = 'model.norm.weight';
export const LM_HEAD = 'lm_head.weight';

/** A weight that is missing, of the wrong shape or dtype; names the model and tensor. */
export class ModelWeightsError extends Error {
  override name = 'ModelWeightsError';
  readonly model: string;
  readonly tensor?: string;

  constructor(model: string, detail: string, tensor?: string) {
    super(tensor === undefined ? `${model}: ${detail}` : `${model}: tensor '${tensor}': ${detail}`);
    this.model = model;
    this.tensor = tensor;
  }
}

export interface TensorMeta {
  dtype: FloatDType;
  shape: number[];
  byteLength: number;
}

export interface ModelWeights {
  readonly config: ModelConfig;
  readonly files: ModelFiles;
  has(name: string): boolean;
  /** Throws ModelWeightsError for an unknown name; `lm_head.weight` of a tied model is the embedding's. */
  info(name: string): TensorMeta;
  /** Stored bytes of one tensor (read straight from its shard; lm_head falls back to embed_tokens when tied). */
  raw(name: string): Promise<Uint8Array>;
  /** The tensor widened to f32 exactly (src/formats/dtype.ts). */
  f32(name: string): Promise<Float32Array>;
}

export interface LayerWeightNames {
  inputNorm: string;
  q: string;
  k: string;
  v: string;
  o: string;
  /** Present when config.attentionBias. */
  qBias?: string;
  kBias?: string;
  vBias?: string;
  /** Present when config.qkNorm (Qwen3): [headDim] each. */
  qNorm?: string;
  kNorm?: string;
  postAttnNorm: string;
  gate: string;
  up: string;
  down: string;
}

export function layerWeightNames(config: ModelConfig, layer: number): LayerWeightNames {
  const p = `model.layers.${layer}`;
  const names: LayerWeightNames = {
    inputNorm: `${p}.input_layernorm.weight`,
    q: `${p}.self_attn.q_proj.weight`,
    k: `${p}.self_attn.k_proj.weight`,
    v: `${p}.self_attn.v_proj.weight`,
    o: `${p}.self_attn.o_proj.weight`,
    postAttnNorm: `${p}.post_attention_layernorm.weight`,
    gate: `${p}.mlp.gate_proj.weight`,
    up: `${p}.mlp.up_proj.weight`,
    down: `${p}.mlp.down_proj.weight`,
  };
  if (config.attentionBias) {
    names.qBias = `${p}.self_attn.q_proj.bias`;
    names.kBias = `${p}.self_attn.k_proj.bias`;
    names.vBias = `${p}.self_attn.v_proj.bias`;
  }
  if (config.qkNorm) {
    names.qNorm = `${p}.self_attn.q_norm.weight`;
    names.kNorm = `${p}.self_attn.k_norm.weight`;
  }
  return names;
}

/** Every tensor the forward pass reads, with the shape config.json implies (PyTorch [out, in] order). */
export function expectedShapes(config: ModelConfig): Map<string, number[]> {
  const { hiddenSize: h, numHeads, numKvHeads, headDim, intermediateSize: m, vocabSize } = config;
  const shapes = new Map<string, number[]>();
  shapes.set(EMBED_TOKENS, [vocabSize, h]);
  shapes.set(FINAL_NORM, [h]);
  if (!config.tieWordEmbeddings) shapes.set(LM_HEAD, [vocabSize, h]);
  for (let layer = 0; layer < config.numLayers; layer++) {
    const n = layerWeightNames(config, layer);
    shapes.set(n.inputNorm, [h]);
    shapes.set(n.q, [numHeads * headDim, h]);
    shapes.set(n.k, [numKvHeads * headDim, h]);
    shapes.set(n.v, [numKvHeads * headDim, h]);
    shapes.set(n.o, [h, numHeads * headDim]);
    if (n.qBias && n.kBias && n.vBias) {
      shapes.set(n.qBias, [numHeads * headDim]);
      shapes.set(n.kBias, [numKvHeads * headDim]);
      shapes.set(n.vBias, [numKvHeads * headDim]);
    }
    if (n.qNorm && n.kNorm) {
      shapes.set(n.qNorm, [headDim]);
      shapes.set(n.kNorm, [headDim]);
    }
    shapes.set(n.postAttnNorm, [h]);
    shapes.set(n.gate, [m, h]);
    shapes.set(n.up, [m, h]);
    shapes.set(n.down, [h, m]);
  }
  return shapes;
}

async function readJsonFile(files: ModelFiles, file: string): Promise<unknown> {
  const source = await files.open(file);
  const where = `${files.name}/${file}`;
  if (source.size > MAX_CONFIG_BYTES) {
    throw new ModelConfigError(where, `is ${source.size} bytes, over the ${MAX_CONFIG_BYTES}-byte limit`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(await source.read(0, source.size));
  } catch (e) {
    throw new ModelConfigError(where, `is not valid UTF-8 (${(e as Error).message})`);
  }
  if (jsonDepthOver(text) !== undefined) {
    throw new ModelConfigError(where, `nests JSON deeper than ${MAX_JSON_DEPTH} levels; the file is corrupt`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ModelConfigError(where, `is not valid JSON (${(e as Error).message})`);
  }
}

/** config.json + generation_config.json (when present) of a model. */
export async function readModelConfig(files: ModelFiles): Promise<ModelConfig> {
  const names = files.files();
  if (!names.includes(CONFIG_FILE)) {
    throw new ModelConfigError(
      `${files.name}/${CONFIG_FILE}`,
      'not found: a model folder needs its config.json',
    );
  }
  const config = await readJsonFile(files, CONFIG_FILE);
  const generation = names.includes(GENERATION_CONFIG_FILE)
    ? await readJsonFile(files, GENERATION_CONFIG_FILE)
    : undefined;
  return parseModelConfig(config, `${files.name}/${CONFIG_FILE}`, generation);
}

/** Opens a model's weights; validates every tensor the forward pass reads against config.json. */
export async function openModelWeights(files: ModelFiles, config?: ModelConfig): Promise<ModelWeights> {
  const cfg = config ?? (await readModelConfig(files));
  const index = await readModelTensors(files);
  for (const [name, shape] of expectedShapes(cfg)) {
    const info = index.tensors.get(name);
    if (!info) {
      const hint =
        name === LM_HEAD
          ? ' (config.json says tie_word_embeddings is false, so lm_head.weight must exist)'
          : '';
      throw new ModelWeightsError(files.name, `missing; the forward pass needs it${hint}`, name);
    }
    if (!isFloatDType(info.dtype)) {
      throw new ModelWeightsError(
        files.name,
        `dtype ${info.dtype} is not supported (F32, F16 or BF16)`,
        name,
      );
    }
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new ModelWeightsError(
        files.name,
        `shape [${info.shape.join(', ')}] does not match config.json, which implies [${shape.join(', ')}]`,
        name,
      );
    }
  }
  return new IndexedModelWeights(cfg, files, index);
}

class IndexedModelWeights implements ModelWeights {
  constructor(
    readonly config: ModelConfig,
    readonly files: ModelFiles,
    private readonly index: ModelTensorIndex,
  ) {}

  /** Tied: transformers ties lm_head to the embedding, so a stored lm_head.weight is ignored as there. */
  private stored(name: string): string {
    if (name === LM_HEAD && this.config.tieWordEmbeddings) return EMBED_TOKENS;
    return name;
  }

  has(name: string): boolean {
    return this.index.tensors.has(this.stored(name));
  }

  info(name: string): TensorMeta {
    const info = this.index.tensors.get(this.stored(name));
    if (!info) throw new ModelWeightsError(this.files.name, 'no such tensor in the model', name);
    if (!isFloatDType(info.dtype)) {
      throw new ModelWeightsError(
        this.files.name,
        `dtype ${info.dtype} is not supported (F32, F16 or BF16)`,
        name,
      );
    }
    return { dtype: info.dtype, shape: [...info.shape], byteLength: info.byteLength };
  }

  async raw(name: string): Promise<Uint8Array> {
    this.info(name);
    return readModelTensorBytes(this.index, this.stored(name));
  }

  async f32(name: string): Promise<Float32Array> {
    const { dtype, byteLength } = this.info(name);
    const bytes = await this.raw(name);
    if (bytes.byteLength !== byteLength || byteLength % DTYPE_BYTES[dtype] !== 0) {
      throw new ModelWeightsError(
        this.files.name,
        `read ${bytes.byteLength} bytes, expected ${byteLength}`,
        name,
      );
    }
    return decodeToF32(bytes, dtype);
  }
}
