/**
 * The decoder architectures the runtime runs, read from a Hugging Face config.json.
 *
 * Supported: Qwen2 (Qwen2.5, Qwen2.5-Math, DeepSeek-R1-Distill-Qwen), Qwen3 and Llama, all of which
 * are the same pre-norm decoder: RMSNorm, GQA self-attention with RoPE (transformers' rotate_half
 * convention), a SiLU-gated MLP, a final RMSNorm and an lm_head (tied to the embedding or not).
 * They differ only in: q/k/v biases (Qwen2), per-head q/k RMSNorm (Qwen3), and `head_dim`.
 *
 * Both config forms are read: transformers 5 writes `rope_parameters: {rope_theta, rope_type}` and
 * `layer_types`; hub configs written earlier have top-level `rope_theta`, `rope_scaling` and
 * `use_sliding_window`/`max_window_layers`. Anything that would make our forward pass differ from
 * transformers' (a RoPE scaling type we do not implement, a sliding window shorter than the context,
 * another activation, biases where our kernels have none) is refused with an UnsupportedModelError
 * naming the key and the file, never silently approximated.
 */

import { shortJson } from '../formats/json-text';

export type Architecture = 'qwen2' | 'qwen3' | 'llama';

/** RoPE variants implemented: transformers' 'default' and 'linear' (positions divided by `factor`). */
export type RopeType = 'default' | 'linear';

export interface ModelConfig {
  architecture: Architecture;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  ropeTheta: number;
  ropeType: RopeType;
  /** 'linear' RoPE's factor (inv_freq is divided by it); 1 for 'default'. */
  ropeFactor: number;
  rmsNormEps: number;
  tieWordEmbeddings: boolean;
  /** q, k, v projections have biases (Qwen2); o_proj never has one in the supported models. */
  attentionBias: boolean;
  /** RMSNorm over each head of q and k before RoPE (Qwen3), weights of length headDim. */
  qkNorm: boolean;
  maxPositionEmbeddings: number;
  /**
   * The shortest sliding-attention window of any layer, or null when every layer attends fully.
   * A runner refuses a context longer than this (see `checkContextLength`): within it, sliding and
   * full attention are the same computation.
   */
  slidingWindow: number | null;
  /** Generation stops at any of these (generation_config.json's eos_token_id, else config.json's). */
  eosTokenIds: number[];
  bosTokenId?: number;
  /** The file the config was read from, for error messages. */
  configFile: string;
}

/** A model or setting the runtime does not implement; the message names the config key and file. */
export class UnsupportedModelError extends Error {
  override name = 'UnsupportedModelError';
  readonly file: string;
  readonly key: string;

  constructor(file: string, key: string, detail: string) {
    super(`${file}: ${key}: ${detail}`);
    this.file = file;
    this.key = key;
  }
}

/** config.json that is not what a config must be (a missing or malformed required key). */
export class ModelConfigError extends Error {
  override name = 'ModelConfigError';
  readonly file: string;

  constructor(file: string, detail: string) {
    super(`${file}: ${detail}`);
    this.file = file;
  }
}

const ARCHITECTURES: Record<string, Architecture> = {
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
  LlamaForCausalLM: 'llama',
};

const MODEL_TYPES: Record<string, Architecture> = { qwen2: 'qwen2', qwen3: 'qwen3', llama: 'llama' };

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function positiveInt(cfg: Json, key: string, file: string, fallback?: number): number {
  const v = cfg[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
    throw new ModelConfigError(
      file,
      v === undefined ? `missing ${key}` : `${key} must be a positive integer, found ${shortJson(cfg[key])}`,
    );
  }
  return v;
}

function positiveNumber(v: unknown, key: string, file: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new ModelConfigError(file, `${key} must be a positive number, found ${shortJson(v)}`);
  }
  return v;
}

function tokenIds(v: unknown): number[] | undefined {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return [v];
  if (
    Array.isArray(v) &&
    v.length > 0 &&
    v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0)
  )
    return [...new Set(v as number[])];
  return undefined;
}

/**
 * Reads config.json (`json`, from `file`) and optionally generation_config.json into a ModelConfig.
 * Throws UnsupportedModelError for settings the runtime does not implement, ModelConfigError for a
 * malformed config.
 */
export function parseModelConfig(json: unknown, file: string, generationConfig?: unknown): ModelConfig {
  if (!isObject(json)) throw new ModelConfigError(file, 'must be a JSON object');
  const cfg = json;
  const unsupported = (key: string, detail: string) => new UnsupportedModelError(file, key, detail);

  const architectures = cfg.architectures;
  let architecture: Architecture | undefined;
  if (Array.isArray(architectures) && architectures.length > 0) {
    if (
      architectures.length !== 1 ||
      typeof architectures[0] !== 'string' ||
      !ARCHITECTURES[architectures[0]]
    ) {
      throw unsupported(
        'architectures',
        `${shortJson(architectures)} is not supported (supported: ${Object.keys(ARCHITECTURES).join(', ')})`,
      );
    }
    architecture = ARCHITECTURES[architectures[0]];
  }
  const modelType = cfg.model_type;
  if (modelType !== undefined) {
    const fromType = typeof modelType === 'string' ? MODEL_TYPES[modelType] : undefined;
    if (!fromType) {
      throw unsupported(
        'model_type',
        `${shortJson(modelType)} is not supported (supported: ${Object.keys(MODEL_TYPES).join(', ')})`,
      );
    }
    if (architecture && architecture !== fromType) {
      throw new ModelConfigError(
        file,
        `model_type ${shortJson(modelType)} disagrees with architectures ${shortJson(architectures)}`,
      );
    }
    architecture = fromType;
  }
  if (!architecture) throw new ModelConfigError(file, 'has neither architectures nor model_type');

  const hiddenAct = cfg.hidden_act ?? 'silu';
  if (hiddenAct !== 'silu') {
    throw unsupported('hidden_act', `${shortJson(hiddenAct)} is not supported (only "silu")`);
  }
  if (cfg.quantization_config !== undefined && cfg.quantization_config !== null) {
    throw unsupported(
      'quantization_config',
      'quantized weights are not supported (use a bf16/f16/f32 model)',
    );
  }

  const hiddenSize = positiveInt(cfg, 'hidden_size', file);
  const numLayers = positiveInt(cfg, 'num_hidden_layers', file);
  const numHeads = positiveInt(cfg, 'num_attention_heads', file);
  const numKvHeads = positiveInt(cfg, 'num_key_value_heads', file, numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new ModelConfigError(
      file,
      `num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`,
    );
  }
  // transformers: getattr(config, "head_dim", hidden_size // num_attention_heads); a null head_dim too.
  const headDim =
    cfg.head_dim === undefined || cfg.head_dim === null
      ? Math.floor(hiddenSize / numHeads)
      : positiveInt(cfg, 'head_dim', file);
  if (headDim % 2 !== 0) throw new ModelConfigError(file, `head_dim must be even for RoPE, found ${headDim}`);
  const intermediateSize = positiveInt(cfg, 'intermediate_size', file);
  const vocabSize = positiveInt(cfg, 'vocab_size', file);
  // Absent keys take transformers' config-class defaults.
  const maxPositionEmbeddings = positiveInt(
    cfg,
    'max_position_embeddings',
    file,
    architecture === 'llama' ? 2048 : 32768,
  );
  const rmsNormEps = positiveNumber(cfg.rms_norm_eps ?? 1e-6, 'rms_norm_eps', file);

  const partial = cfg.partial_rotary_factor;
  if (partial !== undefined && partial !== null && partial !== 1) {
    throw unsupported('partial_rotary_factor', `${shortJson(partial)} is not supported (only 1)`);
  }

  const { ropeTheta, ropeType, ropeFactor } = readRope(cfg, file);

  // Biases: Qwen2 always has q/k/v biases (transformers hard-codes bias=True) and none on o_proj.
  // Llama and Qwen3 put `attention_bias` on q, k, v AND o_proj; our kernels have no o_proj bias.
  // (transformers' Qwen2 ignores an attention_bias key, so do we.)
  const attentionBias = architecture === 'qwen2';
  if (architecture !== 'qwen2' && cfg.attention_bias === true) {
    throw unsupported('attention_bias', 'true is not supported for this architecture (o_proj bias)');
  }
  if (cfg.mlp_bias === true) throw unsupported('mlp_bias', 'true is not supported (MLP biases)');

  const slidingWindow = readSlidingWindow(cfg, file, numLayers, architecture);

  const tie = cfg.tie_word_embeddings ?? false;
  if (typeof tie !== 'boolean') {
    throw new ModelConfigError(file, `tie_word_embeddings must be true or false, found ${shortJson(tie)}`);
  }

  const gen = isObject(generationConfig) ? generationConfig : {};
  const eosTokenIds = tokenIds(gen.eos_token_id) ?? tokenIds(cfg.eos_token_id) ?? [];
  const bos = tokenIds(gen.bos_token_id) ?? tokenIds(cfg.bos_token_id);

  return {
    architecture,
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize,
    vocabSize,
    ropeTheta,
    ropeType,
    ropeFactor,
    rmsNormEps,
    tieWordEmbeddings: tie,
    attentionBias,
    qkNorm: architecture === 'qwen3',
    maxPositionEmbeddings,
    slidingWindow,
    eosTokenIds,
    bosTokenId: bos?.[0],
    configFile: file,
  };
}

function readRope(cfg: Json, file: string): { ropeTheta: number; ropeType: RopeType; ropeFactor: number } {
  const params = cfg.rope_parameters;
  const scaling = cfg.rope_scaling;
  if (params !== undefined && params !== null && !isObject(params)) {
    throw new ModelConfigError(file, `rope_parameters must be an object, found ${shortJson(params)}`);
  }
  if (scaling !== undefined && scaling !== null && !isObject(scaling)) {
    throw new ModelConfigError(file, `rope_scaling must be an object or null, found ${shortJson(scaling)}`);
  }
  // transformers 5 may key rope_parameters by layer type ({full_attention: {...}}): not a form we run.
  if (isObject(params) && Object.values(params).some(isObject)) {
    throw new UnsupportedModelError(
      file,
      'rope_parameters',
      'per-layer-type RoPE parameters are not supported',
    );
  }
  const topTheta = cfg.rope_theta;
  const paramTheta = isObject(params) ? params.rope_theta : undefined;
  if (topTheta !== undefined && paramTheta !== undefined && topTheta !== paramTheta) {
    throw new ModelConfigError(
      file,
      `rope_theta (${shortJson(topTheta)}) and rope_parameters.rope_theta (${shortJson(paramTheta)}) disagree`,
    );
  }
  const ropeTheta = positiveNumber(paramTheta ?? topTheta ?? 10000, 'rope_theta', file);

  // Which block says the type: rope_parameters (transformers 5) over rope_scaling (older configs).
  const block = isObject(params) ? params : isObject(scaling) ? scaling : undefined;
  const key = block === params ? 'rope_parameters' : 'rope_scaling';
  const rawType = block ? (block.rope_type ?? block.type ?? 'default') : 'default';
  if (rawType === 'default') return { ropeTheta, ropeType: 'default', ropeFactor: 1 };
  if (rawType === 'linear') {
    const factor = positiveNumber(block?.factor, `${key}.factor`, file);
    return { ropeTheta, ropeType: 'linear', ropeFactor: factor };
  }
  throw new UnsupportedModelError(
    file,
    `${key}.rope_type`,
    `${shortJson(rawType)} is not supported (supported: "default", "linear")`,
  );
}

function readSlidingWindow(
  cfg: Json,
  file: string,
  numLayers: number,
  architecture: Architecture,
): number | null {
  const layerTypes = cfg.layer_types;
  const window = cfg.sliding_window;
  let sliding: boolean[];
  if (Array.isArray(layerTypes)) {
    if (layerTypes.length !== numLayers) {
      throw new ModelConfigError(
        file,
        `layer_types has ${layerTypes.length} entries for ${numLayers} layers`,
      );
    }
    sliding = layerTypes.map((t, i) => {
      if (t === 'full_attention') return false;
      if (t === 'sliding_attention') return true;
      throw new UnsupportedModelError(file, `layer_types[${i}]`, `${shortJson(t)} is not supported`);
    });
  } else if (
    architecture !== 'llama' &&
    cfg.use_sliding_window === true &&
    window !== null &&
    window !== undefined
  ) {
    // transformers (Qwen2/Qwen3): layers from max_window_layers on use the sliding window.
    const from = typeof cfg.max_window_layers === 'number' ? cfg.max_window_layers : numLayers;
    sliding = Array.from({ length: numLayers }, (_, i) => i >= from);
  } else {
    sliding = [];
  }
  if (!sliding.includes(true)) return null;
  if (typeof window !== 'number' || !Number.isInteger(window) || window <= 0) {
    throw new ModelConfigError(
      file,
      `layers use sliding attention but sliding_window is ${shortJson(window)}`,
    );
  }
  return window;
}

/**
 * Refuses a context the model cannot run exactly: longer than a sliding window (our attention is
 * full attention) or than max_position_embeddings.
 */
export function checkContextLength(config: ModelConfig, maxContext: number): void {
  if (config.slidingWindow !== null && maxContext > config.slidingWindow) {
    throw new UnsupportedModelError(
      config.configFile,
      'sliding_window',
      `layers attend within ${config.slidingWindow} tokens, which this runtime does not implement; use a context of at most ${config.slidingWindow} tokens (asked for ${maxContext})`,
    );
  }
  if (maxContext > config.maxPositionEmbeddings) {
    throw new UnsupportedModelError(
      config.configFile,
      'max_position_embeddings',
      `the model is made for ${config.maxPositionEmbeddings} positions; a context of ${maxContext} was asked for`,
    );
  }
}

/**
 * RoPE inverse frequencies as transformers computes them in f32 (`_compute_default_rope_parameters`):
 *   inv_freq[i] = 1 / theta ** (float32(2i) / head_dim)       (f32 division, f32 pow, f32 reciprocal)
 * 'linear' divides them by `factor`. Position p's angle for pair i is float32(p * inv_freq[i]), and
 * cos/sin of it multiply dims i and i + head_dim/2 (rotate_half). Both runners use this table.
 */
export function ropeInverseFrequencies(config: ModelConfig): Float32Array {
  const half = config.headDim / 2;
  const out = new Float32Array(half);
  const f = Math.fround;
  for (let i = 0; i < half; i++) {
    const exponent = f(f(2 * i) / config.headDim);
    const power = f(config.ropeTheta ** exponent);
    let inv = f(1 / power);
    if (config.ropeType === 'linear') inv = f(inv / config.ropeFactor);
    out[i] = inv;
  }
  return out;
}
