/**
 * The streaming merge: plan, then per tensor read -> decode -> method -> encode -> write.
 * Memory stays bounded: the tensor being merged and the next one being read are the only ones
 * held. The CLI, the worker and the tests all run merges through `runMerge`.
 */

import { type ByteSource, readInto } from '../formats/byte-source';
import {
  countNonFinite,
  DTYPE_BYTES,
  decodeToF32,
  encodeFromF32,
  type FloatDType,
  isFloatDType,
} from '../formats/dtype';
import { jsonDepthOver, MAX_JSON_DEPTH } from '../formats/json-text';
import { readModelTensors } from '../formats/model-index';
import { ShardWriter } from '../formats/shard-writer';
import { formatBytes } from '../formats/size';
import { CACHED_INPUT_BYTES, chunkInputSets, chunksIndependent, rawChunkMerge } from '../kernels/fused';
import { type KernelArena, loadKernels } from '../kernels/wasm';
import { getMethod } from '../methods';
import { type ActivationStatistics, AimRelaxation, applyRelaxation } from '../methods/aim';
import type { MergeInputs, MergeMethod, ModelTensor, SpectralReport, StreamingMerge } from '../methods/types';
import { encodeAimStatistics } from '../model/aim-statistics';
import {
  type MergePlan,
  orderModels,
  PlanError,
  type PlanInput,
  type PlannedModel,
  planMerge,
  type TensorPlan,
} from '../plan/plan';
import { recipeToYaml, resolveParams, validateRecipe } from '../recipe';
import type { MergeRecipe } from '../recipe/recipe';
import { outputConfigJson } from './config-json';
import type { ModelFiles, ModelResolver, OutputTarget } from './io';
import { modelCard } from './model-card';
import { placementSummary, type TensorPlacement } from './placement';
import { canSpool, type ReadSpool } from './read-spool';

export { placementSummary, type TensorPlacement };

import { type CpuThreads, type TensorOnThreads, ThreadTaskError } from './threads';

export const DEFAULT_OUT_SHARD_SIZE = 5_000_000_000;

export interface MergeProgress {
  tensorsDone: number;
  tensorsTotal: number;
  /** Output bytes written so far. */
  bytesDone: number;
  bytesTotal: number;
  /** Input bytes read so far (the work is dominated by reading). */
  inputBytesDone: number;
  inputBytesTotal: number;
  tensor?: string;
  elapsedMs: number;
}

/** Where the method math runs. The CPU backend is the reference; a GPU backend must match it. */
export interface MergeBackend {
  readonly kind: 'cpu' | 'gpu';
  merge(method: MergeMethod, inputs: MergeInputs): Promise<Float32Array>;
  /**
   * Decode, merge and encode in one go from the tensors' stored bytes (a GPU backend does it all on
   * the device and reads back only the result). Optional.
   */
  mergeBytes?(method: MergeMethod, inputs: RawMergeInputs): Promise<Uint8Array>;
  /**
   * One tensor read a tile at a time from `tensors[i].read` and written in order to `write`, so
   * neither host nor device holds it whole (a GPU backend, within its memory budget). Optional;
   * `streams` says which methods it serves.
   */
  mergeStream?(method: MergeMethod, inputs: StreamedMergeInputs): Promise<void>;
  streams?(method: MergeMethod): boolean;
}

/** One input of `mergeStream`: raw little-endian elements of `dtype`, read on demand. */
export interface StreamedModelTensor {
  readonly model: string;
  readonly params: ModelTensor['params'];
  readonly dtype: FloatDType;
  readonly elements: number;
  /** Bytes of elements [start, start + count) (already cut and rounded as the method sees them). */
  read(start: number, count: number): Promise<Uint8Array>;
  /**
   * Elements [start, start + count), just read, will be read again (a statistics pass is under way):
   * an input from a source slow to read again keeps their bytes (read-spool.ts). Optional.
   */
  keep?(start: number, count: number): Promise<void>;
}

export interface StreamedMergeInputs extends Omit<MergeInputs, 'tensors' | 'report'> {
  readonly tensors: readonly StreamedModelTensor[];
  readonly outDtype: FloatDType;
  /** The encoded output of elements from `start`, called in order. */
  write(start: number, bytes: Uint8Array): Promise<void>;
}

/** One input as stored: little-endian bytes of a float dtype. */
export interface RawModelTensor {
  readonly model: string;
  readonly bytes: Uint8Array;
  readonly dtype: FloatDType;
  readonly params: ModelTensor['params'];
}

export interface RawMergeInputs extends Omit<MergeInputs, 'tensors'> {
  readonly tensors: readonly RawModelTensor[];
  readonly outDtype: FloatDType;
}

export const cpuBackend: MergeBackend = {
  kind: 'cpu',
  async merge(method, inputs) {
    return method.merge(inputs);
  },
};

export interface MergeOptions {
  recipe: MergeRecipe;
  resolveModel: ModelResolver;
  output: OutputTarget;
  /**
   * prepareMerge's result for this recipe, these models and `outShardSize`, when the caller has
   * already validated the run with it: the models' headers are then not read again.
   */
  prepared?: PreparedMerge;
  seed?: number;
  outShardSize?: number;
  backend?: MergeBackend;
  signal?: AbortSignal;
  onProgress?: (p: MergeProgress) => void;
  onLog?: (line: string) => void;
  /**
   * Continue an interrupted run of the same recipe, seed and inputs into the same output: the
   * first `tensorsDone` tensors are taken as written (the output must support `reopenFile`).
   */
  resume?: { tensorsDone: number };
  /** Called after each tensor is written and flushed, with the count done: record it to resume. */
  onTensorWritten?: (tensorsDone: number) => void | Promise<void>;
  /**
   * Where to continue when the backend fails for good (a lost GPU device): the tensor in hand is
   * redone there and the run goes on. Default: the CPU backend.
   */
  fallbackBackend?: MergeBackend;
  /** Tensors above this many elements are merged a chunk of rows at a time. */
  streamElements?: number;
  /**
   * Tests: input bytes of a tensor read in several passes that the CPU keeps in memory from its
   * first pass on (at most, and by default, CACHED_INPUT_BYTES); a larger tensor is read once per
   * pass, from its spool where its source has one (read-spool.ts).
   */
  cachedInputBytes?: number;
  /**
   * The base model's activation statistics, for a recipe with `aim:` (from src/model/calibration.ts,
   * or a saved aim_statistics.safetensors). They are written into the output beside the weights.
   */
  aimStatistics?: ActivationStatistics;
  /**
   * What runs the CPU's per-chunk decode -> method -> encode step: 'auto' (the default) the
   * WebAssembly SIMD kernels where they load, else the TypeScript reference; 'ts' always the
   * reference. The bytes written are the same either way.
   */
  cpuKernels?: 'auto' | 'ts';
  /**
   * Threads that run the CPU kernels (Node: kernel-threads.ts), each reading its inputs itself;
   * this thread then only orchestrates and writes. Without them (or for inputs they cannot read)
   * the kernels run here. The bytes written are the same either way.
   */
  cpuThreads?: CpuThreads;
  /**
   * Merged tensors holding Inf or NaN (a lambda or weight that overflows the dtype): `error` (the
   * default) reports each, finishes the pass and then fails without committing the output; `allow`
   * reports them and writes the output.
   */
  nonFinite?: 'error' | 'allow';
  /** Warnings (non-finite tensors); default `onLog`. */
  onWarning?: (line: string) => void;
}

/** A merged tensor with Inf or NaN values. */
export interface NonFiniteTensor {
  tensor: string;
  /** Values that are Inf or NaN. */
  count: number;
  elements: number;
}

export interface MergeResult {
  files: string[];
  tensors: number;
  bytesWritten: number;
  backend: 'cpu' | 'gpu';
  placement: TensorPlacement;
  /** Merged tensors holding Inf or NaN (written only with `nonFinite: 'allow'`). */
  nonFinite: NonFiniteTensor[];
}

/** A failure while merging one tensor; the message names the model file and the tensor. */
export class MergeError extends Error {
  override name = 'MergeError';
  constructor(
    message: string,
    readonly tensor?: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The merge produced Inf or NaN values; nothing was written. */
export class NonFiniteOutputError extends Error {
  override name = 'NonFiniteOutputError';
  constructor(readonly tensors: readonly NonFiniteTensor[]) {
    const first = tensors[0];
    super(
      `${tensors.length} merged tensor(s) hold Inf or NaN values (first: ${first.tensor}, ` +
        `${first.count} of ${first.elements} values); a lambda or weight too large for the dtype, ` +
        'or non-finite inputs; nothing was written',
    );
  }
}

export function abortError(): Error {
  const e = new Error('the merge was cancelled');
  e.name = 'AbortError';
  return e;
}

/** Files copied from the tokenizer source besides config.json. */
export const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
  'added_tokens.json',
  'chat_template.jinja',
];

/**
 * Largest side file (config.json, generation_config.json, tokenizer files) read whole and copied.
 * The largest real tokenizer.json files are about 35 MB (Gemma's 262k vocabulary).
 */
export const MAX_SIDE_FILE_BYTES = 64_000_000;

function checkSideFileSize(model: ModelFiles, file: string, src: ByteSource): void {
  if (src.size > MAX_SIDE_FILE_BYTES) {
    throw new MergeError(
      `${model.name}/${file}: is ${formatBytes(src.size)}, over the ${formatBytes(MAX_SIDE_FILE_BYTES)} limit for ` +
        'a config or tokenizer file',
    );
  }
}

async function readAll(model: ModelFiles, file: string): Promise<Uint8Array> {
  const src = await model.open(file);
  checkSideFileSize(model, file, src);
  return src.read(0, src.size);
}

async function readConfig(model: ModelFiles): Promise<{ config: Record<string, unknown>; text?: string }> {
  if (!model.files().includes('config.json')) return { config: {} };
  const text = new TextDecoder().decode(await readAll(model, 'config.json'));
  if (jsonDepthOver(text) !== undefined) {
    throw new MergeError(`${model.name}/config.json: nests JSON deeper than ${MAX_JSON_DEPTH} levels`);
  }
  try {
    const parsed = JSON.parse(text) as unknown;
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed))
      return { config: parsed as Record<string, unknown>, text };
  } catch {
    // fall through to the error below
  }
  throw new MergeError(`${model.name}/config.json: not a JSON object`);
}

/** A validated run: its plan, method and opened models (prepareMerge's result). */
export interface PreparedMerge {
  plan: MergePlan;
  method: MergeMethod;
  files: ModelFiles[];
}

/** Open, index and plan; no output is touched. */
export async function prepareMerge(
  recipe: MergeRecipe,
  resolveModel: ModelResolver,
  outShardSize = DEFAULT_OUT_SHARD_SIZE,
): Promise<PreparedMerge> {
  const method = getMethod(recipe.mergeMethod);
  validateRecipe(recipe, method);
  const { refs, baseIndex } = orderModels(recipe, method);
  // Every model is opened and its headers read even when one fails, so the problems of all models
  // are reported together (one failure keeps its own error and name).
  const opened = await Promise.allSettled(
    refs.map(async (ref): Promise<[ModelFiles, PlannedModel]> => {
      const f = await resolveModel(ref);
      const [index, { config, text }] = await Promise.all([readModelTensors(f), readConfig(f)]);
      return [f, { reference: ref, index, config, configText: text }];
    }),
  );
  const failures = opened.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  if (failures.length === 1) throw failures[0];
  if (failures.length > 1) {
    throw new PlanError(
      failures.flatMap((e) =>
        e instanceof PlanError ? e.problems : [e instanceof Error ? `${e.name}: ${e.message}` : String(e)],
      ),
    );
  }
  const ready = opened.map((r) => (r as PromiseFulfilledResult<[ModelFiles, PlannedModel]>).value);
  const files = ready.map(([f]) => f);
  const models = ready.map(([, m]) => m);
  const plan = planMerge(recipe, method, models, baseIndex, { maxShardBytes: outShardSize });
  // The side files are copied last; a bad one must fail the run before any tensor is merged.
  const baseFiles = files[Math.max(plan.baseIndex, 0)];
  for (const name of sideFilesOf(baseFiles)) checkSideFileSize(baseFiles, name, await baseFiles.open(name));
  return { plan, method, files };
}

/** The files copied from the base besides config.json: tokenizer files and the generation config. */
function sideFilesOf(model: ModelFiles): string[] {
  const present = new Set(model.files());
  return [...TOKENIZER_FILES, 'generation_config.json'].filter((name) => present.has(name));
}

/** A tensor's inputs as read from the files: raw bytes, decoded only when its turn comes. */
interface LoadedTensor {
  plan: TensorPlan;
  bytes: Uint8Array[];
  inputBytes: number;
}

function cutSubmatrix(values: Float32Array, cols: number, rows: number, keepCols: number): Float32Array {
  if (keepCols === cols) return values.subarray(0, rows * cols);
  const out = new Float32Array(rows * keepCols);
  for (let r = 0; r < rows; r++) out.set(values.subarray(r * cols, r * cols + keepCols), r * keepCols);
  return out;
}

/** Round to the recipe's working dtype, as mergekit loads every input in `dtype` before merging. */
function roundTo(values: Float32Array, dtype: FloatDType): Float32Array {
  if (dtype === 'F32') return values;
  return decodeToF32(encodeFromF32(values, dtype), dtype, values);
}

/**
 * An input's spool for this read, and whether the bytes it fetches are kept (a pass that another
 * pass follows): see read-spool.ts.
 */
interface SpooledRead {
  spool: ReadSpool | undefined;
  keep: boolean;
}

/**
 * Bytes [offset, offset + length) of one input tensor (through its spool where it has one); a
 * failure names the model file and tensor.
 */
async function readInput(
  plan: MergePlan,
  t: TensorPlan,
  input: PlanInput,
  offset = 0,
  length = input.tensor.byteLength,
  spooled?: SpooledRead,
): Promise<Uint8Array> {
  const model = plan.models[input.modelIndex];
  const source = model.index.sources.get(input.tensor.file);
  try {
    if (!source) throw new Error('the file is not open');
    if (spooled?.spool) return await spooled.spool.read(input.tensor.offset + offset, length, spooled.keep);
    return await source.read(input.tensor.offset + offset, length);
  } catch (e) {
    throw new MergeError(
      `${model.reference}/${input.tensor.file}: reading tensor ${t.name} failed: ${(e as Error).message}`,
      t.name,
      { cause: e },
    );
  }
}

/** readInput into a reused buffer (the kernels' arena): bytes [offset, offset + target.byteLength). */
async function readInputInto(
  plan: MergePlan,
  t: TensorPlan,
  input: PlanInput,
  offset: number,
  target: Uint8Array,
  spooled?: SpooledRead,
): Promise<void> {
  const model = plan.models[input.modelIndex];
  const source = model.index.sources.get(input.tensor.file);
  try {
    if (!source) throw new Error('the file is not open');
    if (spooled?.spool) {
      target.set(await spooled.spool.read(input.tensor.offset + offset, target.byteLength, spooled.keep));
      return;
    }
    await readInto(source, input.tensor.offset + offset, target);
  } catch (e) {
    throw new MergeError(
      `${model.reference}/${input.tensor.file}: reading tensor ${t.name} failed: ${(e as Error).message}`,
      t.name,
      { cause: e },
    );
  }
}

function inputKey(input: PlanInput): string {
  return `${input.modelIndex}\u0000${input.tensor.file}\u0000${input.tensor.offset}`;
}

/**
 * Spools of inputs that several output tensors read (a tied embedding is the input of both
 * model.embed_tokens.weight and lm_head.weight): opened by the first of those tensors and kept
 * until the last has read them, so such an input is fetched once too (read-spool.ts).
 */
class SharedSpools {
  /** Input -> the last tensor that reads it, for inputs read by two tensors or more. */
  private readonly lastUse = new Map<string, number>();
  private readonly open = new Map<string, Promise<ReadSpool>>();

  constructor(
    private readonly plan: MergePlan,
    first: number,
  ) {
    const uses = new Map<string, number>();
    plan.tensors.forEach((t, i) => {
      if (i < first || t.kind !== 'merge') return;
      for (const input of t.inputs) {
        const key = inputKey(input);
        uses.set(key, (uses.get(key) ?? 0) + 1);
        this.lastUse.set(key, i);
      }
    });
    for (const [key, count] of uses) if (count < 2) this.lastUse.delete(key);
  }

  /** The spool `input` shares for tensor `index`, with `keep` while a later tensor reads it. */
  async get(index: number, t: TensorPlan, input: PlanInput): Promise<SpooledRead | undefined> {
    const key = inputKey(input);
    const last = this.lastUse.get(key);
    if (last === undefined || t.kind !== 'merge') return undefined;
    const source = this.plan.models[input.modelIndex].index.sources.get(input.tensor.file);
    if (!canSpool(source)) return undefined;
    let spool = this.open.get(key);
    if (!spool) {
      spool = source.openSpool({
        tensor: t.name,
        offset: input.tensor.offset,
        length: input.tensor.byteLength,
      });
      this.open.set(key, spool);
      const opened = spool;
      opened.catch(() => {
        if (this.open.get(key) === opened) this.open.delete(key);
      });
    }
    return { spool: await spool, keep: index < last };
  }

  /** Removes the spools no tensor after `index` reads. */
  async release(index: number): Promise<void> {
    for (const [key, spool] of this.open) {
      if ((this.lastUse.get(key) ?? -1) > index) continue;
      this.open.delete(key);
      await (await spool.catch(() => undefined))?.close().catch(() => undefined);
    }
  }

  async closeAll(): Promise<void> {
    await this.release(Number.POSITIVE_INFINITY);
  }
}

/** How a tensor reads each of its inputs (read-spool.ts), and the spools it opened itself. */
interface InputSpools {
  /** Per input: its spool (if any), and whether every read is kept (a later tensor reads it). */
  readonly reads: readonly SpooledRead[];
  /** Removes the spools the tensor opened for its own passes. */
  close(): Promise<void>;
}

/**
 * The spools of tensor `index`'s inputs: those it shares with later tensors, and with `own` (it
 * reads its inputs in several passes) one of its own for each input whose source offers one (a
 * streamed hub file; none for local files).
 */
async function inputSpools(
  plan: MergePlan,
  shared: SharedSpools | undefined,
  index: number,
  t: TensorPlan,
  own: boolean,
): Promise<InputSpools> {
  const reads: SpooledRead[] = [];
  const owned: ReadSpool[] = [];
  const close = () => Promise.all(owned.map((s) => s.close().catch(() => undefined))).then(() => {});
  try {
    for (const input of t.inputs) {
      const common = await shared?.get(index, t, input);
      if (common) {
        reads.push(common);
        continue;
      }
      const source = plan.models[input.modelIndex].index.sources.get(input.tensor.file);
      if (own && canSpool(source)) {
        const spool = await source.openSpool({
          tensor: t.name,
          offset: input.tensor.offset,
          length: input.tensor.byteLength,
        });
        owned.push(spool);
        reads.push({ spool, keep: false });
      } else {
        reads.push({ spool: undefined, keep: false });
      }
    }
  } catch (e) {
    await close();
    throw e;
  }
  return { reads, close };
}

/** Spooled reads of a pass: kept when another pass follows (`keep`) or a later tensor reads them. */
function passRead(spools: InputSpools, input: number, keep: boolean): SpooledRead {
  const read = spools.reads[input];
  return { spool: read.spool, keep: keep || read.keep };
}

async function loadTensor(t: TensorPlan, plan: MergePlan, spools?: InputSpools): Promise<LoadedTensor> {
  const bytes = await Promise.all(
    t.inputs.map((input, i) =>
      readInput(plan, t, input, 0, input.tensor.byteLength, spools && passRead(spools, i, false)),
    ),
  );
  return { plan: t, bytes, inputBytes: bytes.reduce((s, b) => s + b.byteLength, 0) };
}

/**
 * f32 values of `rows` whole rows of one input, cut to the output's columns and rounded to the
 * recipe's working dtype.
 */
function decodeInput(
  t: TensorPlan,
  input: PlanInput,
  raw: Uint8Array,
  rows: number,
  workDtype?: FloatDType,
  out?: Float32Array,
) {
  const dtype = input.tensor.dtype;
  if (!isFloatDType(dtype)) throw new MergeError(`tensor ${t.name} is ${dtype}, not a float`, t.name);
  let v = decodeToF32(
    raw,
    dtype,
    input.submatrix ? undefined : out?.subarray(0, raw.byteLength / DTYPE_BYTES[dtype]),
  );
  if (input.submatrix) v = cutSubmatrix(v, input.tensor.shape[1], rows, input.submatrix.cols);
  if (workDtype && workDtype !== dtype) v = roundTo(v, workDtype);
  return v;
}

function decodeInputs(loaded: LoadedTensor, workDtype: FloatDType | undefined): Float32Array[] {
  const t = loaded.plan;
  return loaded.bytes.map((b, i) =>
    decodeInput(t, t.inputs[i], b, t.inputs[i].submatrix?.rows ?? 0, workDtype),
  );
}

export async function runMerge(opts: MergeOptions): Promise<MergeResult> {
  const { recipe, output, signal } = opts;
  const backend = opts.backend ?? cpuBackend;
  const seed = opts.seed ?? 0;
  const started = Date.now();
  const log = opts.onLog ?? (() => {});
  const checkAbort = () => {
    if (signal?.aborted) throw abortError();
  };
  let sharedSpools: SharedSpools | undefined;
  try {
    checkAbort();
    const { plan, method, files } =
      opts.prepared ?? (await prepareMerge(recipe, opts.resolveModel, opts.outShardSize));
    const aim = aimFor(recipe, plan, opts.aimStatistics);
    log(
      `${method.name}: ${plan.tensors.length} tensors from ${plan.models.length} models, ` +
        `${plan.layout.shards.length} output shard(s), backend ${backend.kind}` +
        (opts.cpuThreads ? `, ${opts.cpuThreads.count} kernel threads` : ''),
    );
    const writer = new ShardWriter(plan.layout, (name) => output.createFile(name));
    const first = opts.resume?.tensorsDone ?? 0;
    if (first > 0) {
      if (!output.reopenFile) throw new MergeError('this output cannot be resumed');
      await writer.resumeAt(first, (file, keep) => output.reopenFile!(file, keep));
      log(`resuming after ${first} of ${plan.tensors.length} tensors`);
    }
    const done = plan.tensors.slice(0, first);
    const progress: MergeProgress = {
      tensorsDone: first,
      tensorsTotal: plan.tensors.length,
      bytesDone: done.reduce((a, t) => a + t.byteLength, 0),
      bytesTotal: plan.totalOutputBytes,
      inputBytesDone: done.reduce((a, t) => a + t.inputs.reduce((b, i) => b + i.tensor.byteLength, 0), 0),
      inputBytesTotal: plan.totalInputBytes,
      elapsedMs: 0,
    };
    opts.onProgress?.({ ...progress });
    let active = backend;
    const streamElements = opts.streamElements ?? STREAM_ELEMENTS;
    // The CPU's kernels, made when the first tensor needs them (also after a fall back from a GPU).
    const placement: TensorPlacement = { gpu: 0, cpu: 0, copied: 0, cpuReasons: [] };
    const noteReason = (cause: Error, t: TensorPlan) => {
      const entry = placement.cpuReasons.find((r) => r.reason === cause.name);
      if (entry) entry.tensors++;
      else
        placement.cpuReasons.push({ reason: cause.name, tensors: 1, example: `${t.name}: ${cause.message}` });
    };
    const placed = (b: MergeBackend) => {
      if (b.kind === 'gpu') placement.gpu++;
      else placement.cpu++;
    };
    let arena: KernelArena | null | undefined;
    const kernels = () => {
      if (arena === undefined) arena = loadKernels(opts.cpuKernels ?? 'auto');
      return arena;
    };
    // On the CPU every merged tensor of a streamed method goes through the kernels a chunk of rows
    // at a time, straight from its stored bytes (no whole-tensor buffers). The kernels encode as
    // they go, so a tensor AIM relaxes (it needs the method's f32 result) takes the TS path instead.
    const fused = (t: TensorPlan) =>
      active.kind === 'cpu' &&
      t.kind === 'merge' &&
      aim?.factorsFor(t.name, t.shape) === undefined &&
      method.stream !== undefined &&
      isFloatDType(t.outDtype) &&
      t.inputs.every((input) => !input.submatrix && isFloatDType(input.tensor.dtype)) &&
      kernels() !== null;
    // A backend that streams the method (the GPU within its memory budget) reads large tensors a
    // tile at a time (but AIM needs the method's f32 result on the host). Otherwise large tensors go
    // through the method's chunked form on the CPU, and a backend without streaming takes tensors
    // whole (tiling them itself) up to GPU_WHOLE_ELEMENTS.
    const backendStreams = (b: MergeBackend) => b.mergeStream !== undefined && b.streams?.(method) === true;
    const gpuStreamed = (t: TensorPlan) =>
      t.kind === 'merge' &&
      backendStreams(active) &&
      aim?.factorsFor(t.name, t.shape) === undefined &&
      elementCount(t.shape) > streamElements;
    const streamed = (t: TensorPlan | undefined) =>
      t !== undefined &&
      t.kind === 'merge' &&
      (gpuStreamed(t) ||
        (method.stream !== undefined &&
          (fused(t) ||
            elementCount(t.shape) >
              (active.kind === 'cpu' || backendStreams(active) ? streamElements : GPU_WHOLE_ELEMENTS))));
    // Inputs that several tensors read are fetched once, for all of them (SharedSpools).
    const shared = new SharedSpools(plan, first);
    sharedSpools = shared;
    const spoolsOf = (i: number) => (own: boolean) => inputSpools(plan, shared, i, plan.tensors[i], own);
    const load = (i: number) => {
      const t = plan.tensors[i];
      if (!t || streamed(t)) return undefined;
      const p = (async () => loadTensor(t, plan, await spoolsOf(i)(false)))();
      // An early rejection of the prefetch must not go unhandled while another tensor computes.
      p.catch(() => {});
      return p;
    };
    const report = (t: TensorPlan, inputBytes: number, outputBytes: number, tensorDone: boolean) => {
      if (tensorDone) progress.tensorsDone++;
      progress.bytesDone += outputBytes;
      progress.inputBytesDone += inputBytes;
      progress.tensor = t.name;
      progress.elapsedMs = Date.now() - started;
      opts.onProgress?.({ ...progress });
    };
    const tensorWritten = async (i: number) => {
      if (!opts.onTensorWritten) return;
      await writer.flush();
      await opts.onTensorWritten(i + 1);
    };
    const nonFinite: NonFiniteTensor[] = [];
    const warn = opts.onWarning ?? log;
    const noteNonFinite = (t: TensorPlan, count: number) => {
      if (count === 0) return;
      const elements = elementCount(t.shape);
      nonFinite.push({ tensor: t.name, count, elements });
      warn(`warning: tensor ${t.name}: ${count} of ${elements} merged values are Inf or NaN`);
    };
    const streamContext: Omit<StreamContext, 'tensor' | 'spools'> = {
      plan,
      method,
      recipe,
      seed,
      writer,
      checkAbort,
      report,
      streamElements,
      cachedInputBytes: Math.min(opts.cachedInputBytes ?? CACHED_INPUT_BYTES, CACHED_INPUT_BYTES),
      aim,
      noteNonFinite,
    };
    const fallbackFor = (e: unknown, t: TensorPlan): MergeBackend | undefined => {
      const cause = (e as Error).cause as Error | undefined;
      const fallback = opts.fallbackBackend ?? cpuBackend;
      if (active === fallback || !cause) return undefined;
      if (cause.name === 'GpuDeviceLostError') {
        // The GPU is gone (driver reset, sleep, another tab): finished tensors stay; go on elsewhere.
        active = fallback;
        log(
          `the GPU device was lost (${cause.message}); continuing on the ${fallback.kind.toUpperCase()} from tensor ${t.name}`,
        );
      } else if (
        cause.name === 'GpuLimitError' ||
        cause.name === 'GpuBudgetError' ||
        cause.name === 'GpuUnsupportedMethodError'
      ) {
        log(`tensor ${t.name} is merged on the ${fallback.kind.toUpperCase()}: ${cause.message}`);
      } else {
        return undefined;
      }
      if (fallback.kind === 'cpu') noteReason(cause, t);
      return fallback;
    };
    const threads = opts.cpuThreads;
    const onThreads = (t: TensorPlan | undefined): t is TensorPlan =>
      t !== undefined &&
      threads !== undefined &&
      fused(t) &&
      elementCount(t.shape) > 0 &&
      t.inputs.every((input) => {
        const source = plan.models[input.modelIndex].index.sources.get(input.tensor.file);
        return source !== undefined && threads.reads(source);
      });
    // Tensor i+1 is started on the threads while tensor i is written: a thread that is done with
    // tensor i's chunks goes on with the next tensor's (TIES' statistics pass overlaps a write).
    const onThreadsStarted = new Map<number, TensorOnThreads>();
    const startOnThreads = (i: number) => {
      const t = plan.tensors[i];
      if (onThreadsStarted.has(i) || !onThreads(t)) return;
      onThreadsStarted.set(i, startThreadTensor(contextOf(i), threads!, kernels()!));
    };
    // Read tensor i+1 while tensor i is merged and written.
    const contextOf = (i: number): StreamContext => ({
      ...streamContext,
      tensor: plan.tensors[i],
      spools: spoolsOf(i),
    });
    let next = load(first);
    for (let i = first; i < plan.tensors.length; i++) {
      checkAbort();
      // The spools only earlier tensors read are done with.
      await shared.release(i - 1);
      const t = plan.tensors[i];
      const loaded = await next;
      next = load(i + 1);
      if (!loaded && onThreads(t)) {
        startOnThreads(i);
        startOnThreads(i + 1);
        const onThread = onThreadsStarted.get(i)!;
        onThreadsStarted.delete(i);
        await threadTensor(contextOf(i), onThread);
        placed(cpuBackend);
        await tensorWritten(i);
        continue;
      }
      if (!loaded) {
        if (gpuStreamed(t)) {
          const streamer = active;
          let started = false;
          try {
            await streamTensorOnBackend(contextOf(i), streamer, () => {
              started = true;
            });
            placed(streamer);
          } catch (e) {
            // Output already written cannot be taken back: the run fails (and resumes from here).
            const fallback = started ? undefined : fallbackFor(e, t);
            if (!fallback) throw e;
            if (fallback.kind === 'cpu' && method.stream) {
              await streamTensor(contextOf(i));
              placed(cpuBackend);
            } else await writeWhole(fallback, await loadTensor(t, plan, await spoolsOf(i)(false)), i);
          }
        } else {
          const onKernels = fused(t) && (await kernelTensor(contextOf(i), kernels()!));
          if (!onKernels) await streamTensor(contextOf(i));
          placed(cpuBackend);
        }
        await tensorWritten(i);
        continue;
      }
      await writeWhole(active, loaded, i);
      await tensorWritten(i);
    }
    await shared.closeAll();
    if (nonFinite.length > 0 && (opts.nonFinite ?? 'error') === 'error')
      throw new NonFiniteOutputError(nonFinite);
    const shardFiles = await writer.finish();
    const extra = await writeSideFiles(opts, plan, files, method, aim);
    checkAbort();
    await output.commit();
    return {
      files: [...shardFiles, ...extra],
      tensors: plan.tensors.length,
      bytesWritten: progress.bytesDone,
      backend: active.kind,
      placement,
      nonFinite,
    };

    /** Merges (or copies) a tensor held whole and writes it. */
    async function writeWhole(first: MergeBackend, loaded: LoadedTensor, index: number): Promise<void> {
      const t = loaded.plan;
      let bytes: Uint8Array;
      if (t.kind === 'copy') {
        bytes = loaded.bytes[0];
        placement.copied++;
      } else {
        try {
          bytes = await computeTensor(method, first, plan, loaded, recipe, seed, log, aim);
          placed(first);
        } catch (e) {
          const fallback = fallbackFor(e, t);
          if (!fallback) throw e;
          if (fallback.kind === 'cpu' && method.stream && elementCount(t.shape) > streamElements) {
            await streamTensor(contextOf(index));
            placed(cpuBackend);
            return;
          }
          bytes = await computeTensor(method, fallback, plan, loaded, recipe, seed, log, aim);
          placed(fallback);
        }
      }
      checkAbort();
      if (t.kind === 'merge') noteNonFinite(t, countNonFinite(bytes, t.outDtype as FloatDType));
      await writer.writeTensor(t.name, bytes);
      report(t, loaded.inputBytes, bytes.byteLength, true);
    }
  } catch (e) {
    await sharedSpools?.closeAll();
    // Tensors started on the threads are dropped: the threads stay free for another run.
    opts.cpuThreads?.cancel();
    await output.abort().catch(() => {});
    throw e;
  }
}

/**
 * AIM on top of the method, when the recipe asks for it. Every tensor AIM will relax is checked
 * against the statistics here, before anything is written.
 */
function aimFor(
  recipe: MergeRecipe,
  plan: MergePlan,
  statistics: ActivationStatistics | undefined,
): AimRelaxation | undefined {
  if (!recipe.aim) return undefined;
  if (!statistics) {
    throw new MergeError(
      'the recipe has an aim: block but no activation statistics were given: run the calibration ' +
        '(src/model/calibration.ts) or name saved statistics in aim.statistics',
    );
  }
  const aim = new AimRelaxation(statistics, recipe.aim.omega);
  for (const t of plan.tensors) {
    if (t.kind !== 'merge') continue;
    try {
      if (aim.factorsFor(t.name, t.shape) && t.baseIndex < 0)
        throw new Error(`the base model has no tensor ${t.name} to relax toward`);
    } catch (e) {
      throw new MergeError(`AIM on tensor ${t.name}: ${(e as Error).message}`, t.name, { cause: e });
    }
  }
  return aim;
}

/**
 * The largest tensor a GPU backend is given whole: its inputs and result then take about
 * (models + 1) x 4 bytes per element of GPU memory, 4 GiB with three models at this size (a 1.5B
 * model's embeddings fit; a 7B model's are streamed on the CPU).
 */
export const GPU_WHOLE_ELEMENTS = 1 << 28;

/** Tensors above this many elements are merged a chunk of rows at a time (methods that can). */
export const STREAM_ELEMENTS = 1 << 20;

function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Elements per row as chunks see them: a 1-D tensor is a single row. */
function rowLength(shape: readonly number[]): number {
  return shape.length >= 2 ? elementCount(shape.slice(1)) : elementCount(shape);
}

interface StreamContext {
  plan: MergePlan;
  method: MergeMethod;
  tensor: TensorPlan;
  recipe: MergeRecipe;
  seed: number;
  writer: ShardWriter;
  streamElements: number;
  /** Input bytes of a multi-pass tensor kept in memory across its passes (MergeOptions.cachedInputBytes). */
  cachedInputBytes: number;
  aim: AimRelaxation | undefined;
  checkAbort(): void;
  /** The tensor's input spools; `own`: it reads its inputs in several passes (inputSpools). */
  spools(own: boolean): Promise<InputSpools>;
  report(t: TensorPlan, inputBytes: number, outputBytes: number, tensorDone: boolean): void;
  noteNonFinite(t: TensorPlan, count: number): void;
}

/**
 * One large tensor through the method's `stream`: the statistics passes, then the output pass,
 * each reading the inputs a chunk of rows at a time (the next chunk is read while this one
 * computes). Memory: a few chunks, whatever the tensor's size.
 */
async function streamTensor(ctx: StreamContext): Promise<void> {
  const { plan, method, tensor: t, recipe, seed, writer } = ctx;
  const { global, perModel } = resolveParams(recipe, method, t.name, plan.numLayers);
  const models = t.inputs.map((input) => plan.models[input.modelIndex].reference);
  const where = () => t.inputs.map((input, i) => `${models[i]}/${input.tensor.file}`).join(', ');
  let job: StreamingMerge;
  try {
    job = method.stream!({
      tensorName: t.name,
      shape: t.shape,
      tensors: models.map((model) => ({ model, params: perModel.get(model) ?? {} })),
      baseIndex: t.baseIndex,
      params: global,
      seed,
    });
  } catch (e) {
    throw new MergeError(
      `${method.name} failed on tensor ${t.name} (${where()}): ${(e as Error).message}`,
      t.name,
      {
        cause: e,
      },
    );
  }
  const rowLen = rowLength(t.shape);
  const rows = elementCount(t.shape) / rowLen;
  const aimFactors = ctx.aim?.factorsFor(t.name, t.shape);
  const rowsPerChunk = Math.max(1, Math.floor(ctx.streamElements / rowLen));
  // Two sets of decode buffers, reused chunk after chunk: one is computed on while the other fills.
  // Fresh multi-megabyte arrays per chunk cost more in page faults than the decoding itself.
  const buffers = [0, 1].map(() =>
    t.inputs.map(() => new Float32Array(Math.min(rows, rowsPerChunk) * rowLen)),
  );
  // Read in several passes: each input from a source slow to read again is fetched once, into its
  // spool, and read there by the later passes (read-spool.ts).
  const spools = await ctx.spools(job.passes > 0);
  const readRows = async (
    r0: number,
    r1: number,
    set: number,
    keep: boolean,
  ): Promise<{ values: Float32Array[]; bytes: number }> => {
    let bytes = 0;
    const values = await Promise.all(
      t.inputs.map(async (input, i) => {
        const info = input.tensor;
        const rowBytes = (input.submatrix ? info.shape[1] : rowLen) * DTYPE_BYTES[info.dtype];
        const raw = await readInput(
          plan,
          t,
          input,
          r0 * rowBytes,
          (r1 - r0) * rowBytes,
          passRead(spools, i, keep),
        );
        bytes += raw.byteLength;
        return decodeInput(t, input, raw, r1 - r0, recipe.dtype, buffers[set][i]);
      }),
    );
    return { values, bytes };
  };
  /**
   * Calls `visit` on each chunk in order, reading chunk k+1 while chunk k is visited; `keep`: a
   * statistics pass, whose spooled reads are kept for the passes after it.
   */
  const eachChunk = async (
    keep: boolean,
    visit: (start: number, chunk: { values: Float32Array[]; bytes: number }) => Promise<void>,
  ) => {
    let pending = readRows(0, Math.min(rows, rowsPerChunk), 0, keep);
    for (let r0 = 0, k = 0; r0 < rows; r0 += rowsPerChunk, k++) {
      ctx.checkAbort();
      const chunk = await pending;
      const r1 = Math.min(rows, r0 + rowsPerChunk);
      if (r1 < rows) {
        pending = readRows(r1, Math.min(rows, r1 + rowsPerChunk), (k + 1) % 2, keep);
        pending.catch(() => {});
      }
      await visit(r0 * rowLen, chunk);
    }
  };
  const compute = <T>(f: () => T): T => {
    try {
      return f();
    } catch (e) {
      throw new MergeError(
        `${method.name} failed on tensor ${t.name} (${where()}): ${(e as Error).message}`,
        t.name,
        {
          cause: e,
        },
      );
    }
  };
  let nonFinite = 0;
  try {
    for (let pass = 0; pass < job.passes; pass++) {
      await eachChunk(true, async (start, chunk) =>
        compute(() => job.accumulate(pass, { start, values: chunk.values })),
      );
    }
    writer.beginTensor(t.name);
    const outBuffer = new Float32Array(Math.min(rows, rowsPerChunk) * rowLen);
    let writing: Promise<void> = Promise.resolve();
    await eachChunk(false, async (start, chunk) => {
      const out = outBuffer.subarray(0, chunk.values[0].length);
      compute(() => job.produce({ start, values: chunk.values }, out));
      if (aimFactors) applyRelaxation(out, chunk.values[t.baseIndex], aimFactors, start);
      const bytes = encodeFromF32(out, t.outDtype as FloatDType);
      nonFinite += countNonFinite(bytes, t.outDtype as FloatDType);
      await writing;
      writing = writer.writeTensorPart(bytes);
      writing.catch(() => {});
      ctx.report(t, chunk.bytes, bytes.byteLength, false);
    });
    await writing;
  } finally {
    await spools.close();
  }
  await writer.endTensor();
  ctx.noteNonFinite(t, nonFinite);
  ctx.report(t, 0, 0, true);
}

/**
 * The per-chunk decode -> method -> encode step on the CPU kernels (src/kernels/fused.ts): one tensor
 * read a chunk of rows at a time into reused buffers, straight from the files into the kernels'
 * memory (the next chunk is read while this one computes), merged and encoded there, and written.
 * A tensor that fits in one chunk is read once for all its passes. Returns false, having read
 * nothing, where the kernels have no form of the method; `streamTensor` then does it.
 */
async function kernelTensor(ctx: StreamContext, arena: KernelArena): Promise<boolean> {
  const { plan, method, tensor: t, recipe, seed, writer } = ctx;
  const { global, perModel } = resolveParams(recipe, method, t.name, plan.numLayers);
  const models = t.inputs.map((input) => plan.models[input.modelIndex].reference);
  const where = () => t.inputs.map((input, i) => `${models[i]}/${input.tensor.file}`).join(', ');
  const failed = (e: unknown) =>
    new MergeError(
      `${method.name} failed on tensor ${t.name} (${where()}): ${(e as Error).message}`,
      t.name,
      {
        cause: e,
      },
    );
  const total = elementCount(t.shape);
  const rowLen = rowLength(t.shape);
  const rows = rowLen === 0 ? 0 : total / rowLen;
  const rowsPerChunk = Math.max(1, Math.floor(ctx.streamElements / Math.max(1, rowLen)));
  const inputDtypes = t.inputs.map((input) => input.tensor.dtype as FloatDType);
  const chunks = rows === 0 ? 0 : Math.ceil(rows / rowsPerChunk);
  const rowBytes = inputDtypes.map((dtype) => rowLen * DTYPE_BYTES[dtype]);
  const layout = (inputSets: number) =>
    rawChunkMerge(arena, method, {
      spec: {
        tensorName: t.name,
        shape: t.shape,
        tensors: models.map((model) => ({ model, params: perModel.get(model) ?? {} })),
        baseIndex: t.baseIndex,
        params: global,
        seed,
      },
      inputDtypes,
      outDtype: t.outDtype as FloatDType,
      workDtype: recipe.dtype,
      chunkElements: Math.max(1, Math.min(rows, rowsPerChunk) * rowLen),
      inputSets,
    });
  let job: ReturnType<typeof rawChunkMerge>;
  let sets = 2;
  try {
    job = layout(sets);
    // A tensor with statistics passes that fits the cache keeps its chunks: read once, not per pass.
    const inputBytes = rows * rowBytes.reduce((a, b) => a + b, 0);
    sets = !job || inputBytes > ctx.cachedInputBytes ? 2 : chunkInputSets(job.passes, chunks, inputBytes);
    if (job && sets !== 2) job = layout(sets);
  } catch (e) {
    throw failed(e);
  }
  if (!job) return false;
  const kernel = job;
  // With a set per chunk (a tensor of one chunk, or one the cache holds), each chunk stays in its
  // set from the first read on; else chunk k+1 is read into the other set while chunk k computes.
  const cached = chunks <= sets;
  // Read in several passes: each input from a source slow to read again is fetched once, into its
  // spool, and read there by the later passes (read-spool.ts).
  const spools = await ctx.spools(kernel.passes > 0 && !cached);
  const readRows = async (r0: number, r1: number, set: number, keep: boolean): Promise<number> => {
    await Promise.all(
      t.inputs.map((input, i) =>
        readInputInto(
          plan,
          t,
          input,
          r0 * rowBytes[i],
          kernel.input(set, i, (r1 - r0) * rowLen),
          passRead(spools, i, keep),
        ),
      ),
    );
    return rowBytes.reduce((sum, b) => sum + b * (r1 - r0), 0);
  };
  const compute = <T>(f: () => T): T => {
    try {
      return f();
    } catch (e) {
      throw failed(e);
    }
  };
  const setOf = (k: number) => (cached ? k : k % 2);
  const kept = new Map<number, Promise<number>>();
  const fetch = (k: number, keep: boolean): Promise<number> => {
    let read = cached ? kept.get(k) : undefined;
    if (!read) {
      const r0 = k * rowsPerChunk;
      read = readRows(r0, Math.min(rows, r0 + rowsPerChunk), setOf(k), keep);
      read.catch(() => {});
      if (cached) kept.set(k, read);
    }
    return read;
  };
  const oneChunk = chunks === 1;
  /** `keep`: a statistics pass, whose spooled reads are kept for the passes after it. */
  const eachChunk = async (
    keep: boolean,
    visit: (set: number, r0: number, r1: number, bytes: number) => Promise<void>,
  ) => {
    if (rows === 0) return;
    let pending = fetch(0, keep);
    for (let k = 0; k < chunks; k++) {
      ctx.checkAbort();
      const bytes = await pending;
      if (k + 1 < chunks) pending = fetch(k + 1, keep);
      const r0 = k * rowsPerChunk;
      await visit(setOf(k), r0, Math.min(rows, r0 + rowsPerChunk), bytes);
    }
  };
  // Progress per chunk; a tensor of one chunk reports once, as a whole tensor does.
  const unreported = { input: 0, output: 0 };
  let nonFinite = 0;
  try {
    for (let pass = 0; pass < kernel.passes; pass++) {
      await eachChunk(true, async (set, r0, r1) =>
        compute(() => kernel.accumulate(pass, set, r0 * rowLen, (r1 - r0) * rowLen)),
      );
    }
    writer.beginTensor(t.name);
    let writing: Promise<void> = Promise.resolve();
    await eachChunk(false, async (set, r0, r1, bytes) => {
      const out = compute(() => kernel.produce(set, r0 * rowLen, (r1 - r0) * rowLen));
      nonFinite += arena.countNonFinite(out, t.outDtype as FloatDType);
      // The kernels alternate two output buffers: the one written before this must be done.
      await writing;
      writing = writer.writeTensorPart(out);
      writing.catch(() => {});
      if (oneChunk) {
        unreported.input += bytes;
        unreported.output += out.byteLength;
      } else {
        ctx.report(t, bytes, out.byteLength, false);
      }
    });
    await writing;
  } finally {
    await spools.close();
  }
  await writer.endTensor();
  ctx.noteNonFinite(t, nonFinite);
  ctx.report(t, unreported.input, unreported.output, true);
  return true;
}

/**
 * One large tensor through a backend's `mergeStream`: each input is a source that reads the rows
 * under a tile from its file (cut to the output's columns and rounded to the recipe's working dtype
 * as `decodeInput` does), and the output goes to the writer part by part as tiles come back.
 * `onOutput` is called before the first output byte is written (from then on the tensor cannot be
 * redone elsewhere).
 */
async function streamTensorOnBackend(
  ctx: StreamContext,
  backend: MergeBackend,
  onOutput: () => void,
): Promise<void> {
  const { plan, method, tensor: t, recipe, seed, writer } = ctx;
  const { global, perModel } = resolveParams(recipe, method, t.name, plan.numLayers);
  const models = t.inputs.map((input) => plan.models[input.modelIndex].reference);
  const total = elementCount(t.shape);
  const outDtype = t.outDtype as FloatDType;
  for (const input of t.inputs) {
    if (!isFloatDType(input.tensor.dtype))
      throw new MergeError(`tensor ${t.name} is ${input.tensor.dtype}, not a float`, t.name);
  }
  // The backend reads a streamed tile once per pass; it says which reads a later pass needs again
  // (`keep`), and those of inputs from a source slow to read again are spooled (read-spool.ts).
  const spools = await ctx.spools(true);
  const tensors: StreamedModelTensor[] = t.inputs.map((input, i) => {
    const info = input.tensor;
    const dtype = info.dtype as FloatDType;
    const bpe = DTYPE_BYTES[dtype];
    const round = recipe.dtype !== undefined && recipe.dtype !== dtype;
    const { spool, keep: keepAll } = spools.reads[i];
    /** The file bytes of the last reads, by tile start, until `keep` takes them or a later read comes. */
    const recent = new Map<number, { offset: number; bytes: Uint8Array }>();
    const fileRead = async (start: number, offset: number, length: number): Promise<Uint8Array> => {
      const bytes = await readInput(plan, t, input, offset, length, { spool, keep: keepAll });
      if (spool && !keepAll) {
        recent.set(start, { offset: info.offset + offset, bytes });
        // Tiles in flight and the one read ahead: older reads are not asked for any more.
        while (recent.size > 4) recent.delete(recent.keys().next().value as number);
      }
      return bytes;
    };
    const read = async (start: number, count: number): Promise<Uint8Array> => {
      let raw: Uint8Array;
      let at = 0;
      if (!input.submatrix || input.submatrix.cols === info.shape[1]) {
        raw = await fileRead(start, start * bpe, count * bpe);
      } else {
        // Whole rows of the wider input, cut to the output's columns.
        const keep = input.submatrix.cols;
        const cols = info.shape[1];
        const r0 = Math.floor(start / keep);
        const r1 = Math.ceil((start + count) / keep);
        const rows = await fileRead(start, r0 * cols * bpe, (r1 - r0) * cols * bpe);
        raw = cutSubmatrixBytes(rows, bpe, cols, r1 - r0, keep);
        at = start - r0 * keep;
      }
      const slice = raw.subarray(at * bpe, (at + count) * bpe);
      if (!round) return slice;
      const values = roundTo(decodeToF32(slice, dtype), recipe.dtype!);
      return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    };
    const keep = async (start: number): Promise<void> => {
      const last = recent.get(start);
      recent.delete(start);
      if (spool && last) await spool.keep(last.offset, last.bytes);
    };
    return {
      model: models[i],
      params: perModel.get(models[i]) ?? {},
      dtype: round ? 'F32' : dtype,
      elements: total,
      read,
      keep: spool && !keepAll ? keep : undefined,
    };
  });
  let next = 0;
  let nonFinite = 0;
  // Tiles are read once per pass; progress counts each input byte once, as the output comes back.
  const inputBytes = t.inputs.reduce((s, input) => s + input.tensor.byteLength, 0);
  let inputCounted = 0;
  const write = async (start: number, bytes: Uint8Array) => {
    ctx.checkAbort();
    if (start !== next) throw new Error(`output part at element ${start} where ${next} was due`);
    if (next === 0) {
      onOutput();
      writer.beginTensor(t.name);
    }
    next += bytes.byteLength / DTYPE_BYTES[outDtype];
    nonFinite += countNonFinite(bytes, outDtype);
    await writer.writeTensorPart(bytes);
    const counted = Math.round((inputBytes * next) / total);
    ctx.report(t, counted - inputCounted, bytes.byteLength, false);
    inputCounted = counted;
  };
  try {
    await backend.mergeStream!(method, {
      tensorName: t.name,
      shape: t.shape,
      tensors,
      baseIndex: t.baseIndex,
      params: global,
      seed,
      outDtype,
      write,
    });
    if (next !== total) throw new Error(`the backend wrote ${next} of ${total} elements`);
  } catch (e) {
    if ((e as Error).name === 'AbortError' || e instanceof MergeError) throw e;
    const where = t.inputs.map((input, i) => `${models[i]}/${input.tensor.file}`).join(', ');
    throw new MergeError(
      `${method.name} failed on tensor ${t.name} (${where}): ${(e as Error).message}`,
      t.name,
      {
        cause: e,
      },
    );
  } finally {
    await spools.close();
  }
  if (total === 0) writer.beginTensor(t.name);
  await writer.endTensor();
  ctx.noteNonFinite(t, nonFinite);
  ctx.report(t, 0, 0, true);
}

/** The chunk geometry of `kernelTensor`. */
function chunkGeometry(t: TensorPlan, streamElements: number) {
  const total = elementCount(t.shape);
  const rowLen = rowLength(t.shape);
  const rows = rowLen === 0 ? 0 : total / rowLen;
  const rowsPerChunk = Math.max(1, Math.floor(streamElements / Math.max(1, rowLen)));
  return { rows, rowLen, rowsPerChunk };
}

/** Starts tensor `ctx.tensor` on the kernel threads: the chunks of `kernelTensor`, read there. */
function startThreadTensor(ctx: StreamContext, threads: CpuThreads, arena: KernelArena): TensorOnThreads {
  const { plan, method, tensor: t, recipe, seed } = ctx;
  const { global, perModel } = resolveParams(recipe, method, t.name, plan.numLayers);
  const models = t.inputs.map((input) => plan.models[input.modelIndex].reference);
  const { rows, rowLen, rowsPerChunk } = chunkGeometry(t, ctx.streamElements);
  const inputDtypes = t.inputs.map((input) => input.tensor.dtype as FloatDType);
  const spec = {
    tensorName: t.name,
    shape: t.shape,
    tensors: models.map((model) => ({ model, params: perModel.get(model) ?? {} })),
    baseIndex: t.baseIndex,
    params: global,
    seed,
  };
  // Chunks go to both threads only when none depends on another: no statistics passes (TIES' ranks,
  // DARE's L1 rescale) and no state carried along (fused.ts chunksIndependent). The passes are
  // those of the tensor's own kernel merge, laid out here and dropped.
  const independent = () => {
    if (!chunksIndependent(method, { inputDtypes, workDtype: recipe.dtype })) return false;
    try {
      const job = rawChunkMerge(arena, method, {
        spec,
        inputDtypes,
        outDtype: t.outDtype as FloatDType,
        workDtype: recipe.dtype,
        chunkElements: 1,
      });
      return job !== null && job.passes === 0;
    } catch {
      // Parameters the method rejects: the thread reports it when the tensor's turn comes.
      return false;
    }
  };
  // TIES' and breadcrumbs' statistics split across the threads (threads.ts splitStatistics): for a
  // tensor the engine's cache does not hold (one that does is read once whole on one thread), and
  // masks without a rescale (its L1 sums run in chunk order).
  const splitStatistics = () => {
    if (!threads.splitsStatistics) return false;
    if (recipe.dtype !== undefined && inputDtypes.some((d) => d !== recipe.dtype)) return false;
    const inputBytes = inputDtypes.reduce((sum, d) => sum + rows * rowLen * DTYPE_BYTES[d], 0);
    const chunks = Math.ceil(rows / rowsPerChunk);
    if (chunkInputSets(1, chunks, inputBytes) === chunks) return false;
    try {
      const job = rawChunkMerge(arena, method, {
        spec,
        inputDtypes,
        outDtype: t.outDtype as FloatDType,
        workDtype: recipe.dtype,
        chunkElements: 1,
      });
      return job !== null && job.passes > 0 && (job.splitSelectors?.() ?? null) !== null;
    } catch {
      return false;
    }
  };
  const independentChunks = rows > rowsPerChunk && independent();
  const statisticsSplit = rows > rowsPerChunk && !independentChunks && splitStatistics();
  return threads.start({
    method: recipe.mergeMethod,
    spec,
    inputs: t.inputs.map((input) => ({
      source: plan.models[input.modelIndex].index.sources.get(input.tensor.file)!,
      offset: input.tensor.offset,
    })),
    inputDtypes,
    outDtype: t.outDtype as FloatDType,
    workDtype: recipe.dtype,
    rows,
    rowLength: rowLen,
    rowsPerChunk,
    split: independentChunks || statisticsSplit,
    splitStatistics: statisticsSplit,
  });
}

/**
 * A tensor merged on the kernel threads (`startThreadTensor`): its chunks written in order as they
 * come back, each slot freed once written; errors name the files and tensor as `kernelTensor`'s do.
 */
async function threadTensor(ctx: StreamContext, onThreads: TensorOnThreads): Promise<void> {
  const { plan, method, tensor: t, writer } = ctx;
  const models = t.inputs.map((input) => plan.models[input.modelIndex].reference);
  const where = () => t.inputs.map((input, i) => `${models[i]}/${input.tensor.file}`).join(', ');
  const { rows, rowsPerChunk } = chunkGeometry(t, ctx.streamElements);
  const chunks = Math.ceil(rows / rowsPerChunk);
  const next = async () => {
    try {
      return await onThreads.next();
    } catch (e) {
      if (!(e instanceof ThreadTaskError)) throw e;
      const cause = new Error(e.message);
      cause.name = e.causeName;
      if (e.kind === 'read') {
        const input = t.inputs[e.input];
        throw new MergeError(
          `${models[e.input]}/${input.tensor.file}: reading tensor ${t.name} failed: ${e.message}`,
          t.name,
          { cause },
        );
      }
      throw new MergeError(`${method.name} failed on tensor ${t.name} (${where()}): ${e.message}`, t.name, {
        cause,
      });
    }
  };
  writer.beginTensor(t.name);
  const unreported = { input: 0, output: 0 };
  let nonFinite = 0;
  for (let k = 0; k < chunks; k++) {
    ctx.checkAbort();
    const chunk = await next();
    nonFinite += chunk.nonFinite;
    await writer.writeTensorPart(chunk.bytes);
    chunk.release();
    if (chunks === 1) {
      unreported.input += chunk.inputBytes;
      unreported.output += chunk.bytes.byteLength;
    } else {
      ctx.report(t, chunk.inputBytes, chunk.bytes.byteLength, false);
    }
  }
  await writer.endTensor();
  ctx.noteNonFinite(t, nonFinite);
  ctx.report(t, unreported.input, unreported.output, true);
}

/** Rows x keepCols top-left block of a row-major tensor, on raw bytes. */
function cutSubmatrixBytes(
  bytes: Uint8Array,
  eltBytes: number,
  cols: number,
  rows: number,
  keepCols: number,
) {
  if (keepCols === cols) return bytes.subarray(0, rows * cols * eltBytes);
  const out = new Uint8Array(rows * keepCols * eltBytes);
  const rowBytes = keepCols * eltBytes;
  for (let r = 0; r < rows; r++)
    out.set(bytes.subarray(r * cols * eltBytes, r * cols * eltBytes + rowBytes), r * rowBytes);
  return out;
}

/** The merged tensor's encoded bytes, on `backend`; errors name the method, tensor and files. */
async function computeTensor(
  method: MergeMethod,
  backend: MergeBackend,
  plan: MergePlan,
  loaded: LoadedTensor,
  recipe: MergeRecipe,
  seed: number,
  log: (line: string) => void,
  aim?: AimRelaxation,
): Promise<Uint8Array> {
  const t = loaded.plan;
  const aimFactors = aim?.factorsFor(t.name, t.shape);
  const { global, perModel } = resolveParams(recipe, method, t.name, plan.numLayers);
  const models = t.inputs.map((input) => plan.models[input.modelIndex].reference);
  const common = {
    tensorName: t.name,
    shape: t.shape,
    baseIndex: t.baseIndex,
    params: global,
    seed,
    // The SVD family says what each truncation kept.
    report: (r: SpectralReport) =>
      log(
        `${r.tensor}${r.model ? ` (${r.model})` : ''}: rank ${r.rank} keeps ${(r.energyKept * 100).toFixed(1)}% of the spectrum's energy`,
      ),
  };
  const outDtype = t.outDtype as FloatDType;
  // The byte path needs inputs already in the working dtype (no rounding on the way in), and
  // hands back encoded bytes: AIM needs the method's f32 result, so it takes the f32 path.
  const raw =
    backend.mergeBytes !== undefined &&
    aimFactors === undefined &&
    t.inputs.every((i) => !recipe.dtype || i.tensor.dtype === recipe.dtype);
  try {
    if (raw) {
      const tensors = t.inputs.map((input, i) => {
        const info = input.tensor;
        const eltBytes = DTYPE_BYTES[info.dtype];
        const bytes = input.submatrix
          ? cutSubmatrixBytes(
              loaded.bytes[i],
              eltBytes,
              info.shape[1],
              input.submatrix.rows,
              input.submatrix.cols,
            )
          : loaded.bytes[i];
        return {
          model: models[i],
          bytes,
          dtype: info.dtype as FloatDType,
          params: perModel.get(models[i]) ?? {},
        };
      });
      const out = await backend.mergeBytes!(method, { ...common, tensors, outDtype });
      if (out.byteLength !== t.byteLength) {
        throw new Error(`the backend returned ${out.byteLength} bytes for ${t.byteLength}`);
      }
      return out;
    }
    const values = decodeInputs(loaded, recipe.dtype);
    const tensors: ModelTensor[] = values.map((v, i) => ({
      model: models[i],
      values: v,
      params: perModel.get(models[i]) ?? {},
    }));
    let out = await backend.merge(method, { ...common, tensors });
    const expected = elementCount(t.shape);
    if (out.length !== expected)
      throw new Error(`the method returned ${out.length} values for ${expected} elements`);
    if (aimFactors) {
      const base = values[t.baseIndex];
      out = applyRelaxation(out, base, aimFactors, 0, out === base ? new Float32Array(out.length) : out);
    }
    return encodeFromF32(out, outDtype);
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    const where = t.inputs.map((input, i) => `${models[i]}/${input.tensor.file}`).join(', ');
    throw new MergeError(
      `${method.name} failed on tensor ${t.name} (${where}): ${(e as Error).message}`,
      t.name,
      {
        cause: e,
      },
    );
  }
}

const encoder = new TextEncoder();

async function writeFile(output: OutputTarget, name: string, bytes: Uint8Array): Promise<void> {
  const sink = await output.createFile(name);
  await sink.write(bytes);
  await sink.close();
}

/** config.json, tokenizer, generation config, the recipe and a model card. */
async function writeSideFiles(
  opts: Pick<MergeOptions, 'recipe' | 'output'>,
  plan: MergePlan,
  files: ModelFiles[],
  method: MergeMethod,
  aim: AimRelaxation | undefined,
): Promise<string[]> {
  const { output } = opts;
  // The recorded recipe says which calibration text the statistics came from.
  const recipe = aim ? recordAimStatistics(opts.recipe, aim.statistics) : opts.recipe;
  const written: string[] = [];
  const outDtype = recipe.outDtype ?? recipe.dtype ?? firstFloatDtype(plan);
  const config = outputConfigJson(plan.configText, plan.config, outDtype, plan.untiesHead);
  await writeFile(output, 'config.json', encoder.encode(config));
  written.push('config.json');

  // The tokenizer always comes from the base (recipes may only say tokenizer_source: base).
  const baseFiles = files[Math.max(plan.baseIndex, 0)];
  for (const name of sideFilesOf(baseFiles)) {
    await writeFile(output, name, await readAll(baseFiles, name));
    written.push(name);
  }
  await writeFile(output, 'mergekit_config.yml', encoder.encode(recipeToYaml(recipe)));
  written.push('mergekit_config.yml');
  if (aim) {
    await writeFile(output, AIM_STATISTICS_FILE, encodeAimStatistics(aim.statistics));
    written.push(AIM_STATISTICS_FILE);
  }
  await writeFile(output, 'README.md', encoder.encode(modelCard(recipe, method, plan)));
  written.push('README.md');
  return written;
}

/** Where the output keeps the activation statistics an AIM merge used (reusable via aim.statistics). */
export const AIM_STATISTICS_FILE = 'aim_statistics.safetensors';

/** `recipe` with the calibration it ran: the statistics' own settings and text hash. */
function recordAimStatistics(recipe: MergeRecipe, statistics: ActivationStatistics): MergeRecipe {
  const aim = recipe.aim!;
  const calibration = statistics.calibration ?? aim.calibration;
  return { ...recipe, aim: { ...aim, calibration: { ...calibration, sha256: statistics.textSha256 } } };
}

function firstFloatDtype(plan: MergePlan): FloatDType | undefined {
  const t = plan.tensors.find((x) => x.kind === 'merge');
  return t ? (t.outDtype as FloatDType) : undefined;
}
