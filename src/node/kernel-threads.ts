/**
 * CPU kernel threads in Node (engine/threads.ts): worker_threads running kernel-worker.ts. Each
 * reads its inputs itself through the process's file descriptors (model files opened by
 * fileByteSource) and hands back encoded chunks in two shared output slots per thread, reused from
 * chunk to chunk; the engine's thread writes them and frees the slot.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import {
  chunkCount,
  type KernelChunkReply,
  type KernelErrorReply,
  type KernelJobOf,
  KernelThreadReplies,
  threadChunk,
} from '../engine/kernel-protocol';
import type { CpuThreads, TensorOnThreads, ThreadChunk, ThreadTensor } from '../engine/threads';
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

/** A produced chunk: `length` bytes at the start of output slot `slot`. */
export interface WorkerChunk extends KernelChunkReply {
  readonly slot: number;
  readonly length: number;
}

export type WorkerReply = WorkerChunk | KernelErrorReply;

/** The worker threads could not be started, or one stopped. */
export class KernelThreadError extends Error {
  override name = 'KernelThreadError';
}

interface Thread {
  readonly worker: Worker;
  /** Jobs with ids up to this one are abandoned (shared with the thread). */
  readonly cancelled: Int32Array;
  slots?: { set: SlotSet; bytes: number; control: Int32Array; data: Uint8Array[] };
}

function fdOf(source: ByteSource): number | undefined {
  const fd = (source as { fd?: unknown }).fd;
  return typeof fd === 'number' ? fd : undefined;
}

/**
 * A thread that stopped for another thread's failure (EXCHANGE_FAILED) reports that one, once it
 * has arrived (a read failure names its file).
 */
async function rootFailure(
  failure: KernelErrorReply,
  failures: () => (KernelErrorReply | undefined)[],
): Promise<KernelErrorReply> {
  if (failure.causeName !== EXCHANGE_FAILED) return failure;
  const waited = performance.now();
  for (;;) {
    const root = failures().find((f) => f !== undefined && f.causeName !== EXCHANGE_FAILED);
    if (root) return root;
    if (performance.now() - waited >= ROOT_FAILURE_WAIT_MS) return failure;
    await new Promise((done) => setTimeout(done, 10));
  }
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

  private readonly replies: KernelThreadReplies<WorkerChunk>;

  private constructor(private readonly threads: Thread[]) {
    this.replies = new KernelThreadReplies(threads.length);
    threads.forEach(({ worker }, i) => {
      worker.on('message', (r: WorkerReply) => this.replies.receive(i, r));
      worker.on('error', (e) => this.replies.stop(i, `a kernel thread failed: ${e.message}`));
      worker.on('exit', (code) => this.replies.stop(i, `a kernel thread stopped (exit code ${code})`));
    });
  }

  /**
   * `count` threads on the worker script next to this module (dist/cli/kernel-worker.js), or at
   * `workerUrl`.
   */
  static start(count: number, workerUrl: URL = KERNEL_WORKER_URL): NodeCpuThreads {
    if (!NodeCpuThreads.available(workerUrl))
      throw new KernelThreadError(
        `cannot start kernel threads: ${workerUrl.href} is missing (npm run build:cli)`,
      );
    const threads = Array.from({ length: count }, (): Thread => {
      const cancelled = new Int32Array(new SharedArrayBuffer(4));
      const worker = new Worker(workerUrl, { workerData: { cancelled: cancelled.buffer } });
      // Idle threads never keep the process alive.
      worker.unref();
      return { worker, cancelled };
    });
    return new NodeCpuThreads(threads);
  }

  get count(): number {
    return this.threads.length;
  }

  reads(source: ByteSource): boolean {
    return fdOf(source) !== undefined;
  }

  start(t: ThreadTensor): TensorOnThreads {
    const inputs = t.inputs.map((input) => ({
      fd: fdOf(input.source) as number,
      offset: input.offset,
      name: input.source.name,
    }));
    const chunks = chunkCount(t);
    const slotBytes = Math.max(16, Math.min(t.rows, t.rowsPerChunk) * t.rowLength * DTYPE_BYTES[t.outDtype]);
    const threadsUsed = this.replies.threadsFor(t);
    const models = Math.max(1, t.spec.tensors.length - 1);
    const exchange: StatisticsExchange | undefined =
      t.split && t.splitStatistics
        ? {
            control: new SharedArrayBuffer(4 * (EXCHANGE_CHUNK_FLAGS + chunks)),
            ties: new SharedArrayBuffer(8 * 2 * models * chunks),
            counts: new SharedArrayBuffer(4 * EXCHANGE_REGION_WORDS * models * threadsUsed),
            models,
          }
        : undefined;
    // The slots each thread's job was sent with (a later job may bring larger ones).
    const jobSlots = new Map<number, NonNullable<Thread['slots']>>();
    const send = (index: number, job: KernelJobOf<(typeof inputs)[number]>) => {
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
      thread.worker.postMessage({ ...job, slots, exchange } satisfies KernelJob);
    };
    const next = this.replies.start(t, inputs, send, rootFailure);
    return {
      next: async (): Promise<ThreadChunk> => {
        const { reply, thread } = await next();
        const slots = jobSlots.get(thread)!;
        return threadChunk(reply, slots.data[reply.slot].subarray(0, reply.length), () => {
          Atomics.store(slots.control, reply.slot, 0);
          Atomics.notify(slots.control, reply.slot);
        });
      },
    };
  }

  cancel(): void {
    const last = this.replies.cancel();
    for (const thread of this.threads) {
      Atomics.store(thread.cancelled, 0, last);
      // A thread waiting for a slot wakes and sees it.
      if (thread.slots) for (const slot of [0, 1]) Atomics.notify(thread.slots.control, slot);
    }
  }

  /** Stops the threads (a job under way is abandoned). */
  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.worker.terminate()));
  }
}
