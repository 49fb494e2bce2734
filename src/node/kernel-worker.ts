/**
 * A kernel thread (worker_threads; kernel-threads.ts starts it): tensors' kernel merges (the chunk
 * loop of src/engine/kernel-protocol.ts) from positioned reads of the model files through the
 * process's open descriptors, into its own kernel arena; each produced chunk is copied into one of
 * two shared output slots that the engine's thread writes from. Jobs run one after another, in
 * arrival order.
 */
import { read } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { Abandoned, type EachChunk, errorReply, ReadFailure, runKernelJob } from '../engine/kernel-protocol';
import type { RawChunkMerge } from '../kernels/fused';
import { loadKernels } from '../kernels/wasm';
import type { MagnitudeRangeSelector, SelectionCounts } from '../methods/rank-select';
import {
  EXCHANGE_CHUNK_FLAGS,
  EXCHANGE_FAILED,
  EXCHANGE_REGION_WORDS,
  type KernelJob,
  type SlotSet,
  type StatisticsExchange,
  type WorkerReply,
} from './kernel-threads';

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
    splitStatistics: (kernel, mine, each, elementsOf) => {
      const selectors = kernel.splitSelectors?.() ?? null;
      if (!job.exchange || !selectors)
        throw new Error(`tensor ${job.spec.tensorName} has statistics passes that do not split`);
      return splitStatistics(job, job.exchange, selectors, kernel, mine, each, elementsOf, check);
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Split statistics (ThreadTensor.splitStatistics): every thread of the tensor runs this on its own
// chunks, in step with the others through the shared exchange.

/** A thread waiting for the others wakes this often (ms) to check for a cancel or a failure. */
const EXCHANGE_WAIT_MS = 50;

class ExchangeFailed extends Error {
  override name = EXCHANGE_FAILED;
}

/**
 * Pass 0 (and pass 1 where a cut needs it) of this thread's chunks, the counts exchanged and
 * summed; returns what sets the tie counts before each chunk of the output pass: the chunk's own
 * ties are counted and published, then those of every chunk before it are waited for and summed.
 */
async function splitStatistics(
  job: KernelJob,
  exchange: StatisticsExchange,
  selectors: (MagnitudeRangeSelector | null)[],
  kernel: RawChunkMerge,
  mine: number[],
  each: EachChunk,
  elementsOf: (k: number) => number,
  check: () => void,
): Promise<(set: number, k: number) => void> {
  const control = new Int32Array(exchange.control);
  const ties = new Float64Array(exchange.ties);
  const counts = new Uint32Array(exchange.counts);
  const startOf = (k: number) => k * job.rowsPerChunk * job.rowLength;
  const models = exchange.models;
  const region = (thread: number, m: number) =>
    counts.subarray(
      (thread * models + m) * EXCHANGE_REGION_WORDS,
      (thread * models + m + 1) * EXCHANGE_REGION_WORDS,
    );
  const HIGH = 0;
  const WINDOWS = 65536;
  const LOWS = 65536 * 17;
  const BOUNDS = 65536 * 19;
  const waitFor = (index: number, done: () => boolean) => {
    while (!done()) {
      check();
      if (Atomics.load(control, 2) !== 0)
        throw new ExchangeFailed('another kernel thread failed on this tensor');
      Atomics.wait(control, index, Atomics.load(control, index), EXCHANGE_WAIT_MS);
    }
  };
  const arrive = (index: number) => {
    Atomics.add(control, index, 1);
    Atomics.notify(control, index);
    waitFor(index, () => Atomics.load(control, index) >= job.step);
  };
  const counted = selectors.map((s) => s !== null && s.passes > 0);
  try {
    await each(mine, (set, k) => kernel.accumulate(0, set, startOf(k), elementsOf(k)));
    selectors.forEach((selector, m) => {
      if (!selector || !counted[m]) return;
      const own = selector.partialCounts();
      const r = region(job.first, m);
      r.set(own.high, HIGH);
      own.windows.forEach((w, c) => {
        r[BOUNDS + 2 * c] = w.start;
        r[BOUNDS + 2 * c + 1] = w.buckets;
        r.set(w.counts, WINDOWS + c * 8 * 65536);
      });
    });
    arrive(0);
    selectors.forEach((selector, m) => {
      if (!selector || !counted[m]) return;
      const cuts = selector.partialCounts().windows.length;
      const parts: SelectionCounts[] = [];
      for (let t = 0; t < job.step; t++) {
        const r = region(t, m);
        parts.push({
          high: r.subarray(HIGH, HIGH + 65536),
          windows: Array.from({ length: cuts }, (_, c) => ({
            start: r[BOUNDS + 2 * c],
            buckets: r[BOUNDS + 2 * c + 1],
            counts: r.subarray(WINDOWS + c * 8 * 65536, WINDOWS + (c * 8 + r[BOUNDS + 2 * c + 1]) * 65536),
          })),
        });
      }
      selector.mergeCounts(parts);
    });
    if (kernel.passes > 1) {
      await each(mine, (set, k) => kernel.accumulate(1, set, startOf(k), elementsOf(k)));
      selectors.forEach((selector, m) => {
        if (!selector || !counted[m]) return;
        selector.lowCounts().forEach((low, c) => {
          if (low) region(job.first, m).set(low, LOWS + c * 65536);
        });
      });
      arrive(1);
      selectors.forEach((selector, m) => {
        if (!selector || !counted[m]) return;
        const open = selector.lowCounts();
        const parts = Array.from({ length: job.step }, (_, t) =>
          open.map((low, c) =>
            low ? region(t, m).subarray(LOWS + c * 65536, LOWS + (c + 1) * 65536) : null,
          ),
        );
        selector.mergeLow(parts);
      });
    }
  } catch (e) {
    Atomics.store(control, 2, 1);
    Atomics.notify(control, 0);
    Atomics.notify(control, 1);
    throw e;
  }
  // The output pass: sums of the ties of chunks [0, known), per model.
  let known = 0;
  const before = selectors.map(() => [0, 0] as [number, number]);
  return (set, k) => {
    try {
      const own = kernel.chunkTies?.(set, elementsOf(k)) ?? [];
      own.forEach(([upTo, below], m) => {
        ties[(k * models + m) * 2] = upTo;
        ties[(k * models + m) * 2 + 1] = below;
      });
      Atomics.store(control, EXCHANGE_CHUNK_FLAGS + k, 1);
      Atomics.notify(control, EXCHANGE_CHUNK_FLAGS + k);
      for (; known < k; known++) {
        const flag = EXCHANGE_CHUNK_FLAGS + known;
        waitFor(flag, () => Atomics.load(control, flag) !== 0);
        before.forEach((b, m) => {
          b[0] += ties[(known * models + m) * 2];
          b[1] += ties[(known * models + m) * 2 + 1];
        });
      }
      selectors.forEach((selector, m) => {
        selector?.setTiesBefore(before[m]);
      });
    } catch (e) {
      Atomics.store(control, 2, 1);
      for (let j = 0; j < control.length; j++) Atomics.notify(control, j);
      throw e;
    }
  };
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
