/// <reference lib="webworker" />
/**
 * Worker side of the runtime bench's browser rows: makes each synthetic model in memory (Blobs, as
 * the app's library holds models) and times the GPU runner (WebGPU in the worker) and the CPU
 * reference runner on it.
 */
import {
  benchRuntime,
  type RuntimeBenchOptions,
  type RuntimeBenchRow,
  syntheticRuntimeModel,
} from './measure';

export type RuntimeWorkerMessage =
  | { type: 'row'; row: RuntimeBenchRow }
  | { type: 'error'; error: string }
  | { type: 'done' };

const post = (m: RuntimeWorkerMessage) => (self as unknown as DedicatedWorkerGlobalScope).postMessage(m);

self.onmessage = async (ev: MessageEvent<Record<string, string>>) => {
  const q = ev.data;
  const base = {
    layers: Number(q.layers),
    vocab: Number(q.vocab),
    prompt: Number(q.prompt),
    decode: Number(q.decode),
    rounds: Number(q.rounds),
  };
  for (const model of q.models.split(',')) {
    const options: RuntimeBenchOptions = { ...base, model };
    const files = await syntheticRuntimeModel(`synthetic-qwen2.5-${model}`, options);
    for (const device of q.devices.split(',') as Array<'gpu' | 'cpu'>) {
      try {
        post({ type: 'row', row: await benchRuntime(files, device, options) });
      } catch (e) {
        post({ type: 'error', error: `${model} ${device}: ${(e as Error).name}: ${(e as Error).message}` });
      }
    }
  }
  post({ type: 'done' });
};
