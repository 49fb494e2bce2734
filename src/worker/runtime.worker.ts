/**
 * The model runtime in its own module Web Worker: load a model from the library or from a finished
 * merge output (OPFS), generate with the tokens streamed to the page, cancel, unload. One model is
 * loaded at a time (see model-session.ts), so Compare runs its models one after the other within the
 * device's memory.
 *
 * As in the engine worker, comlink cannot carry an AbortSignal: `generate` takes a run id and
 * `cancel(runId)` stops it; the token callback (a comlink proxy) can also answer `false` to stop.
 * Either way the generation ends within one token, with finishReason 'abort' and what was generated.
 * Errors keep their `name` across the boundary.
 */
import * as Comlink from 'comlink';
import type { ModelFiles } from '../engine/io';
import { blobByteSource } from '../formats/byte-source';
import { idbKeyValueStore } from '../store/kv';
import { ModelLibrary } from '../store/library';
import type { BackendChoice } from './backend';
import {
  type GenerationOutcome,
  type GenerationRequest,
  type LoadedModelInfo,
  ModelSession,
  type StreamedToken,
} from './model-session';
import { OutputStorageError, outputFiles } from './opfs-output';

export type { GenerationOutcome, GenerationRequest, LoadedModelInfo, StreamedToken };

/** Where a model to run comes from. */
export type RuntimeModelSource =
  | { kind: 'library'; name: string }
  /** A finished merge in OPFS; `name` is how it is shown (default "merge <id>"). */
  | { kind: 'output'; outputId: string; name?: string };

export interface LoadRequest {
  source: RuntimeModelSource;
  device: BackendChoice;
  maxContext?: number;
}

const library = new ModelLibrary(idbKeyValueStore());
const session = new ModelSession();
const runs = new Map<string, AbortController>();

/** A finished output's files as a model, read in place from OPFS. */
async function outputModel(outputId: string, name: string): Promise<ModelFiles> {
  const files = await outputFiles(outputId);
  const byName = new Map(files.map((f) => [f.name, f]));
  return {
    name,
    files: () => [...byName.keys()],
    async open(file) {
      const found = byName.get(file);
      if (!found) throw new OutputStorageError(`${name}/${file}: no such file in the merge output`);
      return blobByteSource(found, `${name}/${file}`);
    },
  };
}

async function withRun<T>(runId: string, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  if (runs.has(runId)) throw new Error(`run ${runId} is already under way`);
  const controller = new AbortController();
  runs.set(runId, controller);
  try {
    return await work(controller.signal);
  } finally {
    runs.delete(runId);
  }
}

const api = {
  /** Loads a model, unloading the one loaded before. */
  async load(request: LoadRequest, onNotice?: (line: string) => void): Promise<LoadedModelInfo> {
    const { source } = request;
    const files =
      source.kind === 'library'
        ? await library.openModel({ name: source.name })
        : await outputModel(source.outputId, source.name ?? `merge ${source.outputId.slice(0, 8)}`);
    return session.load(files, {
      device: request.device,
      maxContext: request.maxContext,
      notice: (line) => void onNotice?.(line),
    });
  },

  /** The model loaded now, if any. */
  loaded(): LoadedModelInfo | undefined {
    return session.loaded;
  },

  /** Token ids of a prompt for the loaded model (the chat template applied to messages). */
  promptIds(prompt: GenerationRequest['prompt']): number[] {
    return session.promptIds(prompt);
  },

  /**
   * Generates on the loaded model; `onToken` receives every token as it comes and may answer
   * false to stop. Ends with finishReason 'eos', 'length' or 'abort' (cancelled).
   */
  async generate(
    runId: string,
    request: GenerationRequest,
    onToken?: (token: StreamedToken) => boolean | undefined | Promise<boolean | undefined>,
  ): Promise<GenerationOutcome> {
    return withRun(runId, (signal) => session.generate(request, { signal, onToken }));
  },

  cancel(runId: string): void {
    runs.get(runId)?.abort();
  },

  /** Frees the loaded model's memory (GPU buffers, f32 weights). */
  unload(): void {
    session.unload();
  },
};

export type RuntimeApi = typeof api;

Comlink.expose(api);
