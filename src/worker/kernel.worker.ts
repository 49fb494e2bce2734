/**
 * A browser kernel worker (a module worker that the merge worker starts, kernel-threads.ts): tensors'
 * kernel merges (the chunk loop of src/engine/kernel-protocol.ts) from its own reads of the models'
 * Blobs, into its own kernel arena. Each produced chunk is copied into an output buffer that is
 * transferred to the merge worker, which writes it and transfers it back for the next chunk: at most
 * two are out at a time, and buffers are only allocated when a chunk outgrows them.
 */
import { Abandoned, errorReply, ReadFailure, runKernelJob } from '../engine/kernel-protocol';
import { type ByteSource, readInto } from '../formats/byte-source';
import { loadKernels } from '../kernels/wasm';
import { chunkedByteSource } from '../store/library';
import type { BrowserKernelJob, KernelWorkerMessage, KernelWorkerReply } from './kernel-threads';

const scope = self as unknown as {
  postMessage(message: KernelWorkerReply, transfer: Transferable[]): void;
  onmessage: ((e: MessageEvent<KernelWorkerMessage>) => void) | null;
};

const arena = loadKernels('auto');
/** Jobs with ids up to this are abandoned. */
let cancelledUpTo = 0;
/** Output buffers back from the merge worker, and how many are still there. */
const pool: ArrayBuffer[] = [];
let outstanding = 0;
const OUTSTANDING_MAX = 2;
let wake: (() => void) | null = null;

function wakeUp(): void {
  const w = wake;
  wake = null;
  w?.();
}

/** An output buffer of at least `bytes`, from the pool where one is large enough. */
function outputBuffer(bytes: number): ArrayBuffer {
  const at = pool.findIndex((b) => b.byteLength >= bytes);
  if (at >= 0) return pool.splice(at, 1)[0];
  // Too small for this tensor's chunks: dropped, the larger one takes its place.
  pool.pop();
  return new ArrayBuffer(Math.max(16, bytes));
}

async function runJob(job: BrowserKernelJob): Promise<void> {
  const check = () => {
    if (job.id <= cancelledUpTo) throw new Abandoned();
  };
  if (!arena) throw new Error('the WebAssembly SIMD kernels do not load in this worker');
  const sources: ByteSource[] = job.inputs.map((input) =>
    chunkedByteSource(input.blobs.chunks, input.blobs.chunkBytes, input.name),
  );
  await runKernelJob(arena, job, {
    check,
    read: async (i, position, target) => {
      try {
        await readInto(sources[i], job.inputs[i].offset + position, target);
      } catch (e) {
        throw new ReadFailure(`${job.inputs[i].name}: reading failed (${(e as Error).message})`, i);
      }
    },
    deliver: async (produced, inputBytes, nonFinite) => {
      while (outstanding >= OUTSTANDING_MAX) {
        check();
        await new Promise<void>((done) => {
          wake = done;
        });
      }
      check();
      const buffer = outputBuffer(produced.byteLength);
      new Uint8Array(buffer).set(produced);
      outstanding++;
      scope.postMessage(
        { id: job.id, kind: 'chunk', buffer, length: produced.byteLength, inputBytes, nonFinite },
        [buffer],
      );
    },
  });
}

let queue: Promise<void> = Promise.resolve();
scope.onmessage = (e) => {
  const message = e.data;
  if (message.type === 'cancel') {
    cancelledUpTo = Math.max(cancelledUpTo, message.upTo);
    // The abandoned jobs' buffers are not coming back.
    outstanding = 0;
    wakeUp();
  } else if (message.type === 'recycle') {
    pool.push(message.buffer);
    outstanding = Math.max(0, outstanding - 1);
    wakeUp();
  } else {
    const { job } = message;
    queue = queue.then(() =>
      runJob(job).catch((error: Error) => {
        const reply = errorReply(job.id, error);
        if (reply) scope.postMessage(reply, []);
      }),
    );
  }
};
