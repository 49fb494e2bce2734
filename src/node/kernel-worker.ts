/**
 * A kernel thread (worker_threads; kernel-threads.ts starts it): tensors' kernel merges
 * (src/kernels/fused.ts) from positioned reads of the model files through the process's open
 * descriptors, into its own kernel arena; each produced chunk is copied into one of two shared
 * output slots that the engine's thread writes from. Jobs run one after another, in arrival order.
 */
import { read } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { DTYPE_BYTES } from '../formats/dtype';
import { chunkInputSets, type RawChunkMerge, rawChunkMerge } from '../kernels/fused';
import { loadKernels } from '../kernels/wasm';
import { getMethod } from '../methods';
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

class ReadFailure extends Error {
  override name = 'ReadFailure';
  constructor(
    message: string,
    readonly input: number,
  ) {
    super(message);
  }
}

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

class Abandoned extends Error {
  override name = 'Abandoned';
}

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
  let kernel = layout(2);
  if (!kernel) throw new Error(`${job.method} has no kernel form for tensor ${job.spec.tensorName}`);
  // As in the engine's kernelTensor: a tensor with statistics passes that fits the cache keeps its chunks.
  const sets = job.split
    ? 2
    : chunkInputSets(kernel.passes, chunks, rows * rowBytes.reduce((a, b) => a + b, 0));
  if (sets !== 2) kernel = layout(sets) as NonNullable<typeof kernel>;
  const all = Array.from({ length: chunks }, (_, k) => k);
  const mine = job.split ? all.filter((k) => k % job.step === job.first) : all;
  const readChunk = async (k: number, set: number): Promise<number> => {
    const r0 = k * rowsPerChunk;
    const r1 = Math.min(rows, r0 + rowsPerChunk);
    await Promise.all(
      job.inputs.map((input, i) =>
        readFully(
          input.fd,
          kernel.input(set, i, (r1 - r0) * rowLen),
          input.offset + r0 * rowBytes[i],
          input.name,
          i,
        ),
      ),
    );
    return rowBytes.reduce((sum, b) => sum + b * (r1 - r0), 0);
  };
  // As in the engine's kernelTensor: chunk j+1 is read while chunk j computes; with a set per chunk
  // (one chunk, or a tensor the cache holds) each chunk stays in its set from the first read on.
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
  const each = async (list: number[], visit: (set: number, k: number, bytes: number) => void) => {
    if (list.length === 0) return;
    const setOf = (j: number) => (cached ? list[j] : j % 2);
    let pending = fetch(list[0], setOf(0));
    for (let j = 0; j < list.length; j++) {
      const bytes = await pending;
      check();
      if (j + 1 < list.length) pending = fetch(list[j + 1], setOf(j + 1));
      visit(setOf(j), list[j], bytes);
    }
  };
  const elementsOf = (k: number) => (Math.min(rows, (k + 1) * rowsPerChunk) - k * rowsPerChunk) * rowLen;
  let tiesBefore: ((set: number, k: number) => void) | undefined;
  if (job.split && kernel.passes > 0) {
    const exchange = job.exchange;
    const selectors = kernel.splitSelectors?.() ?? null;
    if (!exchange || !selectors) throw new Error(`tensor ${job.spec.tensorName} has statistics passes`);
    tiesBefore = await splitStatistics(job, exchange, selectors, kernel, mine, each, elementsOf, check);
  } else {
    for (let pass = 0; pass < kernel.passes; pass++) {
      await each(all, (set, k) => kernel.accumulate(pass, set, k * rowsPerChunk * rowLen, elementsOf(k)));
    }
  }
  await each(mine, (set, k, bytes) => {
    const r0 = k * rowsPerChunk;
    tiesBefore?.(set, k);
    const produced = kernel.produce(set, r0 * rowLen, elementsOf(k));
    const nonFinite = arena.countNonFinite(produced, job.outDtype);
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
      inputBytes: bytes,
      nonFinite,
    };
    port!.postMessage(reply);
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
  each: (list: number[], visit: (set: number, k: number, bytes: number) => void) => Promise<void>,
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
      if (e instanceof Abandoned) return;
      const reply: WorkerReply = {
        id: job.id,
        kind: 'error',
        message: e.message,
        causeName: e.name,
        read: e instanceof ReadFailure ? e.input : -1,
      };
      port!.postMessage(reply);
    }),
  );
});
