/**
 * The kernel threads' shared job loop (src/engine/kernel-protocol.ts), as Node's worker_threads and
 * the browser's kernel workers run it: chunks read through the platform's reads, produced in order
 * (or every step-th chunk of a split tensor), with the reference's bytes; read failures name their
 * input, a cancelled job ends quietly, and replies are consumed in order.
 */
import { describe, expect, it } from 'vitest';
import {
  Abandoned,
  errorReply,
  type KernelJobOf,
  ReadFailure,
  ReplyQueue,
  runKernelJob,
} from '../../src/engine/kernel-protocol';
import { decodeToF32, encodeFromF32, type FloatDType } from '../../src/formats/dtype';
import { type KernelArena, loadKernels } from '../../src/kernels/wasm';
import { getMethod } from '../../src/methods';
import type { ResolvedParams } from '../../src/methods/types';
import { cpuThreadCount } from '../../src/worker/kernel-threads';

const arena = loadKernels('auto') as KernelArena;

function values(n: number, seed: number, base?: Float32Array): Float32Array {
  let x = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = (base ? base[i] : 0) + (x / 4294967296 - 0.5) * (base ? 0.01 : 0.2);
  }
  return out;
}

const ROWS = 23;
const ROW = 37;
const base = values(ROWS * ROW, 1);
const model = values(ROWS * ROW, 2, base);
/** Stored as the engine orders them: the model, then the base. */
const stored = [encodeFromF32(model, 'BF16'), encodeFromF32(base, 'BF16')];

function jobOf(
  method: string,
  params: ResolvedParams,
  split = false,
  first = 0,
  step = 1,
): KernelJobOf<number> {
  return {
    id: 1,
    method,
    spec: {
      tensorName: 'model.layers.0.mlp.down_proj.weight',
      shape: [ROWS, ROW],
      tensors: [
        { model: 'reasoner', params },
        { model: 'base', params: {} },
      ],
      baseIndex: 1,
      params: { lambda: 1, normalize: false, int8_mask: false, rescale: true },
      seed: 0,
    },
    inputs: [0, 1],
    inputDtypes: ['BF16', 'BF16'] as FloatDType[],
    outDtype: 'BF16',
    rows: ROWS,
    rowLength: ROW,
    rowsPerChunk: 4,
    split,
    first,
    step,
  };
}

function reference(job: KernelJobOf<number>): Uint8Array {
  const merged = getMethod(job.method).merge({
    ...job.spec,
    tensors: job.spec.tensors.map((t, i) => ({ ...t, values: decodeToF32(stored[i], 'BF16') })),
  });
  return encodeFromF32(merged, 'BF16');
}

/** Runs the job on in-memory inputs; returns the delivered chunks and the reads made. */
async function run(job: KernelJobOf<number>, failRead?: number) {
  const chunks: Uint8Array[] = [];
  const reads: { input: number; position: number; length: number }[] = [];
  await runKernelJob(arena, job, {
    check: () => {},
    read: async (input, position, target) => {
      if (input === failRead) throw new ReadFailure('m/model.safetensors: file ended at 10', input);
      reads.push({ input, position, length: target.byteLength });
      target.set(stored[input].subarray(position, position + target.byteLength));
    },
    deliver: (produced, inputBytes, nonFinite) => {
      expect(inputBytes).toBe(2 * (produced.byteLength / 2) * 2);
      expect(nonFinite).toBe(0);
      chunks.push(produced.slice());
    },
  });
  return { chunks, reads };
}

describe('runKernelJob', () => {
  it('produces every chunk of a tensor with statistics passes in order, to the reference bytes', async () => {
    const job = jobOf('ties', { weight: 1, density: 0.3 });
    const { chunks, reads } = await run(job);
    expect(chunks.length).toBe(Math.ceil(ROWS / 4));
    expect(Buffer.concat(chunks).equals(Buffer.from(reference(job)))).toBe(true);
    // A tensor this small is kept (fused.ts chunkInputSets): each chunk of each input read once for
    // all of TIES' passes.
    expect(reads.length).toBe(2 * chunks.length);
    expect(new Set(reads.map((r) => `${r.input}:${r.position}`)).size).toBe(reads.length);
  });

  it('produces every step-th chunk of a split tensor and reads only those', async () => {
    const job = jobOf('task_arithmetic', { weight: 0.7 });
    const whole = reference(job);
    const chunkBytes = 4 * ROW * 2;
    // One after the other: the two share this test's kernel arena (each thread has its own).
    const parts = [];
    for (const first of [0, 1])
      parts.push(await run(jobOf('task_arithmetic', { weight: 0.7 }, true, first, 2)));
    parts.forEach(({ chunks, reads }, first) => {
      const mine = Array.from({ length: Math.ceil(ROWS / 4) }, (_, k) => k).filter((k) => k % 2 === first);
      expect(chunks.length).toBe(mine.length);
      chunks.forEach((chunk, j) => {
        const k = mine[j];
        expect(
          Buffer.from(chunk).equals(
            Buffer.from(whole.subarray(k * chunkBytes, k * chunkBytes + chunk.byteLength)),
          ),
        ).toBe(true);
      });
      expect(new Set(reads.map((r) => r.position / (4 * ROW * 2)))).toEqual(new Set(mine));
    });
  });

  it('refuses to split a tensor with statistics passes on a thread that does not split them', async () => {
    await expect(run(jobOf('ties', { weight: 1, density: 0.3 }, true, 0, 2))).rejects.toThrow(
      /has statistics passes/,
    );
  });

  it("runs a split tensor's statistics through io.splitStatistics, then sets each chunk's state before its output", async () => {
    const job = jobOf('ties', { weight: 1, density: 0.3 }, true, 0, 1);
    const chunks: Uint8Array[] = [];
    const reads: number[] = [];
    const events: string[] = [];
    await runKernelJob(arena, job, {
      check: () => {},
      read: async (input, position, target) => {
        reads.push(position);
        target.set(stored[input].subarray(position, position + target.byteLength));
      },
      deliver: (produced) => {
        events.push('deliver');
        chunks.push(produced.slice());
      },
      // One thread of one: its own counts are the sums, so the passes over its chunks are the whole.
      splitStatistics: async (kernel, mine, each, elementsOf) => {
        expect(mine).toEqual(Array.from({ length: Math.ceil(ROWS / 4) }, (_, k) => k));
        for (let pass = 0; pass < kernel.passes; pass++)
          await each(mine, (set, k) => kernel.accumulate(pass, set, k * 4 * ROW, elementsOf(k)));
        return (_set, k) => events.push(`before ${k}`);
      },
    });
    expect(Buffer.concat(chunks).equals(Buffer.from(reference(job)))).toBe(true);
    expect(events).toEqual(chunks.flatMap((_, k) => [`before ${k}`, 'deliver']));
    // Split: two sets, no cache, so each chunk is read again for every pass.
    expect(reads.length).toBeGreaterThan(2 * chunks.length);
  });

  it('passes on a read failure with its input, and a cancel ends the job with no reply', async () => {
    const failure = await run(jobOf('task_arithmetic', { weight: 0.7 }), 1).catch((e: Error) => e);
    expect(failure).toBeInstanceOf(ReadFailure);
    expect(errorReply(7, failure as Error)).toEqual({
      id: 7,
      kind: 'error',
      message: 'm/model.safetensors: file ended at 10',
      causeName: 'ReadFailure',
      read: 1,
    });
    let delivered = 0;
    const cancelled = await runKernelJob(arena, jobOf('task_arithmetic', { weight: 0.7 }), {
      check: () => {
        if (delivered >= 2) throw new Abandoned();
      },
      read: async (input, position, target) =>
        target.set(stored[input].subarray(position, position + target.byteLength)),
      deliver: () => {
        delivered++;
      },
    }).catch((e: Error) => e);
    expect(cancelled).toBeInstanceOf(Abandoned);
    expect(delivered).toBe(2);
    expect(errorReply(7, cancelled as Error)).toBeNull();
    expect(errorReply(7, new RangeError('bad'))).toMatchObject({ causeName: 'RangeError', read: -1 });
  });
});

describe('ReplyQueue', () => {
  it('hands replies out in order, to takers that came first, and the error to every later take', async () => {
    const queue = new ReplyQueue<{ kind: string; n: number }>();
    const early = queue.take();
    queue.push({ kind: 'chunk', n: 1 });
    queue.push({ kind: 'chunk', n: 2 });
    expect((await early).n).toBe(1);
    expect((await queue.take()).n).toBe(2);
    queue.push({ kind: 'error', n: 3 });
    expect((await queue.take()).kind).toBe('error');
    expect((await queue.take()).kind).toBe('error');
  });
});

describe('cpuThreadCount', () => {
  it('takes the setting, and for auto 2 threads only on 4 or more cores', () => {
    expect(cpuThreadCount(1, 16)).toBe(1);
    expect(cpuThreadCount(2, 2)).toBe(2);
    expect(cpuThreadCount('auto', 2)).toBe(1);
    expect(cpuThreadCount(undefined, 3)).toBe(1);
    expect(cpuThreadCount('auto', 4)).toBe(2);
    expect(cpuThreadCount(undefined, 32)).toBe(2);
  });
});
