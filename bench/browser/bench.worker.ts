/// <reference lib="webworker" />
/**
 * Worker side of the browser bench (bench/browser.mjs): makes the synthetic models in memory, then
 * runs every case round by round, interleaved, in a module Web Worker as the app does, and reports
 * each run to the page. The baseline reads every input tensor and writes an output of the same
 * size to the same kind of output, with no math, so ratios isolate the cost of the merge itself.
 */
import type { ModelFiles, OutputTarget } from '../../src/engine/io';
import { cpuBackend, prepareMerge, runMerge } from '../../src/engine/merge';
import { readTensorBytes } from '../../src/formats/safetensors';
import { ShardWriter } from '../../src/formats/shard-writer';
import { type SelectedBackend, selectBackend } from '../../src/gpu/select-backend';
import { parseRecipe } from '../../src/recipe';
import { createOpfsOutput, deleteOutput } from '../../src/worker/opfs-output';
import { QWEN25_05B, SyntheticModelError, syntheticQwenModel } from './synthetic-qwen';

export type CaseName = 'baseline' | 'task_arithmetic' | 'ties';
export type Device = 'cpu' | 'gpu';
export type OutputKind = 'opfs' | 'discard';

export interface BenchConfig {
  layers: number;
  /** Rows of the embedding (Qwen2.5's 151936 unless made smaller). */
  vocab: number;
  /** Rounds of the baseline and the CPU rows. */
  repeat: number;
  /** Rounds of the GPU rows (slow on software adapters). */
  gpuRepeat: number;
  cases: CaseName[];
  devices: Device[];
  output: OutputKind;
}

export interface RunResult {
  case: CaseName;
  /** `-` for the baseline, which has no merge math to place. */
  device: Device | '-';
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
  | { type: 'run-start'; case: CaseName; device: Device | '-'; round: number }
  | { type: 'run'; result: RunResult }
  | { type: 'done' }
  | { type: 'fatal'; error: string };

const RECIPES: Record<Exclude<CaseName, 'baseline'>, string> = {
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

/** The same reads and writes as a merge, no decode, no math, no encode (bench/run.mjs's baseline). */
async function copyBaseInputs(
  resolveModel: (ref: string) => Promise<ModelFiles>,
  output: OutputTarget,
): Promise<number> {
  const recipe = parseRecipe(RECIPES.task_arithmetic, 'bench');
  const { plan } = await prepareMerge(recipe, resolveModel);
  const writer = new ShardWriter(plan.layout, (f) => output.createFile(f));
  let inputBytes = 0;
  for (const t of plan.tensors) {
    const bytes = await Promise.all(
      t.inputs.map((i) => {
        const source = plan.models[i.modelIndex].index.sources.get(i.tensor.file);
        if (!source) throw new BenchSetupError(`${i.tensor.file} of model ${i.modelIndex} is not open`);
        return readTensorBytes(source, i.tensor);
      }),
    );
    for (const b of bytes) inputBytes += b.byteLength;
    await writer.writeTensor(
      t.name,
      bytes[0].byteLength === t.byteLength ? bytes[0] : new Uint8Array(t.byteLength),
    );
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
): Promise<RunResult> {
  const resolveModel = async (ref: string) => {
    const m = models.get(ref);
    if (!m) throw new SyntheticModelError(`the bench recipe names '${ref}', which was not generated`);
    return m;
  };
  const shownDevice = name === 'baseline' ? '-' : device;
  const output = await openOutput(config.output, `bench-${name}-${device}-${round}-${Date.now()}`);
  let selected: SelectedBackend | undefined;
  try {
    const recipe = name === 'baseline' ? undefined : parseRecipe(RECIPES[name], 'bench');
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
      inputBytes = await copyBaseInputs(resolveModel, output.target);
    } else {
      const result = await runMerge({
        recipe,
        resolveModel,
        output: output.target,
        backend: selected?.backend ?? cpuBackend,
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
      for (const device of name === 'baseline' ? (['cpu'] as const) : devices) {
        if (round >= (device === 'gpu' ? config.gpuRepeat : config.repeat)) continue;
        const result = await runOnce(name, device, round, config, models);
        post({ type: 'run', result });
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
