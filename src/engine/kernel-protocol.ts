/**
 * What a kernel thread does with a tensor (threads.ts), shared by Node's worker_threads
 * (src/node/kernel-worker.ts) and the browser's kernel workers (src/worker/kernel.worker.ts): the job
 * a thread is sent, its replies, and the chunk loop. The platform supplies the positioned reads and
 * the hand-back of each produced chunk (a shared slot in Node, a transferred buffer in the browser).
 */
import { DTYPE_BYTES } from '../formats/dtype';
import { chunkInputSets, type RawChunkMerge, rawChunkMerge } from '../kernels/fused';
import type { KernelArena } from '../kernels/wasm';
import { getMethod } from '../methods';
import { type ThreadChunk, ThreadTaskError, type ThreadTensor } from './threads';

/**
 * A tensor's work for one thread: the ThreadTensor's facts (its inputs as `Input`, where the thread
 * reads each one: a descriptor, Blobs) and which of its chunks this thread produces.
 */
export interface KernelJobOf<Input>
  extends Pick<
    ThreadTensor,
    | 'method'
    | 'spec'
    | 'inputDtypes'
    | 'outDtype'
    | 'workDtype'
    | 'rows'
    | 'rowLength'
    | 'rowsPerChunk'
    | 'split'
  > {
  readonly id: number;
  readonly inputs: readonly Input[];
  /** Produce chunks k with k mod step === first (no statistics passes); else every chunk. */
  readonly first: number;
  readonly step: number;
}

/** The job for thread `first` of the `step` threads a tensor runs on, reading `inputs`. */
export function kernelJobOf<Input>(
  id: number,
  t: ThreadTensor,
  inputs: readonly Input[],
  first: number,
  step: number,
): KernelJobOf<Input> {
  return {
    id,
    method: t.method,
    spec: t.spec,
    inputs,
    inputDtypes: t.inputDtypes,
    outDtype: t.outDtype,
    workDtype: t.workDtype,
    rows: t.rows,
    rowLength: t.rowLength,
    rowsPerChunk: t.rowsPerChunk,
    split: t.split,
    first,
    step,
  };
}

/** A thread's error reply: `read` is the input whose read failed, or -1. */
export interface KernelErrorReply {
  readonly id: number;
  readonly kind: 'error';
  readonly message: string;
  readonly causeName: string;
  readonly read: number;
}

/** Reading input `input` failed (the message names the file). */
export class ReadFailure extends Error {
  override name = 'ReadFailure';
  constructor(
    message: string,
    readonly input: number,
  ) {
    super(message);
  }
}

/** The job was cancelled (threads.ts cancel): it ends without a reply. */
export class Abandoned extends Error {
  override name = 'Abandoned';
}

/** Visits chunks `list` in order, each in the input set it was read into, with its input bytes. */
export type EachChunk = (
  list: number[],
  visit: (set: number, k: number, bytes: number) => Promise<void> | void,
) => Promise<void>;

/** What the platform does for the chunk loop. */
export interface KernelJobIo {
  /** Exactly `target.byteLength` bytes of input `input` from `position` (throws ReadFailure). */
  read(input: number, position: number, target: Uint8Array): Promise<void>;
  /** Hands back one produced chunk; `produced` is the arena's and is reused after this returns. */
  deliver(produced: Uint8Array, inputBytes: number, nonFinite: number): Promise<void> | void;
  /** Throws Abandoned once the job is cancelled. */
  check(): void;
  /**
   * ThreadTensor.splitStatistics, on threads that split statistics (CpuThreads.splitsStatistics):
   * runs the statistics passes over this thread's chunks `mine` in step with the tensor's other
   * threads, and returns what sets the kernel's state (the ties before chunk k) right before chunk k
   * of the output pass is produced.
   */
  splitStatistics?(
    kernel: RawChunkMerge,
    mine: number[],
    each: EachChunk,
    elementsOf: (k: number) => number,
  ): Promise<(set: number, k: number) => void>;
}

/**
 * Runs one job: its statistics passes over every chunk (or, split, over its own chunks through
 * `io.splitStatistics`), then its own chunks' outputs, each handed to `io.deliver` in order. As in
 * the engine's kernelTensor, chunk j+1 is read while chunk j computes, and a tensor of one chunk, or
 * one with statistics passes whose inputs fit CACHED_INPUT_BYTES (fused.ts chunkInputSets), keeps
 * its chunks: each is read once for all its passes.
 */
export async function runKernelJob<Input>(
  arena: KernelArena,
  job: KernelJobOf<Input>,
  io: KernelJobIo,
): Promise<void> {
  io.check();
  const { rows, rowLength: rowLen, rowsPerChunk } = job;
  const rowBytes = job.inputDtypes.map((dtype) => rowLen * DTYPE_BYTES[dtype]);
  const chunks = Math.ceil(rows / rowsPerChunk);
  const layout = (inputSets: number) =>
    rawChunkMerge(arena, getMethod(job.method), {
      spec: job.spec,
      inputDtypes: job.inputDtypes,
      outDtype: job.outDtype,
      workDtype: job.workDtype,
      chunkElements: Math.max(1, Math.min(rows, rowsPerChunk) * rowLen),
      inputSets,
    });
  let laid = layout(2);
  if (!laid) throw new Error(`${job.method} has no kernel form for tensor ${job.spec.tensorName}`);
  // A split tensor's thread reads only its own chunks once per pass: the cache is for a whole tensor.
  const sets = job.split
    ? 2
    : chunkInputSets(laid.passes, chunks, rows * rowBytes.reduce((a, b) => a + b, 0));
  if (sets !== 2) laid = layout(sets) as RawChunkMerge;
  const kernel = laid;
  const all = Array.from({ length: chunks }, (_, k) => k);
  const mine = job.split ? all.filter((k) => k % job.step === job.first) : all;
  const readChunk = async (k: number, set: number): Promise<number> => {
    const r0 = k * rowsPerChunk;
    const r1 = Math.min(rows, r0 + rowsPerChunk);
    await Promise.all(
      job.inputs.map((_, i) => io.read(i, r0 * rowBytes[i], kernel.input(set, i, (r1 - r0) * rowLen))),
    );
    return rowBytes.reduce((sum, b) => sum + b * (r1 - r0), 0);
  };
  // With a set per chunk (one chunk, or a tensor the cache holds) each chunk stays in its set from
  // the first read on; else chunk j+1 is read into the other set while chunk j computes.
  const cached = chunks <= sets;
  const kept = new Map<number, Promise<number>>();
  const fetch = (k: number, set: number): Promise<number> => {
    let read = cached ? kept.get(k) : undefined;
    if (!read) {
      read = readChunk(k, set);
      read.catch(() => {});
      if (cached) kept.set(k, read);
    }
    return read;
  };
  const each: EachChunk = async (list, visit) => {
    if (list.length === 0) return;
    const setOf = (j: number) => (cached ? list[j] : j % 2);
    let pending = fetch(list[0], setOf(0));
    for (let j = 0; j < list.length; j++) {
      const bytes = await pending;
      io.check();
      if (j + 1 < list.length) pending = fetch(list[j + 1], setOf(j + 1));
      await visit(setOf(j), list[j], bytes);
    }
  };
  const elementsOf = (k: number) => (Math.min(rows, (k + 1) * rowsPerChunk) - k * rowsPerChunk) * rowLen;
  let tiesBefore: ((set: number, k: number) => void) | undefined;
  if (job.split && kernel.passes > 0) {
    if (!io.splitStatistics) throw new Error(`tensor ${job.spec.tensorName} has statistics passes`);
    tiesBefore = await io.splitStatistics(kernel, mine, each, elementsOf);
  } else {
    for (let pass = 0; pass < kernel.passes; pass++) {
      await each(all, (set, k) => kernel.accumulate(pass, set, k * rowsPerChunk * rowLen, elementsOf(k)));
    }
  }
  await each(mine, (set, k, bytes) => {
    tiesBefore?.(set, k);
    const produced = kernel.produce(set, k * rowsPerChunk * rowLen, elementsOf(k));
    return io.deliver(produced, bytes, arena.countNonFinite(produced, job.outDtype));
  });
}

/** The reply for a job that failed with `e` (none for an abandoned one). */
export function errorReply(id: number, e: Error): KernelErrorReply | null {
  if (e instanceof Abandoned) return null;
  return {
    id,
    kind: 'error',
    message: e.message,
    causeName: e.name,
    read: e instanceof ReadFailure ? e.input : -1,
  };
}

/** A thread's replies for one job, consumed in order; after an error, every take gets the error. */
export class ReplyQueue<Reply extends { kind: string }> {
  private readonly items: Reply[] = [];
  private readonly waiting: ((r: Reply) => void)[] = [];
  failure?: Extract<Reply, KernelErrorReply>;

  push(r: Reply): void {
    if (r.kind === 'error') this.failure = r as Extract<Reply, KernelErrorReply>;
    const w = this.waiting.shift();
    if (w) w(r);
    else this.items.push(r);
  }

  take(): Promise<Reply> {
    const r = this.items.shift() ?? (this.items.length === 0 && this.failure ? this.failure : undefined);
    if (r) return Promise.resolve(r);
    return new Promise((done) => this.waiting.push(done));
  }
}

/** A thread's reply for one produced chunk; the platform adds where the bytes are. */
export interface KernelChunkReply {
  readonly id: number;
  readonly kind: 'chunk';
  readonly inputBytes: number;
  readonly nonFinite: number;
}

/** How many chunks of `rowsPerChunk` rows tensor `t` has. */
export function chunkCount(t: ThreadTensor): number {
  return t.rows === 0 ? 0 : Math.ceil(t.rows / t.rowsPerChunk);
}

function threadError(id: number, message: string, causeName: string): KernelErrorReply {
  return { id, kind: 'error', message, causeName, read: -1 };
}

/**
 * The engine's side of a set of kernel threads (Node's worker_threads, the browser's kernel
 * workers): which threads a tensor runs on, each thread's reply queue per job, why a thread
 * stopped, and the chunks handed back in order. The platform starts the threads, sends the jobs
 * and says where a chunk's bytes are.
 */
export class KernelThreadReplies<Chunk extends KernelChunkReply> {
  private readonly threads: { jobs: Map<number, ReplyQueue<Chunk | KernelErrorReply>>; stopped?: string }[];
  private nextId = 1;
  private owner = 0;

  constructor(readonly count: number) {
    this.threads = Array.from({ length: count }, () => ({ jobs: new Map() }));
  }

  /** How many threads tensor `t` runs on: all of them when it is split, else one. */
  threadsFor(t: ThreadTensor): number {
    return t.split ? this.count : 1;
  }

  /** A reply from thread `thread`. */
  receive(thread: number, reply: Chunk | KernelErrorReply): void {
    this.threads[thread].jobs.get(reply.id)?.push(reply);
  }

  /** Thread `thread` failed or exited: its jobs under way, and every later one, fail with `why`. */
  stop(thread: number, why: string): void {
    const t = this.threads[thread];
    t.stopped ??= why;
    for (const [id, q] of t.jobs) q.push(threadError(id, t.stopped, 'KernelThreadError'));
  }

  /**
   * Starts tensor `t`: on every thread when it is split, else on the next thread in turn. `send`
   * posts thread `thread`'s job (kernelJobOf with `inputs`), and is not called for a thread that has
   * stopped; `failureOf` may replace a thread's error by the one that caused it. Returns the chunks'
   * replies in chunk order (chunk k from the k mod n-th of the tensor's n threads), with the thread
   * each came from; an error reply is thrown as a ThreadTaskError.
   */
  start<Input>(
    t: ThreadTensor,
    inputs: readonly Input[],
    send: (thread: number, job: KernelJobOf<Input>) => void,
    failureOf?: (
      failure: KernelErrorReply,
      failures: () => (KernelErrorReply | undefined)[],
    ) => Promise<KernelErrorReply>,
  ): () => Promise<{ reply: Chunk; thread: number }> {
    const id = this.nextId++;
    const chunks = chunkCount(t);
    const users = t.split ? this.threads.map((_, i) => i) : [this.owner++ % this.count];
    const queues = users.map((index, first) => {
      const thread = this.threads[index];
      const queue = new ReplyQueue<Chunk | KernelErrorReply>();
      thread.jobs.set(id, queue);
      if (thread.stopped) queue.push(threadError(id, thread.stopped, 'KernelThreadError'));
      else send(index, kernelJobOf(id, t, inputs, first, users.length));
      return queue;
    });
    const done = () => {
      for (const i of users) this.threads[i].jobs.delete(id);
    };
    let k = 0;
    return async () => {
      if (k >= chunks) throw new RangeError(`tensor ${t.spec.tensorName} has ${chunks} chunks`);
      const user = k % users.length;
      k++;
      const reply = await queues[user].take();
      if (reply.kind === 'error') {
        const failure = failureOf ? await failureOf(reply, () => queues.map((q) => q.failure)) : reply;
        done();
        throw new ThreadTaskError(
          failure.message,
          failure.read >= 0 ? 'read' : 'method',
          failure.read,
          failure.causeName,
        );
      }
      if (k === chunks) done();
      return { reply: reply as Chunk, thread: users[user] };
    };
  }

  /**
   * Abandons every job started so far, each failing with an AbortError; returns the last job's id
   * (the platform tells the threads to drop jobs up to it).
   */
  cancel(): number {
    for (const thread of this.threads) {
      for (const [id, q] of thread.jobs) q.push(threadError(id, 'the tensor was abandoned', 'AbortError'));
      thread.jobs.clear();
    }
    return this.nextId - 1;
  }
}

/** A ThreadChunk of `bytes` from a chunk reply; `release` frees the thread's buffer. */
export function threadChunk(reply: KernelChunkReply, bytes: Uint8Array, release: () => void): ThreadChunk {
  return { bytes, inputBytes: reply.inputBytes, nonFinite: reply.nonFinite, release };
}
