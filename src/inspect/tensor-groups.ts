/**
 * Which part of a transformer a tensor belongs to, from its name: the layer index and whether it is
 * attention, MLP or something else (norms). The charts group task-vector statistics this way because
 * fine-tunes move attention and MLP weights by different amounts, layer by layer.
 */

/** Decoder layers as transformers names them: `model.layers.{i}.…` (Qwen2, Llama), `h.{i}` (GPT-2), `blocks.{i}`. */
const LAYER_TENSOR = /(?:^|\.)(?:layers|h|blocks)\.(\d+)\./;
const ATTENTION_PART = /(?:^|\.)(?:self_attn|attn|attention|self_attention)\./;
const MLP_PART = /(?:^|\.)(?:mlp|feed_forward|ffn)\./;

export type LayerBlock = 'attention' | 'mlp' | 'other';

export const LAYER_BLOCKS: readonly LayerBlock[] = ['attention', 'mlp', 'other'];

export interface TensorGroup {
  /** Decoder layer index, or null for tensors outside the layers (embeddings, final norm, lm_head). */
  readonly layer: number | null;
  readonly block: LayerBlock;
}

export function tensorGroup(name: string): TensorGroup {
  const match = LAYER_TENSOR.exec(name);
  const layer = match ? Number(match[1]) : null;
  const block: LayerBlock = ATTENTION_PART.test(name) ? 'attention' : MLP_PART.test(name) ? 'mlp' : 'other';
  return { layer, block };
}

/**
 * The 2-D tensor shown first in the spectrum view: the first layer's MLP down projection when the
 * model has one (the paper's SVD methods act on such matrices), else the first matrix of a layer,
 * else the first matrix.
 */
export function defaultSpectrumTensor(matrices: readonly string[]): string | undefined {
  const inLayer = (name: string) => tensorGroup(name).layer;
  const firstLayer = Math.min(...matrices.map((n) => inLayer(n) ?? Number.POSITIVE_INFINITY));
  return (
    matrices.find((n) => inLayer(n) === firstLayer && /down_proj\.weight$/.test(n)) ??
    matrices.find((n) => inLayer(n) === firstLayer) ??
    matrices[0]
  );
}
