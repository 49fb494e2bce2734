/**
 * CPU kernel threads in the browser (engine/threads.ts): module workers running kernel.worker.ts,
 * started by the merge worker. Each reads its inputs itself from the models' Blobs (library models
 * are Blob chunks, structured-cloneable: ByteSource.blobs) and hands each encoded chunk back in a
 * transferred buffer, which goes back to it once written. The app is not cross-origin isolated
 * (README "Two CPU threads in the browser"), so there is no SharedArrayBuffer: the hand-back is a
 * transfer of ownership, no copy, and a cancel is a message the worker sees between two chunks.
 */
import {
  type KernelChunkReply,
  type KernelErrorReply,
  type KernelJobOf,
  KernelThreadReplies,
  threadChunk,
} from '../engine/kernel-protocol';
import type { CpuThreads, TensorOnThreads, ThreadChunk, ThreadTensor } from '../engine/threads';
import type { BlobChunks, ByteSource } from '../formats/byte-source';

/** A tensor's work for one kernel worker: the shared job, read from Blobs. */
export type BrowserKernelJob = KernelJobOf<{ blobs: BlobChunks; offset: number; name: string }>;

export type KernelWorkerMessage =
  | { type: 'job'; job: BrowserKernelJob }
  | { type: 'cancel'; upTo: number }
  | { type: 'recycle'; buffer: ArrayBuffer };

/** A produced chunk: `length` bytes at the start of the transferred `buffer`. */
export interface KernelWorkerChunk extends KernelChunkReply {
  readonly buffer: ArrayBuffer;
  readonly length: number;
}

export type KernelWorkerReply = KernelWorkerChunk | KernelErrorReply;

/** The most kernel threads a merge asks for. */
export const MAX_CPU_THREADS = 2;

/**
 * Kernel threads for a merge on the CPU: 1 runs the kernels on the merge worker itself; 2 starts two
 * kernel workers, and the merge worker only reads headers, orchestrates and writes. `auto` takes 2
 * where the machine has at least 4 logical cores (on fewer, the page, the merge worker and two
 * kernel workers would share them).
 */
export function cpuThreadCount(setting: 'auto' | 1 | 2 | undefined, cores: number): number {
  if (setting === 1 || setting === 2) return setting;
  return cores >= 4 ? MAX_CPU_THREADS : 1;
}

function blobsOf(source: ByteSource): BlobChunks | undefined {
  return source.blobs;
}

export class BrowserCpuThreads implements CpuThreads {
  private readonly replies: KernelThreadReplies<KernelWorkerChunk>;
  /** Tensors started on the workers so far. */
  tensorsStarted = 0;

  private constructor(private readonly workers: Worker[]) {
    this.replies = new KernelThreadReplies(workers.length);
    workers.forEach((worker, i) => {
      worker.onmessage = (e: MessageEvent<KernelWorkerReply>) => this.replies.receive(i, e.data);
      worker.onerror = (e) => {
        e.preventDefault();
        this.replies.stop(i, `a kernel worker failed: ${e.message || 'it did not start'}`);
      };
      worker.onmessageerror = () =>
        this.replies.stop(i, 'a kernel worker sent a message that could not be read');
    });
  }

  /** `count` kernel workers, each made by `createWorker` (default: kernel.worker.ts as a module worker). */
  static start(count: number, createWorker: () => Worker = defaultWorker): BrowserCpuThreads {
    return new BrowserCpuThreads(Array.from({ length: count }, () => createWorker()));
  }

  get count(): number {
    return this.workers.length;
  }

  reads(source: ByteSource): boolean {
    return blobsOf(source) !== undefined;
  }

  start(t: ThreadTensor): TensorOnThreads {
    this.tensorsStarted++;
    const inputs = t.inputs.map((input) => ({
      blobs: blobsOf(input.source) as BlobChunks,
      offset: input.offset,
      name: input.source.name,
    }));
    const next = this.replies.start(t, inputs, (thread, job: BrowserKernelJob) =>
      this.workers[thread].postMessage({ type: 'job', job } satisfies KernelWorkerMessage),
    );
    return {
      next: async (): Promise<ThreadChunk> => {
        const { reply, thread } = await next();
        const worker = this.workers[thread];
        return threadChunk(reply, new Uint8Array(reply.buffer, 0, reply.length), () => {
          worker.postMessage({ type: 'recycle', buffer: reply.buffer } satisfies KernelWorkerMessage, [
            reply.buffer,
          ]);
        });
      },
    };
  }

  cancel(): void {
    const upTo = this.replies.cancel();
    for (const worker of this.workers)
      worker.postMessage({ type: 'cancel', upTo } satisfies KernelWorkerMessage);
  }

  /** Stops the workers at once (a job under way is abandoned). */
  close(): void {
    for (const worker of this.workers) worker.terminate();
  }
}

function defaultWorker(): Worker {
  return new Worker(new URL('./kernel.worker.ts', import.meta.url), { type: 'module', name: 'l2s-kernels' });
}
