/**
 * CPU kernel threads in Node (engine/threads.ts): worker_threads running kernel-worker.ts. Each
 * reads its inputs itself through the process's file descriptors (model files opened by
 * fileByteSource) and hands back encoded chunks in two shared output slots per thread, reused from
 * chunk to chunk; the engine's thread writes them and frees the slot.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { type KernelErrorReply, type KernelJobOf, kernelJobOf, ReplyQueue } from '../engine/kernel-protocol';
import {
  type CpuThreads,
  type TensorOnThreads,
  type ThreadChunk,
  ThreadTaskError,
  type ThreadTensor,
} from '../engine/threads';
import type { ByteSource } from '../formats/byte-source';
import { DTYPE_BYTES } from '../formats/dtype';

/** Two output buffers and their states (0 free, 1 holding a chunk not yet written). */
export interface SlotSet {
  readonly control: SharedArrayBuffer;
  readonly data: readonly SharedArrayBuffer[];
}

/** A tensor's work for one thread: the shared job (kernel-protocol.ts), read through descriptors. */
export interface KernelJob extends KernelJobOf<{ fd: number; offset: number; name: string }> {
  /** New output slots, when the last ones are too small. */
  readonly slots?: SlotSet;
  /** ThreadTensor.splitStatistics: the buffers the threads exchange their counts in. */
  readonly exchange?: StatisticsExchange;
}

/**
 * Shared by the threads of a tensor with split statistics (kernel-worker.ts splitStatistics):
 * `control` is laid out as EXCHANGE_CHUNK_FLAGS says; `ties` holds the
 * chunks' tie counts (per chunk, per model, [upTo, below]); `counts` a region of
 * EXCHANGE_REGION_WORDS per thread and model for its histograms.
 */
export interface StatisticsExchange {
  readonly control: SharedArrayBuffer;
  readonly ties: SharedArrayBuffer;
  readonly counts: SharedArrayBuffer;
  readonly models: number;
}

/**
 * Words of one thread's and model's counts: the high histogram, two windows of 8 buckets, two low
 * histograms, the window bounds.
 */
export const EXCHANGE_REGION_WORDS = 65536 * (1 + 16 + 2) + 16;

/**
 * control: [0], [1] the arrivals at the ends of passes 0 and 1, [2] set when a thread failed; then
 * a ready flag per chunk.
 */
export const EXCHANGE_CHUNK_FLAGS = 3;

/** The error name of a thread that stopped because another thread of the tensor failed. */
export const EXCHANGE_FAILED = 'ExchangeFailed';

/** How long the engine waits for the failing thread's own error after an EXCHANGE_FAILED (ms). */
const ROOT_FAILURE_WAIT_MS = 2000;

export type WorkerReply =
  | { id: number; kind: 'chunk'; slot: number; length: number; inputBytes: number; nonFinite: number }
  | KernelErrorReply;

/** The worker threads could not be started, or one stopped. */
export class KernelThreadError extends Error {
  override name = 'KernelThreadError';
}

interface Thread {
  readonly worker: Worker;
  /** Jobs with ids up to this one are abandoned (shared with the thread). */
  readonly cancelled: Int32Array;
  readonly jobs: Map<number, ReplyQueue<WorkerReply>>;
  slots?: { set: SlotSet; bytes: number; control: Int32Array; data: Uint8Array[] };
  /** Why the thread stopped, once it has. */
  stopped?: string;
}

function fdOf(source: ByteSource): number | undefined {
  const fd = (source as { fd?: unknown }).fd;
  return typeof fd === 'number' ? fd : undefined;
}

/** The threads' script in the CLI bundle (dist/cli/kernel-worker.js), next to this module's chunk. */
export const KERNEL_WORKER_URL = new URL('./kernel-worker.js', import.meta.url);

export class NodeCpuThreads implements CpuThreads {
  readonly splitsStatistics = true;

  /**
   * Whether the threads' script is there: it is in the built bundle, not beside the TypeScript
   * source (an in-process run from source keeps the kernels on its own thread).
   */
  static available(workerUrl: URL = KERNEL_WORKER_URL): boolean {
    return workerUrl.protocol === 'file:' && existsSync(fileURLToPath(workerUrl));
  }

  private nextId = 1;
  private owner = 0;

  private constructor(private readonly threads: Thread[]) {}

  /**
   * `count` threads on the worker script next to this module (dist/cli/kernel-worker.js), or at
   * `workerUrl`.
   */
  static start(count: number, workerUrl: URL = KERNEL_WORKER_URL): NodeCpuThreads {
    if (!NodeCpuThreads.available(workerUrl))
      throw new KernelThreadError(
        `cannot start kernel threads: ${workerUrl.href} is missing (npm run build:cli)`,
      );
    const threads: Thread[] = [];
    for (let i = 0; i < count; i++) {
      const cancelled = new Int32Array(new SharedArrayBuffer(4));
      const worker = new Worker(workerUrl, { workerData: { cancelled: cancelled.buffer } });
      // Idle threads never keep the process alive.
      worker.unref();
      const thread: Thread = { worker, cancelled, jobs: new Map() };
      worker.on('message', (r: WorkerReply) => thread.jobs.get(r.id)?.push(r));
      const stop = (why: string) => {
        thread.stopped ??= why;
        for (const [id, q] of thread.jobs)
          q.push({ id, kind: 'error', message: thread.stopped, causeName: 'KernelThreadError', read: -1 });
      };
      worker.on('error', (e) => stop(`a kernel thread failed: ${e.message}`));
      worker.on('exit', (code) => stop(`a kernel thread stopped (exit code ${code})`));
      threads.push(thread);
    }
    return new NodeCpuThreads(threads);
  }

  get count(): number {
    return this.threads.length;
  }

  reads(source: ByteSource): boolean {
    return fdOf(source) !== undefined;
  }

  start(t: ThreadTensor): TensorOnThreads {
    const id = this.nextId++;
    const inputs = t.inputs.map((input) => ({
      fd: fdOf(input.source) as number,
      offset: input.offset,
      name: input.source.name,
    }));
    const chunks = t.rows === 0 ? 0 : Math.ceil(t.rows / t.rowsPerChunk);
    const slotBytes = Math.max(16, Math.min(t.rows, t.rowsPerChunk) * t.rowLength * DTYPE_BYTES[t.outDtype]);
    const users = t.split ? this.threads.map((_, i) => i) : [this.owner++ % this.threads.length];
    const models = Math.max(1, t.spec.tensors.length - 1);
    const exchange: StatisticsExchange | undefined =
      t.split && t.splitStatistics
        ? {
            control: new SharedArrayBuffer(4 * (EXCHANGE_CHUNK_FLAGS + chunks)),
            ties: new SharedArrayBuffer(8 * 2 * models * chunks),
            counts: new SharedArrayBuffer(4 * EXCHANGE_REGION_WORDS * models * users.length),
            models,
          }
        : undefined;
    const queues = new Map<number, ReplyQueue<WorkerReply>>();
    const jobSlots = new Map<number, NonNullable<Thread['slots']>>();
    users.forEach((index, first) => {
      const thread = this.threads[index];
      let slots: SlotSet | undefined;
      if (!thread.slots || thread.slots.bytes < slotBytes) {
        const set = {
          control: new SharedArrayBuffer(8),
          data: [0, 1].map(() => new SharedArrayBuffer(slotBytes)),
        };
        thread.slots = {
          set,
          bytes: slotBytes,
          control: new Int32Array(set.control),
          data: set.data.map((d) => new Uint8Array(d)),
        };
        slots = set;
      }
      jobSlots.set(index, thread.slots);
      const queue = new ReplyQueue<WorkerReply>();
      thread.jobs.set(id, queue);
      queues.set(index, queue);
      const job: KernelJob = { ...kernelJobOf(id, t, inputs, first, users.length), slots, exchange };
      if (thread.stopped)
        queue.push({ id, kind: 'error', message: thread.stopped, causeName: 'KernelThreadError', read: -1 });
      else thread.worker.postMessage(job);
    });
    let k = 0;
    return {
      next: async (): Promise<ThreadChunk> => {
        if (k >= chunks) throw new RangeError(`tensor ${t.spec.tensorName} has ${chunks} chunks`);
        const index = users[k % users.length];
        k++;
        // The slots this job was sent with (a later job may bring larger ones).
        const slots = jobSlots.get(index)!;
        const reply = await queues.get(index)!.take();
        if (reply.kind === 'error') {
          let failure = reply;
          if (reply.causeName === EXCHANGE_FAILED) {
            // This thread stopped for another's failure: report that one (a read names its file).
            const waited = performance.now();
            let root: WorkerReply | undefined;
            while (!root && performance.now() - waited < ROOT_FAILURE_WAIT_MS) {
              root = users
                .map((i) => queues.get(i)!.failure)
                .find((f) => f !== undefined && f.kind === 'error' && f.causeName !== EXCHANGE_FAILED);
              if (!root) await new Promise((done) => setTimeout(done, 10));
            }
            if (root?.kind === 'error') failure = root;
          }
          for (const i of users) this.threads[i].jobs.delete(id);
          throw new ThreadTaskError(
            failure.message,
            failure.read >= 0 ? 'read' : 'method',
            failure.read,
            failure.causeName,
          );
        }
        if (k === chunks) for (const i of users) this.threads[i].jobs.delete(id);
        return {
          bytes: slots.data[reply.slot].subarray(0, reply.length),
          inputBytes: reply.inputBytes,
          nonFinite: reply.nonFinite,
          release: () => {
            Atomics.store(slots.control, reply.slot, 0);
            Atomics.notify(slots.control, reply.slot);
          },
        };
      },
    };
  }

  cancel(): void {
    const last = this.nextId - 1;
    for (const thread of this.threads) {
      Atomics.store(thread.cancelled, 0, last);
      // A thread waiting for a slot wakes and sees it.
      if (thread.slots) for (const slot of [0, 1]) Atomics.notify(thread.slots.control, slot);
      for (const [id, q] of thread.jobs)
        q.push({ id, kind: 'error', message: 'the tensor was abandoned', causeName: 'AbortError', read: -1 });
      thread.jobs.clear();
    }
  }

  /** Stops the threads (a job under way is abandoned). */
  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.worker.terminate()));
  }
}
