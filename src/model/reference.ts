/**
 * The CPU reference forward pass in f32: the specification the GPU kernels are tested against, and
 * a runner for small models. It follows transformers' Qwen2/Qwen3/Llama modelling code (eager
 * attention) operation by operation:
 *
 *   x = embed_tokens[ids]
 *   per layer:  h = RMSNorm(x) ; q,k,v = h W^T (+ b) ; [Qwen3: q,k = RMSNorm per head]
 *               q,k = RoPE(q,k) (rotate_half; angle = f32(pos * inv_freq), see config.ts)
 *               a = softmax(q k^T / sqrt(head_dim) + causal) v   (GQA: head j reads kv head j / (H/KV))
 *               x = x + a W_o^T ; h = RMSNorm(x) ; x = x + (silu(h W_g^T) * (h W_u^T)) W_d^T
 *   logits = RMSNorm(x) W_lm^T
 *   RMSNorm(x) = w * (x * rsqrt(mean(x^2) + eps)), in f32 as transformers' Qwen2RMSNorm.
 *
 * Values are stored in f32 (Float32Array) after every operation, as torch does; dot products and
 * the softmax sum accumulate in f64, which is at least as accurate as any f32 summation order.
 */
import { checkContextLength, type ModelConfig, ropeInverseFrequencies } from './config';
import {
  checkTokens,
  type ModelRunner,
  type ModuleInputObserver,
  type PrefillHooks,
  type SamplingOptions,
  type StepResult,
} from './runner';
import { sampleStep, validateSampling } from './sampling';
import { EMBED_TOKENS, FINAL_NORM, LM_HEAD, layerWeightNames, type ModelWeights } from './weights';

/** Context used when none is asked for: at most this many positions (KV cache memory grows with it). */
export const DEFAULT_MAX_CONTEXT = 4096;

interface LayerWeights {
  prefix: string;
  inputNorm: Float32Array;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  o: Float32Array;
  qBias?: Float32Array;
  kBias?: Float32Array;
  vBias?: Float32Array;
  qNorm?: Float32Array;
  kNorm?: Float32Array;
  postAttnNorm: Float32Array;
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
}

export interface CpuRunnerOptions {
  /** KV cache positions; default min(max_position_embeddings, DEFAULT_MAX_CONTEXT). */
  maxContext?: number;
}

/**
 * out[t, o] = sum_i x[t, i] * w[o, i] (+ bias[o]): a PyTorch Linear with weight [outDim, inDim].
 * Register tiles of 2 tokens x 4 output rows, so each loaded weight serves two tokens and each
 * loaded input four rows; every output still sums over i in order, so tiling changes no result.
 */
export function linear(
  x: Float32Array,
  tokens: number,
  inDim: number,
  w: Float32Array,
  outDim: number,
  bias?: Float32Array,
): Float32Array {
  const out = new Float32Array(tokens * outDim);
  let o = 0;
  for (; o + 4 <= outDim; o += 4) {
    const w0 = o * inDim;
    const w1 = w0 + inDim;
    const w2 = w1 + inDim;
    const w3 = w2 + inDim;
    let t = 0;
    for (; t + 2 <= tokens; t += 2) {
      const xa = t * inDim;
      const xb = xa + inDim;
      let a0 = 0;
      let a1 = 0;
      let a2 = 0;
      let a3 = 0;
      let b0 = 0;
      let b1 = 0;
      let b2 = 0;
      let b3 = 0;
      for (let i = 0; i < inDim; i++) {
        const p = x[xa + i];
        const q = x[xb + i];
        const v0 = w[w0 + i];
        const v1 = w[w1 + i];
        const v2 = w[w2 + i];
        const v3 = w[w3 + i];
        a0 += p * v0;
        a1 += p * v1;
        a2 += p * v2;
        a3 += p * v3;
        b0 += q * v0;
        b1 += q * v1;
        b2 += q * v2;
        b3 += q * v3;
      }
      store4(out, t * outDim + o, a0, a1, a2, a3, bias, o);
      store4(out, (t + 1) * outDim + o, b0, b1, b2, b3, bias, o);
    }
    for (; t < tokens; t++) {
      const xo = t * inDim;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let i = 0; i < inDim; i++) {
        const xi = x[xo + i];
        s0 += xi * w[w0 + i];
        s1 += xi * w[w1 + i];
        s2 += xi * w[w2 + i];
        s3 += xi * w[w3 + i];
      }
      store4(out, t * outDim + o, s0, s1, s2, s3, bias, o);
    }
  }
  for (; o < outDim; o++) {
    const wo = o * inDim;
    for (let t = 0; t < tokens; t++) {
      const xo = t * inDim;
      let s = 0;
      for (let i = 0; i < inDim; i++) s += x[xo + i] * w[wo + i];
      out[t * outDim + o] = bias ? Math.fround(s) + bias[o] : s;
    }
  }
  return out;
}

/** Four sums into out[r..r+3]; with a bias, added to the f32-rounded product as torch does (two roundings). */
function store4(
  out: Float32Array,
  r: number,
  s0: number,
  s1: number,
  s2: number,
  s3: number,
  bias: Float32Array | undefined,
  o: number,
): void {
  if (bias) {
    out[r] = Math.fround(s0) + bias[o];
    out[r + 1] = Math.fround(s1) + bias[o + 1];
    out[r + 2] = Math.fround(s2) + bias[o + 2];
    out[r + 3] = Math.fround(s3) + bias[o + 3];
  } else {
    out[r] = s0;
    out[r + 1] = s1;
    out[r + 2] = s2;
    out[r + 3] = s3;
  }
}

/** RMSNorm of each `dim`-long row of x, in place into `out` (may be x): w * (x * rsqrt(mean(x^2) + eps)). */
export function rmsNorm(
  x: Float32Array,
  dim: number,
  weight: Float32Array,
  eps: number,
  out: Float32Array,
): void {
  const f = Math.fround;
  const rows = x.length / dim;
  for (let r = 0; r < rows; r++) {
    const base = r * dim;
    let sumSq = 0;
    for (let i = 0; i < dim; i++) sumSq += x[base + i] * x[base + i];
    const inv = f(1 / Math.sqrt(f(f(sumSq / dim) + eps)));
    for (let i = 0; i < dim; i++) out[base + i] = weight[i] * f(x[base + i] * inv);
  }
}

/** RoPE in place on `[tokens, heads, headDim]` rows, token t at position `start + t` (rotate_half). */
export function applyRope(
  x: Float32Array,
  tokens: number,
  heads: number,
  headDim: number,
  start: number,
  invFreq: Float32Array,
): void {
  const half = headDim / 2;
  const f = Math.fround;
  const cos = new Float32Array(half);
  const sin = new Float32Array(half);
  for (let t = 0; t < tokens; t++) {
    const pos = start + t;
    for (let i = 0; i < half; i++) {
      const angle = f(pos * invFreq[i]);
      cos[i] = Math.cos(angle);
      sin[i] = Math.sin(angle);
    }
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const a = x[base + i];
        const b = x[base + i + half];
        // q*cos + rotate_half(q)*sin, rotate_half(q) = [-q2, q1]; each product rounded to f32 as torch.
        x[base + i] = f(a * cos[i]) - f(b * sin[i]);
        x[base + i + half] = f(b * cos[i]) + f(a * sin[i]);
      }
    }
  }
}

/** silu(gate) * up elementwise, into gate. */
function siluGate(gate: Float32Array, up: Float32Array): void {
  const f = Math.fround;
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    gate[i] = f(g / (1 + Math.exp(-g))) * up[i];
  }
}

export class CpuReferenceRunner implements ModelRunner {
  readonly backend = 'cpu' as const;
  private cacheLength = 0;
  private logits: Float32Array | undefined;
  private readonly keyCache: Float32Array[];
  private readonly valueCache: Float32Array[];
  private readonly invFreq: Float32Array;
  private disposed = false;

  private constructor(
    readonly config: ModelConfig,
    readonly maxContext: number,
    private readonly embed: Float32Array,
    private readonly layers: LayerWeights[],
    private readonly finalNorm: Float32Array,
    private readonly lmHead: Float32Array,
  ) {
    const kvDim = config.numKvHeads * config.headDim;
    this.keyCache = layers.map(() => new Float32Array(maxContext * kvDim));
    this.valueCache = layers.map(() => new Float32Array(maxContext * kvDim));
    this.invFreq = ropeInverseFrequencies(config);
  }

  /** Reads every weight (tensor by tensor) into f32 and allocates the KV cache. */
  static async create(weights: ModelWeights, options: CpuRunnerOptions = {}): Promise<CpuReferenceRunner> {
    const config = weights.config;
    const maxContext = options.maxContext ?? Math.min(config.maxPositionEmbeddings, DEFAULT_MAX_CONTEXT);
    if (!Number.isInteger(maxContext) || maxContext <= 0) {
      throw new RangeError(`the context must be a positive number of tokens, got ${maxContext}`);
    }
    checkContextLength(config, maxContext);
    const layers: LayerWeights[] = [];
    for (let layer = 0; layer < config.numLayers; layer++) {
      const n = layerWeightNames(config, layer);
      const opt = async (name: string | undefined) => (name === undefined ? undefined : weights.f32(name));
      layers.push({
        prefix: `model.layers.${layer}`,
        inputNorm: await weights.f32(n.inputNorm),
        q: await weights.f32(n.q),
        k: await weights.f32(n.k),
        v: await weights.f32(n.v),
        o: await weights.f32(n.o),
        qBias: await opt(n.qBias),
        kBias: await opt(n.kBias),
        vBias: await opt(n.vBias),
        qNorm: await opt(n.qNorm),
        kNorm: await opt(n.kNorm),
        postAttnNorm: await weights.f32(n.postAttnNorm),
        gate: await weights.f32(n.gate),
        up: await weights.f32(n.up),
        down: await weights.f32(n.down),
      });
    }
    const embed = await weights.f32(EMBED_TOKENS);
    const lmHead = config.tieWordEmbeddings ? embed : await weights.f32(LM_HEAD);
    return new CpuReferenceRunner(config, maxContext, embed, layers, await weights.f32(FINAL_NORM), lmHead);
  }

  get length(): number {
    return this.cacheLength;
  }

  async prefill(
    tokens: readonly number[],
    sampling: SamplingOptions,
    hooks?: PrefillHooks,
  ): Promise<StepResult> {
    this.checkUsable();
    validateSampling(sampling);
    checkTokens(this.config, tokens, this.cacheLength, this.maxContext);
    this.logits = this.forward(tokens, hooks?.onModuleInput);
    return sampleStep(this.logits, sampling, this.cacheLength);
  }

  decode(token: number, sampling: SamplingOptions): Promise<StepResult> {
    return this.prefill([token], sampling);
  }

  async lastLogits(): Promise<Float32Array> {
    this.checkUsable();
    if (!this.logits) throw new Error('no logits yet: run prefill first');
    return this.logits.slice();
  }

  reset(): void {
    this.cacheLength = 0;
    this.logits = undefined;
  }

  dispose(): void {
    this.disposed = true;
    this.logits = undefined;
  }

  private checkUsable(): void {
    if (this.disposed) throw new Error('the runner was disposed');
  }

  /** Runs `ids` at positions cacheLength.., appends their keys and values, returns the last logits. */
  private forward(ids: readonly number[], observe?: ModuleInputObserver): Float32Array {
    const cfg = this.config;
    const { hiddenSize: h, numHeads, numKvHeads, headDim, intermediateSize: m, rmsNormEps: eps } = cfg;
    const T = ids.length;
    const start = this.cacheLength;
    const qDim = numHeads * headDim;
    const kvDim = numKvHeads * headDim;
    const group = numHeads / numKvHeads;
    const scale = 1 / Math.sqrt(headDim);

    const x = new Float32Array(T * h);
    for (let t = 0; t < T; t++) x.set(this.embed.subarray(ids[t] * h, (ids[t] + 1) * h), t * h);
    const normed = new Float32Array(T * h);
    const scores = new Float64Array(start + T);

    for (const [layer, w] of this.layers.entries()) {
      observe?.(`${w.prefix}.input_layernorm`, x, h);
      rmsNorm(x, h, w.inputNorm, eps, normed);
      if (observe) {
        for (const proj of ['q_proj', 'k_proj', 'v_proj'])
          observe(`${w.prefix}.self_attn.${proj}`, normed, h);
      }
      const q = linear(normed, T, h, w.q, qDim, w.qBias);
      const k = linear(normed, T, h, w.k, kvDim, w.kBias);
      const v = linear(normed, T, h, w.v, kvDim, w.vBias);
      if (w.qNorm && w.kNorm) {
        // Qwen3's per-head norms see [tokens * heads, headDim].
        observe?.(`${w.prefix}.self_attn.q_norm`, q, headDim);
        observe?.(`${w.prefix}.self_attn.k_norm`, k, headDim);
        rmsNorm(q, headDim, w.qNorm, eps, q);
        rmsNorm(k, headDim, w.kNorm, eps, k);
      }
      applyRope(q, T, numHeads, headDim, start, this.invFreq);
      applyRope(k, T, numKvHeads, headDim, start, this.invFreq);
      const keys = this.keyCache[layer];
      const values = this.valueCache[layer];
      keys.set(k, start * kvDim);
      values.set(v, start * kvDim);

      const attn = new Float32Array(T * qDim);
      for (let t = 0; t < T; t++) {
        const visible = start + t + 1;
        for (let head = 0; head < numHeads; head++) {
          const qo = (t * numHeads + head) * headDim;
          const kvOff = Math.floor(head / group) * headDim;
          let max = Number.NEGATIVE_INFINITY;
          for (let s = 0; s < visible; s++) {
            const ko = s * kvDim + kvOff;
            let dot = 0;
            for (let d = 0; d < headDim; d++) dot += q[qo + d] * keys[ko + d];
            // torch: f32 matmul, then an f32 multiply by the scale.
            const score = Math.fround(Math.fround(dot) * scale);
            scores[s] = score;
            if (score > max) max = score;
          }
          let sum = 0;
          for (let s = 0; s < visible; s++) {
            const e = Math.exp(scores[s] - max);
            scores[s] = e;
            sum += e;
          }
          for (let s = 0; s < visible; s++) scores[s] = Math.fround(scores[s] / sum);
          for (let d = 0; d < headDim; d++) {
            let acc = 0;
            for (let s = 0; s < visible; s++) acc += scores[s] * values[s * kvDim + kvOff + d];
            attn[qo + d] = acc;
          }
        }
      }
      observe?.(`${w.prefix}.self_attn.o_proj`, attn, qDim);
      const o = linear(attn, T, qDim, w.o, h);
      for (let i = 0; i < x.length; i++) x[i] += o[i];

      observe?.(`${w.prefix}.post_attention_layernorm`, x, h);
      rmsNorm(x, h, w.postAttnNorm, eps, normed);
      if (observe) {
        observe(`${w.prefix}.mlp.gate_proj`, normed, h);
        observe(`${w.prefix}.mlp.up_proj`, normed, h);
      }
      const gate = linear(normed, T, h, w.gate, m);
      const up = linear(normed, T, h, w.up, m);
      siluGate(gate, up);
      observe?.(`${w.prefix}.mlp.down_proj`, gate, m);
      const down = linear(gate, T, m, w.down, h);
      for (let i = 0; i < x.length; i++) x[i] += down[i];
    }
    this.cacheLength = start + T;

    // Only the last position's logits are needed; the observer sees lm_head's input at every position.
    if (observe) {
      observe(FINAL_NORM.replace(/\.weight$/, ''), x, h);
      rmsNorm(x, h, this.finalNorm, eps, normed);
      observe(LM_HEAD.replace(/\.weight$/, ''), normed, h);
    }
    const last = new Float32Array(h);
    rmsNorm(x.subarray((T - 1) * h), h, this.finalNorm, eps, last);
    return linear(last, 1, h, this.lmHead, cfg.vocabSize);
  }
}

/** A CPU reference runner over `weights` (every weight read once into f32). */
export function createCpuRunner(
  weights: ModelWeights,
  options?: CpuRunnerOptions,
): Promise<CpuReferenceRunner> {
  return CpuReferenceRunner.create(weights, options);
}
