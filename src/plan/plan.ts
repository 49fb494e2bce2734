/**
 * From a recipe and the models' headers to the ordered list of output tensors and their inputs.
 * Everything that can be wrong with the inputs (missing tensors, shapes, dtypes) is found here,
 * before a byte of output is written.
 */
import { DTYPE_BYTES, type DType, type FloatDType, isFloatDType } from '../formats/dtype';
import { shortJson } from '../formats/json-text';
import type { ModelTensorIndex } from '../formats/model-index';
import type { TensorInfo } from '../formats/safetensors';
import { planShards, type ShardLayout } from '../formats/shard-writer';
import type { MergeMethod } from '../methods/types';
import type { MergeRecipe } from '../recipe/recipe';

/**
 * Most problems one PlanError lists. A recipe pairing two unrelated models can differ in every
 * tensor; the first few dozen say what is wrong, the count says how much.
 */
export const MAX_LISTED_PROBLEMS = 40;

/**
 * The models cannot be merged as the recipe asks. Found from the headers alone, so `problems` lists
 * every missing tensor, shape mismatch and dtype conflict across all models at once.
 */
export class PlanError extends Error {
  override name = 'PlanError';
  readonly problems: readonly string[];

  constructor(problems: string | readonly string[]) {
    const list = typeof problems === 'string' ? [problems] : problems;
    super(describeProblems(list));
    this.problems = list;
  }
}

/** One problem as it is; several as a count and a list (one line each, capped). */
function describeProblems(problems: readonly string[]): string {
  if (problems.length === 1) return problems[0];
  const shown = problems.slice(0, MAX_LISTED_PROBLEMS).map((p) => `\n- ${p}`);
  const more = problems.length - shown.length;
  return (
    `${problems.length} problems in the models' safetensors headers (found before any tensor data was read):` +
    shown.join('') +
    (more > 0 ? `\n- and ${more} more` : '')
  );
}

export const EMBED_NAME = 'model.embed_tokens.weight';
export const LM_HEAD_NAME = 'lm_head.weight';

export interface PlannedModel {
  /** The recipe's reference. */
  readonly reference: string;
  readonly index: ModelTensorIndex;
  /** Parsed config.json, `{}` when the model has none. */
  readonly config: Record<string, unknown>;
  /** config.json as written, so the output's can keep its formatting. */
  readonly configText?: string;
}

export interface PlanInput {
  /** Position in `PlanContext.models` (mergekit's order; the random key's model index). */
  readonly modelIndex: number;
  readonly tensor: TensorInfo;
  /** Set when a larger embedding is cut to the base-sized top-left submatrix. */
  readonly submatrix?: { rows: number; cols: number };
}

export interface TensorPlan {
  readonly name: string;
  readonly shape: number[];
  readonly outDtype: DType;
  /** `copy`: a non-float tensor taken from the base unchanged. */
  readonly kind: 'merge' | 'copy';
  /** Inputs in `MergeInputs.tensors` order. */
  readonly inputs: PlanInput[];
  /** Index in `inputs` of the base model, -1 when none. */
  readonly baseIndex: number;
  readonly byteLength: number;
}

export interface MergePlan {
  readonly tensors: TensorPlan[];
  readonly layout: ShardLayout;
  /** The models in mergekit's order: the recipe's `models`, then the base when not listed. */
  readonly models: PlannedModel[];
  readonly baseIndex: number;
  /** The base model's (or the first model's) config.json, the template of the output's. */
  readonly config: Record<string, unknown>;
  /** The same config.json as written, when there is one. */
  readonly configText?: string;
  readonly numLayers: number;
  /** True when the output has its own lm_head though the base ties it. */
  readonly untiesHead: boolean;
  readonly totalInputBytes: number;
  readonly totalOutputBytes: number;
}

/** The models that take part, in mergekit's order. */
export function orderModels(recipe: MergeRecipe, method: MergeMethod): { refs: string[]; baseIndex: number } {
  const refs: string[] = [];
  for (const m of recipe.models) if (!refs.includes(m.model)) refs.push(m.model);
  let baseIndex = -1;
  if (recipe.baseModel && method.baseModel !== 'unused') {
    baseIndex = refs.indexOf(recipe.baseModel);
    if (baseIndex < 0) {
      refs.push(recipe.baseModel);
      baseIndex = refs.length - 1;
    }
  }
  return { refs, baseIndex };
}

function ties(config: Record<string, unknown>): boolean {
  // transformers' PretrainedConfig defaults tie_word_embeddings to true.
  return config.tie_word_embeddings !== false;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/** Output order: embeddings, layers by number, other tensors, lm_head. */
function tensorOrderKey(name: string): [number, number, string] {
  if (name === EMBED_NAME) return [0, 0, name];
  const m = /^model\.layers\.(\d+)\./.exec(name);
  if (m) return [1, Number(m[1]), name];
  if (name === LM_HEAD_NAME) return [3, 0, name];
  return [2, 0, name];
}

function compareNames(a: string, b: string): number {
  const ka = tensorOrderKey(a);
  const kb = tensorOrderKey(b);
  return ka[0] - kb[0] || ka[1] - kb[1] || (ka[2] < kb[2] ? -1 : ka[2] > kb[2] ? 1 : 0);
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export interface PlanOptions {
  maxShardBytes: number;
}

export function planMerge(
  recipe: MergeRecipe,
  method: MergeMethod,
  models: PlannedModel[],
  baseIndex: number,
  options: PlanOptions,
): MergePlan {
  if (models.length === 0) throw new PlanError('the recipe names no models');
  const template = models[Math.max(baseIndex, 0)];
  const names = [...template.index.tensors.keys()];
  const anyUntiedHead = models.some((m) => m.index.tensors.has(LM_HEAD_NAME));
  const untiesHead = anyUntiedHead && !template.index.tensors.has(LM_HEAD_NAME);
  if (untiesHead) names.push(LM_HEAD_NAME);
  names.sort(compareNames);

  const recipeDtype: FloatDType | undefined = recipe.outDtype ?? recipe.dtype;
  const tensors: TensorPlan[] = [];
  // Every problem is collected, so a user fixes a recipe in one round instead of one per problem.
  const problems: string[] = [];
  let totalInputBytes = 0;
  for (const name of names) {
    const found = models.map((m) => lookup(m, name));
    const templateInfo = found[models.indexOf(template)];
    if (!templateInfo) {
      // Only lm_head can be absent from the template: the base ties it to embeddings it lacks.
      problems.push(
        `${template.reference}: tensor ${name} is missing from ${weightFiles(template)} and no tied tensor covers it`,
      );
      continue;
    }
    const shape = templateInfo.shape;
    if (!isFloatDType(templateInfo.dtype)) {
      tensors.push({
        name,
        shape,
        outDtype: templateInfo.dtype,
        kind: 'copy',
        inputs: [{ modelIndex: models.indexOf(template), tensor: templateInfo }],
        baseIndex: 0,
        byteLength: templateInfo.byteLength,
      });
      totalInputBytes += templateInfo.byteLength;
      continue;
    }
    const inputs: PlanInput[] = [];
    let planBase = -1;
    const problemsBefore = problems.length;
    for (let i = 0; i < models.length; i++) {
      const info = found[i];
      const model = models[i];
      if (!info) {
        problems.push(
          `${model.reference}: tensor ${name} is missing from ${weightFiles(model)}` +
            (name === LM_HEAD_NAME
              ? ` (and ${EMBED_NAME} cannot stand in: the model does not tie embeddings)`
              : ''),
        );
        continue;
      }
      if (!isFloatDType(info.dtype)) {
        problems.push(
          `${model.reference}/${info.file}: tensor ${name} is ${info.dtype}, but ${template.reference} has it as a float`,
        );
        continue;
      }
      let submatrix: PlanInput['submatrix'];
      if (!sameShape(info.shape, shape)) {
        const isEmbedding = name === EMBED_NAME || name === LM_HEAD_NAME;
        const canCut =
          method.taskVector &&
          isEmbedding &&
          shape.length === 2 &&
          info.shape.length === 2 &&
          info.shape[0] >= shape[0] &&
          info.shape[1] >= shape[1];
        if (!canCut) {
          problems.push(
            `tensor ${name}: ${model.reference}/${info.file} has shape ${fmt(info.shape)} but ${template.reference} has ${fmt(shape)}`,
          );
          continue;
        }
        submatrix = { rows: shape[0], cols: shape[1] };
      }
      if (i === baseIndex) planBase = inputs.length;
      inputs.push({ modelIndex: i, tensor: info, submatrix });
      totalInputBytes += info.byteLength;
    }
    if (problems.length > problemsBefore) continue;
    const outDtype = recipeDtype ?? templateInfo.dtype;
    tensors.push({
      name,
      shape,
      outDtype,
      kind: 'merge',
      inputs,
      baseIndex: planBase,
      byteLength: elementCount(shape) * DTYPE_BYTES[outDtype],
    });
  }
  for (const model of models) {
    try {
      checkLayerCount(model);
    } catch (e) {
      if (!(e instanceof PlanError)) throw e;
      problems.push(...e.problems);
    }
  }
  if (problems.length > 0) throw new PlanError(problems);
  const numLayers = checkLayerCount(template);
  const layout = planShards(
    tensors.map((t) => ({ name: t.name, dtype: t.outDtype, shape: t.shape })),
    options.maxShardBytes,
  );
  return {
    tensors,
    layout,
    models,
    baseIndex,
    config: template.config,
    configText: template.configText,
    numLayers,
    untiesHead,
    totalInputBytes,
    totalOutputBytes: layout.totalTensorBytes,
  };
}

/** The model's weight files, for saying where a tensor was looked for. */
function weightFiles(model: PlannedModel): string {
  const files = [...model.index.sources.keys()].filter((f) => f.endsWith('.safetensors')).sort();
  if (files.length === 0) return 'its weights';
  return files.length <= 2 ? files.join(' and ') : `its ${files.length} shards (${files[0]}, …)`;
}

/** A model's tensor by name, following the lm_head -> embed_tokens tie in models that tie them. */
function lookup(model: PlannedModel, name: string): TensorInfo | undefined {
  const direct = model.index.tensors.get(name);
  if (direct) return direct;
  if (name === LM_HEAD_NAME && ties(model.config)) return model.index.tensors.get(EMBED_NAME);
  return undefined;
}

/**
 * The number of layers that layer gradients are spread over: config.json's num_hidden_layers, which
 * must be a whole number equal to the layers in the weights (a wrong count would silently move every
 * gradient), else the layers found in the weights.
 */
function checkLayerCount(model: PlannedModel): number {
  const inWeights = countLayers([...model.index.tensors.keys()]);
  const raw = model.config.num_hidden_layers;
  if (raw === undefined || raw === null) return inWeights;
  if (typeof raw !== 'number' || !Number.isSafeInteger(raw) || raw < 0) {
    throw new PlanError(
      `${model.reference}/config.json: num_hidden_layers is ${shortJson(raw)}, not a whole number of layers`,
    );
  }
  if (inWeights > 0 && raw !== inWeights) {
    throw new PlanError(
      `${model.reference}/config.json: num_hidden_layers is ${raw}, but the weights have ${inWeights} layers ` +
        `(model.layers.0 to model.layers.${inWeights - 1}); fix config.json`,
    );
  }
  return raw;
}

function countLayers(names: string[]): number {
  let max = -1;
  for (const n of names) {
    const m = /^model\.layers\.(\d+)\./.exec(n);
    if (m) max = Math.max(max, Number(m[1]));
  }
  return max + 1;
}
