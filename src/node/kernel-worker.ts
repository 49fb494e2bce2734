/**
 * A kernel thread (worker_threads; kernel-threads.ts starts it): tensors' kernel merges (the chunk
 * loop of src/engine/kernel-protocol.ts) from positioned reads of the model files through the
 * process's open descriptors, into its own kernel arena; each produced chunk is copied into one of
 * two shared output slots that the engine's thread writes from. Jobs run one after another, in
 * arrival order.
 */
import { read } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { Abandoned, errorReply, ReadFailure, runKernelJob } from '../engine/kernel-protocol';
import { loadKernels } from '../kernels/wasm';
import type { KernelJob, SlotSet, WorkerReply } from './kernel-threads';

const port = parentPort;
if (!port) throw new Error('kernel-worker.ts runs as a worker thread');

function readFully(fd: number, target: Uint8Array, position: number, name: string, input: number) {
  return new Promise<void>((done, fail) => {
    let got = 0;
    const step = () =>
      read(fd, target, got, target.byteLength - got, position + got, (e, n) => {
        if (e) return fail(new ReadFailure(`${name}: reading failed (${e.code ?? e.message})`, input));
        if (n === 0) return fail(new ReadFailure(`${name}: file ended at ${position + got}`, input));
        got += n;
        if (got < target.byteLength) step();
        else done();
      });
    if (target.byteLength === 0) done();
    else step();
  });
}

/** Jobs with ids up to this are abandoned (kernel-threads.ts cancel). */
const cancelled = new Int32Array((workerData as { cancelled: SharedArrayBuffer }).cancelled);

const arena = loadKernels('auto');
/** The job before this one. */
let lastJob = 0;
let slots: { set: SlotSet; control: Int32Array; data: Uint8Array[]; produced: number } | undefined;

async function runJob(job: KernelJob): Promise<void> {
  const check = () => {
    if (job.id <= Atomics.load(cancelled, 0)) throw new Abandoned();
  };
  // The slots first: a later job may rely on having sent them with this one.
  if (job.slots) {
    const set = job.slots;
    slots = {
      set,
      control: new Int32Array(set.control),
      data: set.data.map((d) => new Uint8Array(d)),
      produced: 0,
    };
  }
  // After an abandoned job (a failed or cancelled run), whatever its chunks left in the slots is
  // wanted no more: the engine releases only the chunks of the jobs it still writes.
  if (lastJob !== 0 && lastJob <= Atomics.load(cancelled, 0) && slots)
    for (const slot of [0, 1]) Atomics.store(slots.control, slot, 0);
  lastJob = job.id;
  check();
  if (!arena) throw new Error('the WebAssembly SIMD kernels do not load on this thread');
  const out = slots!;
  await runKernelJob(arena, job, {
    check,
    read: (i, position, target) => {
      const input = job.inputs[i];
      return readFully(input.fd, target, input.offset + position, input.name, i);
    },
    deliver: (produced, inputBytes, nonFinite) => {
      const slot = out.produced++ & 1;
      // Wait until the engine has written what this slot held.
      while (Atomics.load(out.control, slot) !== 0) {
        check();
        // Timed: a cancel between the check and the wait must not go unseen.
        Atomics.wait(out.control, slot, 1, 50);
      }
      out.data[slot].set(produced);
      Atomics.store(out.control, slot, 1);
      const reply: WorkerReply = {
        id: job.id,
        kind: 'chunk',
        slot,
        length: produced.byteLength,
        inputBytes,
        nonFinite,
      };
      port!.postMessage(reply);
    },
  });
}

let queue: Promise<void> = Promise.resolve();
port.on('message', (job: KernelJob) => {
  queue = queue.then(() =>
    runJob(job).catch((e: Error) => {
      const reply = errorReply(job.id, e);
      if (reply) port!.postMessage(reply);
    }),
  );
});
