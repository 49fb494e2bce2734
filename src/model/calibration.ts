/**
 * AIM's statistics pass: the base model (System 1) runs the calibration blocks, prefill only, in f32,
 * with a fresh KV cache per block (nothing carried between blocks, nothing sampled that is used), and
 * for every module with a weight that is not an embedding (src/model/runner.ts lists them) we keep
 *
 *   a[c] += mean over the block's rows of |x[t, c]|
 *
 * x being the module's input ([tokens, channels]; Qwen3's q_norm/k_norm see [tokens * heads, headDim]).
 * In f32, in this order (the GPU kernel shaders/model/activation-stats.wgsl repeats it): s = 0; for each
 * row t in order, s = s + |x[t, c]|; mean = s / rows (correctly rounded); a[c] = a[c] + mean.
 * This is AIM's get_calib_feat (x.abs().mean over the block, summed over blocks), in f32 where that
 * code runs the model in bf16.
 */
import type { ModelFiles, ModelResolver } from '../engine/io';
import { GpuContext, type GpuContextOptions } from '../gpu/device';
import type { DeviceChoice } from '../gpu/select-backend';
import type { ActivationStatistics } from '../methods/aim';
import type { CalibrationSettings } from '../recipe/aim';
import type { MergeRecipe } from '../recipe/recipe';
import { decodeAimStatistics } from './aim-statistics';
import {
  buildCalibrationBlocks,
  builtinCandidates,
  type CalibrationBlocks,
  type CandidateTexts,
  fileCandidates,
  hubCandidates,
} from './calibration-text';
import type { ModelConfig } from './config';
import { GpuActivationStatistics } from './gpu/activation-stats';
import { createGpuRunner } from './gpu/runner';
import { createCpuRunner } from './reference';
import type { ModelRunner, PrefillHooks } from './runner';
import { ModelTokenizer } from './tokenizer';
import { FINAL_NORM, LM_HEAD, layerWeightNames, type ModelWeights, openModelWeights } from './weights';

/** The statistics pass cannot run or the runner did not report what AIM needs. */
export class CalibrationError extends Error {
  override name = 'CalibrationError';
}

export interface CalibrationProgress {
  blocksDone: number;
  blocksTotal: number;
  tokensDone: number;
  elapsedMs: number;
  /** Estimated time left, once a block is done. */
  etaMs?: number;
}

const GREEDY = { temperature: 0, topP: 1, seed: 0 } as const;

/** The modules AIM measures for `config`, in forward order (tensor names without `.weight`). */
export function calibrationModules(config: ModelConfig): string[] {
  const strip = (name: string) => name.replace(/\.weight$/, '');
  const out: string[] = [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    const n = layerWeightNames(config, layer);
    out.push(strip(n.inputNorm), strip(n.q), strip(n.k), strip(n.v));
    if (n.qNorm && n.kNorm) out.push(strip(n.qNorm), strip(n.kNorm));
    out.push(strip(n.o), strip(n.postAttnNorm), strip(n.gate), strip(n.up), strip(n.down));
  }
  // lm_head is measured also when the base ties it: a merged output may have its own.
  out.push(strip(FINAL_NORM), strip(LM_HEAD));
  return out;
}

/** The CPU twin of the GPU kernel: a per module, one block at a time. */
export class ActivationAccumulator {
  readonly a = new Map<string, Float32Array>();
  private readonly blockSum = new Map<string, Float32Array>();
  private readonly rows = new Map<string, number>();
  /** The previous observation, when it started its module's block sum from zero. */
  private last?: { x: Float32Array; channels: number; sum: Float32Array };

  /** Adds a module input of [rows, channels] to the running block (the observer of runner.ts). */
  readonly observe = (module: string, x: Float32Array, channels: number): void => {
    if (channels <= 0 || x.length % channels !== 0)
      throw new CalibrationError(`module ${module} reported ${x.length} values for ${channels} channels`);
    let sum = this.blockSum.get(module);
    if (!sum) {
      sum = new Float32Array(channels);
      this.blockSum.set(module, sum);
      this.a.set(module, new Float32Array(channels));
    } else if (sum.length !== channels) {
      throw new CalibrationError(`module ${module} reported ${channels} channels, earlier ${sum.length}`);
    }
    const rowsBefore = this.rows.get(module) ?? 0;
    const rows = x.length / channels;
    this.rows.set(module, rowsBefore + rows);
    // q/k/v (and gate/up) get the same array in a row: when both sums start from zero, the
    // previous module's sums are this one's, bit for bit.
    const prev = this.last;
    this.last = rowsBefore === 0 ? { x, channels, sum } : undefined;
    if (rowsBefore === 0 && prev && prev.x === x && prev.channels === channels) {
      sum.set(prev.sum);
      return;
    }
    for (let t = 0; t < rows; t++) {
      const row = t * channels;
      for (let c = 0; c < channels; c++) sum[c] += Math.abs(x[row + c]);
    }
  };

  /** Ends a block: a += blockSum / rows per channel, and the block sums start again at zero. */
  endBlock(): void {
    this.last = undefined;
    for (const [module, sum] of this.blockSum) {
      const rows = this.rows.get(module) ?? 0;
      if (rows === 0) continue;
      const a = this.a.get(module)!;
      for (let c = 0; c < sum.length; c++) a[c] += Math.fround(sum[c] / rows);
      sum.fill(0);
      this.rows.set(module, 0);
    }
  }
}

export interface StatisticsPassOptions {
  signal?: AbortSignal;
  onProgress?: (p: CalibrationProgress) => void;
}

function abortError(): Error {
  const e = new Error('the calibration was cancelled');
  e.name = 'AbortError';
  return e;
}

/** Where the statistics are reduced: the CPU observer, or a GPU hook (src/model/gpu/activation-stats.ts). */
export interface StatisticsSink {
  hooks: PrefillHooks;
  endBlock(): Promise<void> | void;
  result(): Promise<Map<string, Float32Array>>;
}

export function cpuStatisticsSink(): StatisticsSink & { accumulator: ActivationAccumulator } {
  const accumulator = new ActivationAccumulator();
  return {
    accumulator,
    hooks: { onModuleInput: accumulator.observe },
    endBlock: () => accumulator.endBlock(),
    result: async () => accumulator.a,
  };
}

/** Runs every block through `runner` (reset before each) into `sink`; checks every expected module was seen. */
export async function runStatisticsPass(
  runner: ModelRunner,
  calibration: CalibrationBlocks,
  sink: StatisticsSink,
  options: StatisticsPassOptions & { settings?: CalibrationSettings } = {},
): Promise<ActivationStatistics> {
  const started = Date.now();
  const total = calibration.blocks.length;
  if (runner.maxContext < calibration.blockSize) {
    throw new CalibrationError(
      `block_size ${calibration.blockSize} is longer than the runner's context (${runner.maxContext} tokens)`,
    );
  }
  options.onProgress?.({ blocksDone: 0, blocksTotal: total, tokensDone: 0, elapsedMs: 0 });
  for (let b = 0; b < total; b++) {
    if (options.signal?.aborted) throw abortError();
    runner.reset();
    await runner.prefill(Array.from(calibration.blocks[b]), GREEDY, sink.hooks);
    await sink.endBlock();
    const elapsedMs = Date.now() - started;
    options.onProgress?.({
      blocksDone: b + 1,
      blocksTotal: total,
      tokensDone: (b + 1) * calibration.blockSize,
      elapsedMs,
      etaMs: (elapsedMs / (b + 1)) * (total - b - 1),
    });
  }
  runner.reset();
  const modules = await sink.result();
  const expected = calibrationModules(runner.config);
  const missing = expected.filter((m) => !modules.has(m));
  if (missing.length > 0) {
    throw new CalibrationError(
      `the ${runner.backend.toUpperCase()} runner did not report the input of ${missing.length} module(s) AIM needs ` +
        `(${missing.slice(0, 4).join(', ')}${missing.length > 4 ? ', ...' : ''})`,
    );
  }
  const ordered = new Map(expected.map((m) => [m, modules.get(m)!]));
  return {
    modules: ordered,
    blocks: total,
    blockSize: calibration.blockSize,
    tokens: total * calibration.blockSize,
    textSha256: calibration.textSha256,
    calibration: options.settings,
  };
}

export interface AimCalibrationOptions extends StatisticsPassOptions {
  /** The base model (System 1). */
  base: ModelFiles;
  settings: CalibrationSettings;
  device: DeviceChoice;
  /** WebGPU for the GPU path (Node passes Dawn's); default navigator.gpu. */
  gpu?: () => Promise<GPU | undefined>;
  /** Reads `calibration.path` (the CLI: relative to the recipe; the app: a file the user picked). */
  readCalibrationFile?: (path: string) => Promise<Uint8Array>;
  /** Dataset viewer base URL for hub sources. */
  datasetsEndpoint?: string;
  fetch?: typeof fetch;
  notice?: (line: string) => void;
}

/** The candidate texts the settings name. */
export async function calibrationCandidates(
  settings: CalibrationSettings,
  opts: Pick<AimCalibrationOptions, 'readCalibrationFile' | 'datasetsEndpoint' | 'fetch' | 'signal'>,
): Promise<CandidateTexts> {
  const source = settings.source;
  if (source.kind === 'builtin') return builtinCandidates();
  if (source.kind === 'file') {
    if (!opts.readCalibrationFile)
      throw new CalibrationError(`calibration file ${source.path}: no way to read local files here`);
    return fileCandidates(await opts.readCalibrationFile(source.path), source.path, source.field);
  }
  return hubCandidates(source, { endpoint: opts.datasetsEndpoint, fetch: opts.fetch, signal: opts.signal });
}

/** Tokenized blocks of the calibration text for the base model. */
export async function prepareCalibrationBlocks(
  opts: Pick<
    AimCalibrationOptions,
    'base' | 'settings' | 'readCalibrationFile' | 'datasetsEndpoint' | 'fetch' | 'signal'
  >,
): Promise<CalibrationBlocks> {
  const tokenizer = await ModelTokenizer.load(opts.base);
  const candidates = await calibrationCandidates(opts.settings, opts);
  return buildCalibrationBlocks(candidates, tokenizer, opts.settings, opts.signal);
}

/** The whole calibration: text, blocks, the base model on the chosen device, the statistics. */
export async function runAimCalibration(opts: AimCalibrationOptions): Promise<ActivationStatistics> {
  const calibration = await prepareCalibrationBlocks(opts);
  const expected = opts.settings.sha256;
  if (expected !== undefined && expected !== calibration.textSha256) {
    throw new CalibrationError(
      `the calibration text hashes to ${calibration.textSha256}, but the recipe's aim.calibration.sha256 is ` +
        `${expected}: the source changed since that recipe was written (remove sha256 to accept the new text)`,
    );
  }
  const weights = await openModelWeights(opts.base);
  const notice = opts.notice ?? (() => {});
  let gpuFailure: string | undefined;
  if (opts.device !== 'cpu') {
    const gpuRun = await tryGpuStatistics(weights, calibration, opts).catch((e: Error) => {
      if (opts.device === 'gpu' || e.name === 'AbortError') throw e;
      gpuFailure = e.message;
      return undefined;
    });
    if (gpuRun) return gpuRun;
    notice(`calibrating on the CPU: ${gpuFailure ?? 'no GPU'}`);
  }
  const runner = await createCpuRunner(weights, { maxContext: calibration.blockSize });
  try {
    return await runStatisticsPass(runner, calibration, cpuStatisticsSink(), {
      ...opts,
      settings: opts.settings,
    });
  } finally {
    runner.dispose();
  }
}

async function tryGpuStatistics(
  weights: ModelWeights,
  calibration: CalibrationBlocks,
  opts: AimCalibrationOptions,
): Promise<ActivationStatistics | undefined> {
  const gpu = opts.gpu ? await opts.gpu() : undefined;
  const contextOptions: GpuContextOptions = { label: 'l2s.calibration', ...(gpu ? { gpu } : {}) };
  let ctx: GpuContext | undefined;
  try {
    ctx = await GpuContext.create(contextOptions);
    const runner = await createGpuRunner(weights, { context: ctx, maxContext: calibration.blockSize });
    const sink = new GpuActivationStatistics(ctx);
    try {
      return await runStatisticsPass(runner, calibration, sink, { ...opts, settings: opts.settings });
    } finally {
      sink.dispose();
      runner.dispose();
    }
  } finally {
    ctx?.destroy();
  }
}

export interface RecipeStatisticsOptions
  extends Omit<AimCalibrationOptions, 'base' | 'settings' | 'readCalibrationFile'> {
  resolveModel: ModelResolver;
  /** Reads a file the recipe names (aim.statistics, aim.calibration.path), relative to the recipe. */
  readRecipeFile?: (path: string) => Promise<Uint8Array>;
}

/**
 * The activation statistics an AIM recipe needs: read from `aim.statistics` when it names a saved file,
 * else computed by running the calibration on base_model. Undefined for a recipe without `aim:`.
 */
export async function aimStatisticsForRecipe(
  recipe: MergeRecipe,
  opts: RecipeStatisticsOptions,
): Promise<ActivationStatistics | undefined> {
  const aim = recipe.aim;
  if (!aim) return undefined;
  if (!recipe.baseModel)
    throw new CalibrationError('aim: needs base_model, the model whose activations are measured');
  if (aim.statistics !== undefined) {
    if (!opts.readRecipeFile)
      throw new CalibrationError(`aim.statistics ${aim.statistics}: no way to read local files here`);
    let bytes: Uint8Array;
    try {
      bytes = await opts.readRecipeFile(aim.statistics);
    } catch (e) {
      throw new CalibrationError(
        `aim.statistics ${aim.statistics}: cannot be read (${(e as Error).message})`,
        {
          cause: e,
        },
      );
    }
    const stats = await decodeAimStatistics(bytes, aim.statistics);
    const expected = aim.calibration.sha256;
    if (expected !== undefined && expected !== stats.textSha256) {
      throw new CalibrationError(
        `${aim.statistics}: the statistics come from calibration text ${stats.textSha256}, but the recipe's ` +
          `aim.calibration.sha256 is ${expected}`,
      );
    }
    opts.notice?.(
      `AIM statistics from ${aim.statistics} (${stats.blocks} blocks of ${stats.blockSize} tokens); no calibration run`,
    );
    return stats;
  }
  const base = await opts.resolveModel(recipe.baseModel);
  return runAimCalibration({
    ...opts,
    base,
    settings: aim.calibration,
    readCalibrationFile: opts.readRecipeFile,
  });
}
