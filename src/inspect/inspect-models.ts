/**
 * Task-vector statistics of several fine-tuned models against their base, read from the stored
 * weights one tensor at a time and in chunks of elements, so memory stays at a few chunks per model
 * whatever the model size: per layer, relative norms (attention, MLP), sign conflicts between the
 * models, and what TIES' trimming keeps of one chosen model; and the singular spectrum of one chosen
 * 2-D task vector.
 *
 * Tensors are paired by name, with the merge planner's two allowances: a model without
 * `lm_head.weight` ties it to its embeddings, and a model with extra vocabulary rows is compared on
 * the base's rows. Other tensors that cannot be paired (missing, other shape, not floating point)
 * are left out and listed with the reason.
 */
import type { ModelFiles } from '../engine/io';
import { abortError } from '../engine/merge';
import type { ByteSource } from '../formats/byte-source';
import { DTYPE_BYTES, decodeToF32, type FloatDType, isFloatDType } from '../formats/dtype';
import { type ModelTensorIndex, readModelTensors } from '../formats/model-index';
import type { TensorInfo } from '../formats/safetensors';
import { EMBED_NAME, LM_HEAD_NAME } from '../plan/plan';
import { resolveSetting, tensorPosition } from '../recipe';
import type { ParameterSetting } from '../recipe/recipe';
import { type TaskVectorSpectrum, taskVectorSpectrum } from './task-vector-spectrum';
import {
  addNormSums,
  addSignConflicts,
  emptyKeptMass,
  emptyNormSums,
  emptySignCounts,
  type KeptMass,
  mergeKeptMass,
  mergeNormSums,
  mergeSignCounts,
  type NormSums,
  type SignCounts,
  TiesKeptMass,
  taskVector,
} from './task-vector-stats';
import { type LayerBlock, tensorGroup } from './tensor-groups';

/** Elements read per model at a time: 4 MiB of f32 each, so a pass over three models holds ~32 MiB. */
export const INSPECT_CHUNK_ELEMENTS = 1 << 20;

/** A model or tensor that cannot be inspected as asked; the message names the model and tensor. */
export class InspectError extends Error {
  override name = 'InspectError';
}

export interface InspectProgress {
  tensorsDone: number;
  tensorsTotal: number;
  tensor?: string;
}

export type BlockRecord<T> = Record<LayerBlock, T>;

export interface LayerInspection {
  layer: number;
  /** Per model (in `TaskVectorInspection.models` order), per block. */
  norms: BlockRecord<NormSums>[];
  /** Sign conflicts between the models' task vectors, per block (all zero with fewer than two models). */
  signs: BlockRecord<SignCounts>;
  /** What TIES keeps of the focus model's task vector in this layer. */
  ties: KeptMass;
}

export interface TaskVectorInspection {
  base: string;
  models: string[];
  /** The model whose TIES trimming is measured. */
  focus: string;
  /** Indexed by layer, 0 .. numLayers - 1. */
  layers: LayerInspection[];
  /** Over every inspected tensor, in the layers and out (embeddings, final norm, lm_head). */
  totals: { norms: NormSums[]; signs: SignCounts; ties: KeptMass };
  /** Range of the TIES density over the inspected tensors (a recipe may vary it by layer). */
  density: { min: number; max: number };
  /** 2-D tensors every model has a task vector for, in the base's order: the spectrum's choices. */
  matrices: string[];
  tensors: number;
  skipped: { tensor: string; reason: string }[];
}

export interface InspectModelsOptions {
  base: ModelFiles;
  models: readonly ModelFiles[];
  /** Index in `models` of the model whose TIES trimming is measured. */
  focus: number;
  /**
   * TIES density as recipe settings, tried in order for each tensor until one applies (the model's
   * own, the recipe's top-level, then a plain number as the fallback), as mergekit resolves them.
   */
  density: readonly ParameterSetting[];
  signal?: AbortSignal;
  onProgress?: (p: InspectProgress) => void;
  chunkElements?: number;
}

interface LocatedTensor {
  model: string;
  source: ByteSource;
  info: TensorInfo;
  dtype: FloatDType;
}

interface PairedTensor {
  name: string;
  shape: number[];
  elements: number;
  base: LocatedTensor;
  models: LocatedTensor[];
}

function elementsOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function findTensor(index: ModelTensorIndex, name: string): TensorInfo | undefined {
  // A tied model has no lm_head: its embeddings are its head.
  return index.tensors.get(name) ?? (name === LM_HEAD_NAME ? index.tensors.get(EMBED_NAME) : undefined);
}

function locate(index: ModelTensorIndex, info: TensorInfo): LocatedTensor | string {
  if (!isFloatDType(info.dtype)) return `it is ${info.dtype} in ${index.model}, not floating point`;
  const source = index.sources.get(info.file);
  if (!source)
    throw new InspectError(`${index.model}/${info.file}: shard of tensor ${info.name} is not open`);
  return { model: index.model, source, info, dtype: info.dtype };
}

/** The base's tensor and every model's, or why they cannot be compared. */
function pairTensor(name: string, base: ModelTensorIndex, models: ModelTensorIndex[]): PairedTensor | string {
  const baseInfo = findTensor(base, name);
  if (!baseInfo) return `${base.model} has no such tensor`;
  const baseLoc = locate(base, baseInfo);
  if (typeof baseLoc === 'string') return baseLoc;
  const shape = baseInfo.shape;
  const located: LocatedTensor[] = [];
  for (const model of models) {
    const info = findTensor(model, name);
    if (!info) return `${model.model} has no such tensor`;
    const loc = locate(model, info);
    if (typeof loc === 'string') return loc;
    const same = info.shape.length === shape.length && info.shape.every((d, i) => d === shape[i]);
    // Extra vocabulary rows: the base's rows come first, so the base-sized prefix is the same matrix.
    const moreRows =
      shape.length === 2 && info.shape.length === 2 && info.shape[1] === shape[1] && info.shape[0] > shape[0];
    if (!same && !moreRows) {
      return `its shape is [${info.shape.join(', ')}] in ${model.model} but [${shape.join(', ')}] in ${base.model}`;
    }
    located.push(loc);
  }
  return { name, shape, elements: elementsOf(shape), base: baseLoc, models: located };
}

/** Tensor names in the base's order, plus lm_head when a model unties it from a tied base. */
function tensorNames(base: ModelTensorIndex, models: ModelTensorIndex[]): string[] {
  const names = [...base.tensors.keys()];
  if (!base.tensors.has(LM_HEAD_NAME) && models.some((m) => m.tensors.has(LM_HEAD_NAME)))
    names.push(LM_HEAD_NAME);
  return names;
}

async function readChunk(
  t: LocatedTensor,
  tensor: string,
  start: number,
  count: number,
): Promise<Float32Array> {
  const width = DTYPE_BYTES[t.dtype];
  try {
    return decodeToF32(await t.source.read(t.info.offset + start * width, count * width), t.dtype);
  } catch (e) {
    throw new InspectError(
      `${t.model}/${t.info.file}: reading tensor ${tensor} failed: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
}

async function openIndex(model: ModelFiles): Promise<ModelTensorIndex> {
  return readModelTensors(model);
}

/** The first of `settings` that applies to the tensor, as a number. */
export function resolveDensity(
  settings: readonly ParameterSetting[],
  tensor: string,
  numLayers: number,
): number {
  const t = tensorPosition(tensor, numLayers);
  for (const setting of settings) {
    const value = resolveSetting(setting, tensor, t);
    if (value === undefined) continue;
    if (typeof value !== 'number' || !(value >= 0)) {
      throw new InspectError(
        `TIES density for tensor ${tensor} is ${value}; it must be a number from 0 to 1`,
      );
    }
    return value;
  }
  throw new InspectError(`no TIES density applies to tensor ${tensor}; give a density for every tensor`);
}

function blockRecord<T>(make: () => T): BlockRecord<T> {
  return { attention: make(), mlp: make(), other: make() };
}

function emptyLayer(layer: number, models: number): LayerInspection {
  return {
    layer,
    norms: Array.from({ length: models }, () => blockRecord(emptyNormSums)),
    signs: blockRecord(emptySignCounts),
    ties: emptyKeptMass(),
  };
}

/** One tensor's statistics, before they are added to its layer and the totals. */
interface TensorStats {
  norms: NormSums[];
  signs: SignCounts;
  ties: KeptMass;
}

/**
 * One tensor, chunk by chunk: pass 0 reads every model (norms, sign conflicts, TIES' first
 * histogram); TIES' remaining passes read only the base and the focus model, or reuse the focus
 * task vector when the tensor fits in one chunk.
 */
async function inspectTensor(
  t: PairedTensor,
  focus: number,
  density: number,
  chunk: number,
  signal: AbortSignal | undefined,
): Promise<TensorStats> {
  const norms = t.models.map(() => emptyNormSums());
  const signs = emptySignCounts();
  const ties = new TiesKeptMass(t.elements, density);
  const single = t.elements <= chunk;
  let focusDelta: Float32Array | undefined;
  const check = () => {
    if (signal?.aborted) throw abortError();
  };

  for (let start = 0; start < t.elements; start += chunk) {
    check();
    const count = Math.min(chunk, t.elements - start);
    const base = await readChunk(t.base, t.name, start, count);
    const deltas: Float32Array[] = [];
    for (let m = 0; m < t.models.length; m++) {
      const values = await readChunk(t.models[m], t.name, start, count);
      const delta = taskVector(values, base, values);
      addNormSums(norms[m], base, delta);
      deltas.push(delta);
    }
    if (deltas.length >= 2) addSignConflicts(signs, deltas);
    if (ties.passes > 0) ties.count(0, deltas[focus]);
    else ties.measure(deltas[focus], start);
    if (single) focusDelta = deltas[focus];
  }

  const focusChunks = async (visit: (delta: Float32Array, start: number) => void) => {
    if (focusDelta) {
      visit(focusDelta, 0);
      return;
    }
    for (let start = 0; start < t.elements; start += chunk) {
      check();
      const count = Math.min(chunk, t.elements - start);
      const base = await readChunk(t.base, t.name, start, count);
      const values = await readChunk(t.models[focus], t.name, start, count);
      visit(taskVector(values, base, values), start);
    }
  };
  for (let pass = 1; pass < ties.passes; pass++) await focusChunks((delta) => ties.count(pass, delta));
  if (ties.passes > 0) await focusChunks((delta, start) => ties.measure(delta, start));
  return { norms, signs, ties: ties.result() };
}

export async function inspectTaskVectors(options: InspectModelsOptions): Promise<TaskVectorInspection> {
  const { models, focus, signal } = options;
  const chunk = options.chunkElements ?? INSPECT_CHUNK_ELEMENTS;
  if (models.length === 0) throw new InspectError('pick at least one model to compare with the base');
  if (!(focus >= 0 && focus < models.length)) {
    throw new InspectError(
      `the model for TIES (position ${focus}) is not among the ${models.length} compared`,
    );
  }
  const base = await openIndex(options.base);
  const indices = await Promise.all(models.map(openIndex));
  const names = tensorNames(base, indices);

  const paired: PairedTensor[] = [];
  const skipped: { tensor: string; reason: string }[] = [];
  for (const name of names) {
    const p = pairTensor(name, base, indices);
    if (typeof p === 'string') skipped.push({ tensor: name, reason: p });
    else paired.push(p);
  }
  if (paired.length === 0) {
    throw new InspectError(
      `${options.base.name} shares no floating-point tensor of the same shape with ${models.map((m) => m.name).join(', ')}`,
    );
  }

  const numLayers = Math.max(0, ...paired.map((p) => (tensorGroup(p.name).layer ?? -1) + 1));
  const layers = Array.from({ length: numLayers }, (_, i) => emptyLayer(i, models.length));
  const totals = {
    norms: models.map(() => emptyNormSums()),
    signs: emptySignCounts(),
    ties: emptyKeptMass(),
  };
  const density = { min: Number.POSITIVE_INFINITY, max: Number.NEGATIVE_INFINITY };

  for (let i = 0; i < paired.length; i++) {
    const t = paired[i];
    options.onProgress?.({ tensorsDone: i, tensorsTotal: paired.length, tensor: t.name });
    const d = resolveDensity(options.density, t.name, numLayers);
    density.min = Math.min(density.min, d);
    density.max = Math.max(density.max, d);
    const stats = await inspectTensor(t, focus, d, chunk, signal);
    for (let m = 0; m < models.length; m++) mergeNormSums(totals.norms[m], stats.norms[m]);
    mergeSignCounts(totals.signs, stats.signs);
    mergeKeptMass(totals.ties, stats.ties);
    const group = tensorGroup(t.name);
    if (group.layer !== null) {
      const layer = layers[group.layer];
      for (let m = 0; m < models.length; m++) mergeNormSums(layer.norms[m][group.block], stats.norms[m]);
      mergeSignCounts(layer.signs[group.block], stats.signs);
      mergeKeptMass(layer.ties, stats.ties);
    }
  }
  options.onProgress?.({ tensorsDone: paired.length, tensorsTotal: paired.length });

  return {
    base: options.base.name,
    models: models.map((m) => m.name),
    focus: models[focus].name,
    layers,
    totals,
    density,
    matrices: paired.filter((p) => p.shape.length === 2).map((p) => p.name),
    tensors: paired.length,
    skipped,
  };
}

export interface SpectrumInspection {
  base: string;
  model: string;
  tensor: string;
  spectrum: TaskVectorSpectrum;
}

export interface InspectSpectrumOptions {
  base: ModelFiles;
  model: ModelFiles;
  tensor: string;
  signal?: AbortSignal;
  chunkElements?: number;
}

/** The singular spectrum of one model's task vector for one 2-D tensor (held whole: it is one matrix). */
export async function inspectSpectrum(options: InspectSpectrumOptions): Promise<SpectrumInspection> {
  const { tensor, signal } = options;
  const chunk = options.chunkElements ?? INSPECT_CHUNK_ELEMENTS;
  const [base, model] = await Promise.all([openIndex(options.base), openIndex(options.model)]);
  const paired = pairTensor(tensor, base, [model]);
  if (typeof paired === 'string') throw new InspectError(`tensor ${tensor} cannot be compared: ${paired}`);
  if (paired.shape.length !== 2) {
    throw new InspectError(
      `tensor ${tensor} has shape [${paired.shape.join(', ')}]; a singular spectrum needs a 2-D tensor`,
    );
  }
  const delta = new Float32Array(paired.elements);
  for (let start = 0; start < paired.elements; start += chunk) {
    if (signal?.aborted) throw abortError();
    const count = Math.min(chunk, paired.elements - start);
    const b = await readChunk(paired.base, tensor, start, count);
    const m = await readChunk(paired.models[0], tensor, start, count);
    taskVector(m, b, delta.subarray(start, start + count));
  }
  if (signal?.aborted) throw abortError();
  const [rows, cols] = paired.shape;
  return {
    base: options.base.name,
    model: options.model.name,
    tensor,
    spectrum: taskVectorSpectrum(delta, rows, cols, tensor),
  };
}
