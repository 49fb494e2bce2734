/// <reference lib="webworker" />
/**
 * Worker side of the browser bench (bench/browser.mjs): makes the synthetic models in memory, then
 * runs every case round by round, interleaved, in a module Web Worker as the app does, and reports
 * each run to the page. The floor reads every input tensor and writes an output of the same
 * size to the same kind of output, with no math, so ratios isolate the cost of the merge itself.
 */
import type { ModelFiles, OutputTarget } from '../../src/engine/io';
import { cpuBackend, prepareMerge, runMerge, STREAM_ELEMENTS } from '../../src/engine/merge';
import { readInto } from '../../src/formats/byte-source';
import { DTYPE_BYTES } from '../../src/formats/dtype';
import { ShardWriter } from '../../src/formats/shard-writer';
import { type SelectedBackend, selectBackend } from '../../src/gpu/select-backend';
import { parseRecipe } from '../../src/recipe';
import { BrowserCpuThreads } from '../../src/worker/kernel-threads';
import { createOpfsOutput, deleteOutput } from '../../src/worker/opfs-output';
import { QWEN25_05B, SyntheticModelError, syntheticQwenModel } from './synthetic-qwen';

export type CaseName = 'floor' | 'task_arithmetic' | 'ties';
export type Device = 'cpu' | 'gpu';
export type OutputKind = 'opfs' | 'discard';

export interface BenchConfig {
  layers: number;
  /** Rows of the embedding (Qwen2.5's 151936 unless made smaller). */
  vocab: number;
  /** Rounds of the floor and the CPU rows. */
  repeat: number;
  /** Rounds of the GPU rows (slow on software adapters). */
  gpuRepeat: number;
  cases: CaseName[];
  devices: Device[];
  /** CPU kernel threads of the CPU rows: 1, the kernels in this worker; 2, two kernel workers. */
  threads: number[];
  output: OutputKind;
}

export interface RunResult {
  case: CaseName;
  /** `-` for the floor, which has no merge math to place; `cpu@N` for N kernel threads. */
  device: Device | '-' | `cpu@${number}`;
  round: number;
  seconds: number;
  inputBytes: number;
  /** Peak of the page's measured memory (worker included) while the run went; set by the page. */
  jsPeakBytes?: number;
}

export type BenchMessage =
  | { type: 'log'; line: string }
  | {
      type: 'ready';
      adapter: string | null;
      adapterMissing?: string;
      modelBytes: number;
      generateSeconds: number;
      /** How the page measures memory; set by the page. */
      memorySource?: string;
    }
  | { type: 'run-start'; case: CaseName; device: RunResult['device']; round: number }
  | { type: 'run'; result: RunResult }
  | { type: 'done' }
  | { type: 'fatal'; error: string };

const RECIPES: Record<Exclude<CaseName, 'floor'>, string> = {
  task_arithmetic:
    'merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: reasoner\n    parameters: {weight: 0.7}\ndtype: bfloat16\n',
  ties: 'merge_method: ties\nbase_model: base\nmodels:\n  - model: reasoner\n    parameters: {weight: 1.0, density: 0.2}\nparameters: {lambda: 1.0}\ndtype: bfloat16\n',
};

/** Seed of the reasoner's task vector in bench/run.mjs. */
const REASONER_DELTA_SEED = 0x1234;

export class BenchSetupError extends Error {
  override name = 'BenchSetupError';
}

const scope = self as unknown as DedicatedWorkerGlobalScope;
const post = (m: BenchMessage) => scope.postMessage(m);
const log = (line: string) => post({ type: 'log', line });

/** Counts what would be written and keeps nothing: output I/O taken out of the measurement. */
function discardingOutput(): OutputTarget {
  return {
    async createFile() {
      return { async write() {}, async close() {} };
    },
    async commit() {},
    async abort() {},
  };
}

interface RunOutput {
  target: OutputTarget;
  /** Removes what the run wrote (after commit or abort). */
  remove(): Promise<void>;
}

async function openOutput(kind: OutputKind, id: string): Promise<RunOutput> {
  if (kind === 'discard') return { target: discardingOutput(), remove: async () => {} };
  const target = await createOpfsOutput(id);
  return { target, remove: () => deleteOutput(id) };
}

function describeAdapter(adapter: GPUAdapter): string {
  const info = adapter.info;
  const parts = [info.vendor, info.architecture, info.device, info.description].filter(
    (p, i, all) => p && all.indexOf(p) === i,
  );
  const fallback = (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter;
  return `${parts.join(' ') || 'unnamed adapter'}${fallback ? ' (fallback adapter)' : ''}`;
}

async function findAdapter(): Promise<{ adapter?: GPUAdapter; missing?: string }> {
  if (!('gpu' in navigator) || !navigator.gpu) return { missing: 'navigator.gpu is missing in the worker' };
  try {
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
    return adapter ? { adapter } : { missing: 'navigator.gpu.requestAdapter() gave no adapter' };
  } catch (e) {
    return { missing: `navigator.gpu.requestAdapter() failed: ${(e as Error).message}` };
  }
}

/**
 * The storage floor (bench/run.mjs's floor): the merge's reads and writes, no decode, no math, no
 * encode. Every tensor is read a chunk of rows (the engine's chunks) at a time, each input with its
 * own positioned read into one of two reused buffers (the next chunk read while this one is
 * written); the output chunk written is the first input's bytes, or zeros where sizes differ.
 */
async function ioFloor(
  resolveModel: (ref: string) => Promise<ModelFiles>,
  output: OutputTarget,
): Promise<number> {
  const recipe = parseRecipe(RECIPES.task_arithmetic, 'bench');
  const { plan } = await prepareMerge(recipe, resolveModel);
  const writer = new ShardWriter(plan.layout, (f) => output.createFile(f));
  let inputBytes = 0;
  const buffers: Uint8Array[][] = [[], []];
  const buffer = (set: number, i: number, length: number) => {
    if (!buffers[set][i] || buffers[set][i].byteLength < length) buffers[set][i] = new Uint8Array(length);
    return buffers[set][i].subarray(0, length);
  };
  let zeros = new Uint8Array(0);
  const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
  for (const t of plan.tensors) {
    const rowLen = t.shape.length >= 2 ? count(t.shape.slice(1)) : count(t.shape);
    const rows = rowLen === 0 ? 0 : count(t.shape) / rowLen;
    const rowsPerChunk = Math.max(1, Math.floor(STREAM_ELEMENTS / Math.max(1, rowLen)));
    const outRowBytes = rowLen * DTYPE_BYTES[t.outDtype];
    const read = (r0: number, r1: number, set: number) =>
      Promise.all(
        t.inputs.map(async (input, i) => {
          const cols = input.submatrix ? input.tensor.shape[1] : rowLen;
          const rowBytes = cols * DTYPE_BYTES[input.tensor.dtype];
          const target = buffer(set, i, (r1 - r0) * rowBytes);
          const source = plan.models[input.modelIndex].index.sources.get(input.tensor.file);
          if (!source)
            throw new BenchSetupError(`${input.tensor.file} of model ${input.modelIndex} is not open`);
          await readInto(source, input.tensor.offset + r0 * rowBytes, target);
          inputBytes += target.byteLength;
          return target;
        }),
      );
    writer.beginTensor(t.name);
    let writing: Promise<void> = Promise.resolve();
    let pending = rows > 0 ? read(0, Math.min(rows, rowsPerChunk), 0) : undefined;
    for (let r0 = 0, k = 0; r0 < rows; r0 += rowsPerChunk, k++) {
      const chunk = (await pending) as Uint8Array[];
      const r1 = Math.min(rows, r0 + rowsPerChunk);
      await writing;
      if (r1 < rows) pending = read(r1, Math.min(rows, r1 + rowsPerChunk), (k + 1) % 2);
      const outBytes = (r1 - r0) * outRowBytes;
      if (chunk[0].byteLength === outBytes) {
        writing = writer.writeTensorPart(chunk[0]);
      } else {
        if (zeros.byteLength < outBytes) zeros = new Uint8Array(outBytes);
        writing = writer.writeTensorPart(zeros.subarray(0, outBytes));
      }
    }
    await writing;
    await writer.endTensor();
  }
  await writer.finish();
  await output.commit();
  return inputBytes;
}

async function runOnce(
  name: CaseName,
  device: Device,
  round: number,
  config: BenchConfig,
  models: Map<string, ModelFiles>,
  threads = 1,
): Promise<RunResult> {
  const resolveModel = async (ref: string) => {
    const m = models.get(ref);
    if (!m) throw new SyntheticModelError(`the bench recipe names '${ref}', which was not generated`);
    return m;
  };
  const shownDevice: RunResult['device'] = name === 'floor' ? '-' : threads > 1 ? `cpu@${threads}` : device;
  const output = await openOutput(config.output, `bench-${name}-${device}-${round}-${Date.now()}`);
  let selected: SelectedBackend | undefined;
  // Started before the clock, as the GPU device is; the app starts them per merge (tens of ms).
  const cpuThreads = name !== 'floor' && threads > 1 ? BrowserCpuThreads.start(threads) : undefined;
  try {
    const recipe = name === 'floor' ? undefined : parseRecipe(RECIPES[name], 'bench');
    // Getting the device is left out of the time: it is paid once per session, not per byte merged.
    if (recipe && device === 'gpu') {
      selected = await selectBackend('gpu', {
        methodName: recipe.mergeMethod,
        notice: () => {},
        label: 'l2s-bench',
      });
    }
    post({ type: 'run-start', case: name, device: shownDevice, round });
    const started = performance.now();
    let inputBytes = 0;
    if (!recipe) {
      inputBytes = await ioFloor(resolveModel, output.target);
    } else {
      const result = await runMerge({
        recipe,
        resolveModel,
        output: output.target,
        backend: selected?.backend ?? cpuBackend,
        cpuThreads,
        onProgress: (p) => {
          inputBytes = p.inputBytesDone;
        },
      });
      if (result.backend !== device) {
        throw new BenchSetupError(
          `${name} was asked to run on the ${device} but ran on the ${result.backend}`,
        );
      }
    }
    const seconds = (performance.now() - started) / 1000;
    return {
      case: name,
      device: shownDevice,
      round,
      seconds,
      inputBytes,
    };
  } catch (e) {
    await output.target.abort();
    throw e;
  } finally {
    cpuThreads?.close();
    selected?.dispose();
    await output.remove();
  }
}

async function main(config: BenchConfig): Promise<void> {
  const shape = { ...QWEN25_05B, layers: config.layers, vocabSize: config.vocab };
  const { adapter, missing } = config.devices.includes('gpu') ? await findAdapter() : {};
  const devices = config.devices.filter((d) => d === 'cpu' || adapter);

  const started = performance.now();
  log(
    `making the synthetic models in memory (${shape.layers} layers, embedding ${shape.vocabSize} x ${shape.hiddenSize}, bf16)`,
  );
  const base = await syntheticQwenModel('base', shape);
  const reasoner = await syntheticQwenModel('reasoner', shape, REASONER_DELTA_SEED);
  const models = new Map([
    ['base', base],
    ['reasoner', reasoner],
  ]);
  const modelBytes = (await base.open('model.safetensors')).size;
  post({
    type: 'ready',
    adapter: adapter ? describeAdapter(adapter) : null,
    adapterMissing: missing,
    modelBytes,
    generateSeconds: (performance.now() - started) / 1000,
  });

  // Interleaved rounds, each case reporting its median: a slow moment of the machine is spread
  // over every case instead of landing on one.
  const rounds = Math.max(config.repeat, devices.includes('gpu') ? config.gpuRepeat : 0);
  for (let round = 0; round < rounds; round++) {
    for (const name of config.cases) {
      for (const device of name === 'floor' ? (['cpu'] as const) : devices) {
        if (round >= (device === 'gpu' ? config.gpuRepeat : config.repeat)) continue;
        for (const threads of name === 'floor' || device === 'gpu' ? [1] : config.threads) {
          const result = await runOnce(name, device, round, config, models, threads);
          post({ type: 'run', result });
        }
      }
    }
  }
  post({ type: 'done' });
}

scope.onmessage = (ev: MessageEvent<BenchConfig>) => {
  main(ev.data).catch((e: unknown) => {
    const err = e instanceof Error ? e : new Error(String(e));
    post({ type: 'fatal', error: `${err.name}: ${err.message}` });
  });
};
