/**
 * CPU kernel threads in the browser (engine/threads.ts): module workers running kernel.worker.ts,
 * started by the merge worker. Each reads its inputs itself from the models' Blobs (library models
 * are Blob chunks, structured-cloneable: ByteSource.blobs) and hands each encoded chunk back in a
 * transferred buffer, which goes back to it once written. The app is not cross-origin isolated
 * (README "Two CPU threads in the browser"), so there is no SharedArrayBuffer: the hand-back is a
 * transfer of ownership, no copy, and a cancel is a message the worker sees between two chunks.
 */
import { type KernelErrorReply, type KernelJobOf, kernelJobOf, ReplyQueue } from '../engine/kernel-protocol';
import {
  type CpuThreads,
  type TensorOnThreads,
  type ThreadChunk,
  ThreadTaskError,
  type ThreadTensor,
} from '../engine/threads';
import type { BlobChunks, ByteSource } from '../formats/byte-source';

/** A tensor's work for one kernel worker: the shared job, read from Blobs. */
export type BrowserKernelJob = KernelJobOf<{ blobs: BlobChunks; offset: number; name: string }>;

export type KernelWorkerMessage =
  | { type: 'job'; job: BrowserKernelJob }
  | { type: 'cancel'; upTo: number }
  | { type: 'recycle'; buffer: ArrayBuffer };

export type KernelWorkerReply =
  | { id: number; kind: 'chunk'; buffer: ArrayBuffer; length: number; inputBytes: number; nonFinite: number }
  | KernelErrorReply;

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

interface Thread {
  readonly worker: Worker;
  readonly jobs: Map<number, ReplyQueue<KernelWorkerReply>>;
  stopped?: string;
}

function blobsOf(source: ByteSource): BlobChunks | undefined {
  return source.blobs;
}

export class BrowserCpuThreads implements CpuThreads {
  private nextId = 1;
  private owner = 0;
  /** Tensors started on the workers so far. */
  tensorsStarted = 0;

  private constructor(private readonly threads: Thread[]) {}

  /** `count` kernel workers, each made by `createWorker` (default: kernel.worker.ts as a module worker). */
  static start(count: number, createWorker: () => Worker = defaultWorker): BrowserCpuThreads {
    const threads: Thread[] = [];
    for (let i = 0; i < count; i++) {
      const worker = createWorker();
      const thread: Thread = { worker, jobs: new Map() };
      worker.onmessage = (e: MessageEvent<KernelWorkerReply>) => thread.jobs.get(e.data.id)?.push(e.data);
      const stop = (why: string) => {
        thread.stopped ??= why;
        for (const [id, q] of thread.jobs)
          q.push({ id, kind: 'error', message: thread.stopped, causeName: 'KernelThreadError', read: -1 });
      };
      worker.onerror = (e) => {
        e.preventDefault();
        stop(`a kernel worker failed: ${e.message || 'it did not start'}`);
      };
      worker.onmessageerror = () => stop('a kernel worker sent a message that could not be read');
      threads.push(thread);
    }
    return new BrowserCpuThreads(threads);
  }

  get count(): number {
    return this.threads.length;
  }

  reads(source: ByteSource): boolean {
    return blobsOf(source) !== undefined;
  }

  start(t: ThreadTensor): TensorOnThreads {
    const id = this.nextId++;
    this.tensorsStarted++;
    const inputs = t.inputs.map((input) => ({
      blobs: blobsOf(input.source) as BlobChunks,
      offset: input.offset,
      name: input.source.name,
    }));
    const chunks = t.rows === 0 ? 0 : Math.ceil(t.rows / t.rowsPerChunk);
    const users = t.split ? this.threads.map((_, i) => i) : [this.owner++ % this.threads.length];
    const queues = new Map<number, ReplyQueue<KernelWorkerReply>>();
    users.forEach((index, first) => {
      const thread = this.threads[index];
      const queue = new ReplyQueue<KernelWorkerReply>();
      thread.jobs.set(id, queue);
      queues.set(index, queue);
      const job: BrowserKernelJob = kernelJobOf(id, t, inputs, first, users.length);
      if (thread.stopped)
        queue.push({ id, kind: 'error', message: thread.stopped, causeName: 'KernelThreadError', read: -1 });
      else thread.worker.postMessage({ type: 'job', job } satisfies KernelWorkerMessage);
    });
    let k = 0;
    return {
      next: async (): Promise<ThreadChunk> => {
        if (k >= chunks) throw new RangeError(`tensor ${t.spec.tensorName} has ${chunks} chunks`);
        const index = users[k % users.length];
        k++;
        const reply = await queues.get(index)!.take();
        if (reply.kind === 'error') {
          for (const i of users) this.threads[i].jobs.delete(id);
          throw new ThreadTaskError(
            reply.message,
            reply.read >= 0 ? 'read' : 'method',
            reply.read,
            reply.causeName,
          );
        }
        if (k === chunks) for (const i of users) this.threads[i].jobs.delete(id);
        const worker = this.threads[index].worker;
        return {
          bytes: new Uint8Array(reply.buffer, 0, reply.length),
          inputBytes: reply.inputBytes,
          nonFinite: reply.nonFinite,
          release: () => {
            worker.postMessage({ type: 'recycle', buffer: reply.buffer } satisfies KernelWorkerMessage, [
              reply.buffer,
            ]);
          },
        };
      },
    };
  }

  cancel(): void {
    const last = this.nextId - 1;
    for (const thread of this.threads) {
      thread.worker.postMessage({ type: 'cancel', upTo: last } satisfies KernelWorkerMessage);
      for (const [id, q] of thread.jobs)
        q.push({ id, kind: 'error', message: 'the tensor was abandoned', causeName: 'AbortError', read: -1 });
      thread.jobs.clear();
    }
  }

  /** Stops the workers at once (a job under way is abandoned). */
  close(): void {
    for (const thread of this.threads) thread.worker.terminate();
  }
}

function defaultWorker(): Worker {
  return new Worker(new URL('./kernel.worker.ts', import.meta.url), { type: 'module', name: 'l2s-kernels' });
}
