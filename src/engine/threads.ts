/**
 * CPU kernel threads: the engine hands a tensor's kernel work (src/kernels/fused.ts) to threads that
 * read their inputs themselves, and only writes what they hand back. The platform supplies them
 * (Node: src/node/kernel-threads.ts on worker_threads); without them the engine runs the kernels on
 * its own thread. Either way the bytes written are the same.
 */
import type { ByteSource } from '../formats/byte-source';
import type { FloatDType } from '../formats/dtype';
import type { TensorMergeSpec } from '../methods/types';

/** One input of a tensor as the threads read it: `source` from byte `offset` on. */
export interface ThreadInput {
  readonly source: ByteSource;
  readonly offset: number;
}

/** A tensor's kernel merge, chunk by chunk of whole rows (the chunks of `kernelTensor`). */
export interface ThreadTensor {
  /** The recipe's merge method name (getMethod). */
  readonly method: string;
  readonly spec: TensorMergeSpec;
  readonly inputs: readonly ThreadInput[];
  readonly inputDtypes: readonly FloatDType[];
  readonly outDtype: FloatDType;
  readonly workDtype?: FloatDType;
  readonly rows: number;
  readonly rowLength: number;
  readonly rowsPerChunk: number;
  /**
   * true: chunk k is produced on thread k mod count (the chunks are independent, fused.ts
   * chunksIndependent, or `splitStatistics`); false: one thread runs the statistics passes and
   * produces every chunk.
   */
  readonly split: boolean;
  /**
   * With `split`, for a tensor with statistics passes (TIES' and breadcrumbs' exact cuts, only on
   * threads whose `splitsStatistics` is true): each thread counts its own chunks in each pass, the
   * threads sum their counts (integers: the same sums in any order) and resolve the same cuts, and
   * each chunk's ties at the cuts are counted on its thread and summed over the chunks before it,
   * so that every chunk keeps exactly the lowest-index ties, whichever thread masks it.
   */
  readonly splitStatistics?: boolean;
}

/** One chunk's encoded output, in a thread's buffer until `release`. */
export interface ThreadChunk {
  readonly bytes: Uint8Array;
  /** Input bytes read for it. */
  readonly inputBytes: number;
  /** Its values that are Inf or NaN (dtype.ts countNonFinite), counted on the thread. */
  readonly nonFinite: number;
  /** The buffer may be reused: call once the bytes are written. */
  release(): void;
}

/** A tensor under way on the threads: its chunks' outputs, in order. */
export interface TensorOnThreads {
  next(): Promise<ThreadChunk>;
}

/** What failed on a thread; the engine names the files and the tensor. */
export class ThreadTaskError extends Error {
  override name = 'ThreadTaskError';
  constructor(
    message: string,
    /** 'read': reading input `input` failed; 'method': the method or kernels failed. */
    readonly kind: 'read' | 'method',
    readonly input: number,
    /** The error's own name on the thread (a MergeMethodError, a RangeError). */
    readonly causeName: string,
  ) {
    super(message);
  }
}

export interface CpuThreads {
  readonly count: number;
  /** Whether these threads split a tensor's statistics passes (ThreadTensor.splitStatistics). */
  readonly splitsStatistics?: boolean;
  /** Whether the threads can read this source themselves (else the tensor stays on the engine's thread). */
  reads(source: ByteSource): boolean;
  /** Queues a tensor: each thread works through its queue in order, so start tensors in write order. */
  start(tensor: ThreadTensor): TensorOnThreads;
  /** Abandons every tensor started so far (a failed or cancelled run); the threads stay usable. */
  cancel(): void;
}
