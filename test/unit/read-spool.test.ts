/**
 * Fetch once (src/engine/read-spool.ts): a tensor read in several passes from a source that offers a
 * spool is read from it once, on the CPU and on the GPU, for every method family; single-pass
 * methods write nothing to a spool; spools are removed when the tensor ends, when the merge fails
 * and when it is cancelled; a spool without room says so in the log and its tensor is fetched again.
 *
 * The models are a Qwen2-shaped trio whose embedding (24576 x 64, bf16) is larger than the CPU's
 * cache across passes and its chunk (lowered to 1 MiB and 2^18 elements) and than the GPU memory budget
 * (16 MB, the least it takes; 2 MiB bindings, 9 tiles, since a streamed tile costs about as much
 * whatever its size on a software adapter), so without a spool it is read once per pass. The
 * figures of bytes read per weight byte, with and without the spool, are printed per method and
 * backend (README "Merging straight from the hub").
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { makeTinyModel, type TinyModelFiles } from '../../src/demo/tiny-qwen';
import type { ModelFiles } from '../../src/engine/io';
import { cpuBackend, type MergeBackend, runMerge } from '../../src/engine/merge';
import {
  memorySpoolStore,
  RangeSpool,
  type SpoolFile,
  type SpoolingSource,
  SpoolSpaceError,
  type SpoolStore,
} from '../../src/engine/read-spool';
import { type ByteSource, bytesByteSource } from '../../src/formats/byte-source';
import { GpuMergeBackend } from '../../src/gpu/backend';
import { gpuMergeBackend } from '../../src/gpu/select-backend';
import { nodeGpu } from '../../src/node/webgpu';
import { parseRecipe } from '../../src/recipe';
import { memoryOutput } from '../fixtures/memory-merge';

const gpu = await nodeGpu().catch(() => null);
const adapter = gpu ? await gpu.requestAdapter() : null;

/** Every read a source served: [start, end) of the file. */
type Reads = Map<string, [number, number][]>;

function countingSource(bytes: Uint8Array, name: string, reads: Reads, fail?: () => boolean): ByteSource {
  const inner = bytesByteSource(bytes, name);
  reads.set(name, reads.get(name) ?? []);
  return {
    name,
    size: inner.size,
    async read(offset, length) {
      if (fail?.()) throw new Error('the connection broke');
      reads.get(name)!.push([offset, offset + length]);
      // A copy, as a download is: nothing may keep a view of the source's bytes.
      return (await inner.read(offset, length)).slice();
    },
  };
}

/** A store that counts what it holds, so a test sees every spool removed. */
function trackingStore(inner: SpoolStore = memorySpoolStore()) {
  const live = new Set<SpoolFile>();
  const stats = { created: 0, written: 0, live };
  const store: SpoolStore = {
    async create(file_, tensor, bytes) {
      const file = await inner.create(file_, tensor, bytes);
      stats.created++;
      const tracked: SpoolFile = {
        async write(at, data) {
          stats.written += data.byteLength;
          await file.write(at, data);
        },
        read: (at, length) => file.read(at, length),
        async remove() {
          live.delete(tracked);
          await file.remove();
        },
      };
      live.add(tracked);
      return tracked;
    },
  };
  return { store, stats };
}

interface Remote {
  reads: Reads;
  resolver: (ref: string) => Promise<ModelFiles>;
}

/** The models as remote files: reads counted, spooled into `store` when given. */
function remoteModels(
  models: TinyModelFiles[],
  store?: SpoolStore,
  log?: (line: string) => void,
  fail?: () => boolean,
): Remote {
  const reads: Reads = new Map();
  const resolver = async (ref: string): Promise<ModelFiles> => {
    const m = models.find((x) => x.name === ref);
    if (!m) throw new Error(`no model ${ref}`);
    return {
      name: m.name,
      files: () => [...m.files.keys()],
      async open(file) {
        const source = countingSource(m.files.get(file)!, `${m.name}/${file}`, reads, fail);
        if (!store) return source;
        const spooling: SpoolingSource = {
          ...source,
          read: (o, l) => source.read(o, l),
          openSpool: async (request) => new RangeSpool({ source, request, store, onLog: log }),
        };
        return spooling;
      },
    };
  };
  return { reads, resolver };
}

const BASE = 'spool-base';
const RECIPES: Record<string, string> = {
  ties: `merge_method: ties
base_model: ${BASE}
models:
  - model: spool-a
    parameters: {weight: 0.6, density: 0.4}
  - model: spool-b
    parameters: {weight: 0.5, density: 0.6}
parameters: {normalize: true}`,
  della: `merge_method: della
base_model: ${BASE}
models:
  - model: spool-a
    parameters: {weight: 0.6, density: 0.4, epsilon: 0.1}
  - model: spool-b
    parameters: {weight: 0.5, density: 0.6, epsilon: 0.1}`,
  slerp: `merge_method: slerp
base_model: ${BASE}
models:
  - model: ${BASE}
  - model: spool-b
parameters: {t: 0.3}`,
  model_stock: `merge_method: model_stock
base_model: ${BASE}
models:
  - model: spool-a
  - model: spool-b`,
  task_arithmetic: `merge_method: task_arithmetic
base_model: ${BASE}
models:
  - model: spool-a
    parameters: {weight: 0.7}
  - model: spool-b
    parameters: {weight: 0.5}`,
  lowrank_task_arithmetic: `merge_method: lowrank_task_arithmetic
base_model: ${BASE}
models:
  - model: spool-a
    parameters: {weight: 0.7}
  - model: spool-b
    parameters: {weight: 0.5}
parameters: {rank: 4, oversample: 0, power_iterations: 0}`,
};
/** Methods that read each tensor once: they must not write a byte to a spool. */
const SINGLE_PASS = new Set(['task_arithmetic', 'lowrank_task_arithmetic']);

const EMBEDDING = 'model.embed_tokens.weight';
/** The CPU's cache across passes, lowered so that the 3.1 MB embedding is read once per pass. */
const CACHE = 1 << 20;
/** The models' vocabulary: the embedding is 24576 x 64. */
const VOCAB = 24576;
/** The CPU's chunk of elements, lowered with the cache: the embedding is six chunks. */
const CHUNK = 1 << 18;

let models: TinyModelFiles[];

beforeAll(async () => {
  models = await Promise.all(
    [
      { name: BASE, deltaSeed: 0, deltaScale: 0 },
      { name: 'spool-a', deltaSeed: 3, deltaScale: 0.1 },
      { name: 'spool-b', deltaSeed: 11, deltaScale: 0.2 },
    ].map((m) =>
      makeTinyModel(
        { ...m, tied: true, shards: 1, dtype: 'BF16' },
        { hiddenSize: 64, intermediateSize: 176, layers: 1, heads: 4, kvHeads: 2, vocabSize: VOCAB },
      ),
    ),
  );
}, 120_000);

/** Where `tensor` lies in a model's single shard: [start, end) of the file. */
function tensorRange(model: TinyModelFiles, tensor: string): [number, number] {
  const file = model.files.get('model.safetensors')!;
  const headerLength = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + headerLength)));
  const [a, b] = header[tensor].data_offsets as [number, number];
  return [8 + headerLength + a, 8 + headerLength + b];
}

/** How many times the source sent each byte of [start, end), at most and at least. */
function coverage(reads: [number, number][], start: number, end: number): { most: number; least: number } {
  const counts = new Uint8Array(end - start);
  for (const [a, b] of reads) {
    for (let i = Math.max(a, start); i < Math.min(b, end); i++) counts[i - start]++;
  }
  let most = 0;
  let least = Number.POSITIVE_INFINITY;
  for (const c of counts) {
    most = Math.max(most, c);
    least = Math.min(least, c);
  }
  return { most, least };
}

function weightReadRatio(remote: Remote): number {
  let read = 0;
  let size = 0;
  // The models the merge reads (slerp reads two of the three).
  for (const m of models.filter((x) => remote.reads.has(`${x.name}/model.safetensors`))) {
    size += m.files.get('model.safetensors')!.byteLength;
    for (const [a, b] of remote.reads.get(`${m.name}/model.safetensors`) ?? []) read += b - a;
  }
  return read / size;
}

async function merge(method: string, backend: MergeBackend, remote: Remote, signal?: AbortSignal) {
  const out = memoryOutput();
  const result = await runMerge({
    recipe: parseRecipe(`${RECIPES[method]}\ndtype: bfloat16\n`),
    resolveModel: remote.resolver,
    output: out.target,
    seed: 5,
    backend,
    cachedInputBytes: CACHE,
    streamElements: CHUNK,
    signal,
  });
  return { result, bytes: out.bytes('model.safetensors') };
}

describe('RangeSpool', () => {
  const bytes = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7) & 255);
  const request = { tensor: 'w', offset: 1000, length: 2000 };

  it('fetches each byte once: kept reads are served from the spool, partly kept reads fetch only the gaps', async () => {
    const reads: Reads = new Map();
    const source = countingSource(bytes, 'repo/model.safetensors', reads);
    const { store, stats } = trackingStore();
    const spool = new RangeSpool({ source, request, store });
    expect(await spool.read(1000, 500, true)).toEqual(bytes.subarray(1000, 1500));
    expect(await spool.read(2000, 500, true)).toEqual(bytes.subarray(2000, 2500));
    // A later pass: the kept parts from the spool, the gap between them from the source.
    expect(await spool.read(1000, 1500, false)).toEqual(bytes.subarray(1000, 2500));
    expect(await spool.read(1200, 100, false)).toEqual(bytes.subarray(1200, 1300));
    expect(reads.get('repo/model.safetensors')).toEqual([
      [1000, 1500],
      [2000, 2500],
      [1500, 2000],
    ]);
    expect(spool.fetched).toBe(1500);
    expect(spool.reused).toBe(1100);
    // Bytes read without `keep` and kept afterwards (the GPU's statistics passes).
    const later = await spool.read(2500, 500, false);
    await spool.keep(2500, later);
    expect(await spool.read(2500, 500, false)).toEqual(bytes.subarray(2500, 3000));
    expect(reads.get('repo/model.safetensors')).toHaveLength(4);
    expect(stats.written).toBe(1500);
    await expect(spool.read(900, 200, false)).rejects.toThrow(
      'repo/model.safetensors: read of 200 bytes at 900 is outside the spooled bytes 1000-3000',
    );
    await spool.close();
    expect(stats.live.size).toBe(0);
    await spool.close();
  });

  it('writes nothing when no read is kept', async () => {
    const { store, stats } = trackingStore();
    const spool = new RangeSpool({ source: bytesByteSource(bytes, 'f'), request, store });
    await spool.read(1000, 2000, false);
    await spool.close();
    expect(stats).toMatchObject({ created: 0, written: 0 });
  });

  it('without room, says so naming the file, tensor and space, and fetches again', async () => {
    const reads: Reads = new Map();
    const source = countingSource(bytes, 'org/repo/model.safetensors', reads);
    const log: string[] = [];
    const full: SpoolStore = {
      async create(file, tensor, need) {
        throw new SpoolSpaceError(file, tensor, need, 1_500_000);
      },
    };
    const spool = new RangeSpool({
      source,
      request: { tensor: 'model.embed_tokens.weight', offset: 0, length: 4096 },
      store: full,
      onLog: (line) => log.push(line),
    });
    expect(await spool.read(0, 4096, true)).toEqual(bytes);
    expect(await spool.read(0, 4096, true)).toEqual(bytes);
    expect(log).toEqual([
      "org/repo/model.safetensors: no room to keep tensor model.embed_tokens.weight for its later passes (4.10 kB needed, 1.50 MB free in this browser's storage); " +
        'its later passes download it again from the hub. Free space (delete outputs or library models you no longer need) to download each byte once',
    ]);
    expect(reads.get('org/repo/model.safetensors')).toHaveLength(2);
  });

  it('a write refused for quota mid-way drops what the spool held and names the space it needed', async () => {
    const log: string[] = [];
    const { store, stats } = trackingStore();
    let writes = 0;
    const quota: SpoolStore = {
      async create(name, tensor, need) {
        const file = await store.create(name, tensor, need);
        return {
          ...file,
          async write(at, data) {
            if (++writes > 1) throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
            await file.write(at, data);
          },
          remove: () => file.remove(),
        };
      },
    };
    const spool = new RangeSpool({
      source: bytesByteSource(bytes, 'org/repo/model.safetensors'),
      request,
      store: quota,
      onLog: (line) => log.push(line),
    });
    await spool.read(1000, 1000, true);
    await spool.read(2000, 1000, true);
    expect(stats.live.size).toBe(0);
    expect(log).toHaveLength(1);
    expect(log[0]).toContain(
      'org/repo/model.safetensors: no room to keep tensor w for its later passes (2.00 kB needed in this browser',
    );
    // Nothing held: a later read is the source's.
    expect(await spool.read(1000, 2000, false)).toEqual(bytes.subarray(1000, 3000));
    expect(spool.reused).toBe(0);
  });

  it('a write failing for another reason fails the read', async () => {
    const broken: SpoolStore = {
      async create() {
        throw new Error('the disk is gone');
      },
    };
    const spool = new RangeSpool({ source: bytesByteSource(bytes, 'f'), request, store: broken });
    await expect(spool.read(1000, 10, true)).rejects.toThrow('the disk is gone');
  });
});

describe('a merge from spooling sources reads each weight byte once', () => {
  const backends: [string, () => Promise<{ backend: MergeBackend; destroy(): void } | null>][] = [
    ['CPU', async () => ({ backend: cpuBackend, destroy() {} })],
    [
      'GPU',
      async () => {
        if (!adapter) return null;
        const gpuBackend = await GpuMergeBackend.create({
          gpu: gpu!,
          label: 'test',
          memoryBudget: 16_000_000,
          maxStorageBufferBindingSize: 2 * 1024 * 1024,
        });
        return { backend: gpuMergeBackend(gpuBackend), destroy: () => gpuBackend.destroy() };
      },
    ],
  ];
  for (const [kind, make] of backends) {
    for (const method of Object.keys(RECIPES)) {
      it.skipIf(kind === 'GPU' && !adapter)(
        `${method} on the ${kind}`,
        async () => {
          const made = await make();
          const { backend } = made!;
          try {
            const plain = remoteModels(models);
            const before = await merge(method, backend, plain);
            const { store, stats } = trackingStore();
            const spooled = remoteModels(models, store);
            const after = await merge(method, backend, spooled);
            expect(Buffer.from(after.bytes).equals(Buffer.from(before.bytes))).toBe(true);
            if (kind === 'GPU') expect(after.result.placement.cpu).toBe(0);
            console.info(
              `${method} on the ${kind}: ${weightReadRatio(plain).toFixed(2)} bytes read per weight byte without the spool, ` +
                `${weightReadRatio(spooled).toFixed(2)} with it (${stats.written} bytes spooled)`,
            );
            for (const m of models) {
              // slerp merges the base and spool-b.
              if (m.name === 'spool-a' && method === 'slerp') continue;
              const [start, end] = tensorRange(m, EMBEDDING);
              const reads = spooled.reads.get(`${m.name}/model.safetensors`)!;
              const { most, least } = coverage(reads, start, end);
              expect(least, `${m.name}: every embedding byte read`).toBe(1);
              expect(most, `${m.name}: no embedding byte read twice`).toBe(1);
            }
            if (SINGLE_PASS.has(method)) expect(stats.created).toBe(0);
            else expect(stats.written).toBeGreaterThan(0);
            expect(stats.live.size, 'every spool removed').toBe(0);
          } finally {
            made!.destroy();
          }
        },
        600_000,
      );
    }
  }

  it('a tied embedding, the input of model.embed_tokens.weight and lm_head.weight, is read once', async () => {
    const shape = {
      hiddenSize: 64,
      intermediateSize: 176,
      layers: 1,
      heads: 4,
      kvHeads: 2,
      vocabSize: VOCAB,
    };
    const untied = await makeTinyModel(
      { name: 'spool-untied', deltaSeed: 7, deltaScale: 0.1, tied: false, shards: 1, dtype: 'BF16' },
      shape,
    );
    const pair = [models[0], untied];
    const recipe = `merge_method: ties
base_model: ${BASE}
models:
  - model: spool-untied
    parameters: {weight: 1.0, density: 0.3}
dtype: bfloat16
`;
    const run = async (remote: Remote) => {
      const out = memoryOutput();
      await runMerge({
        recipe: parseRecipe(recipe),
        resolveModel: remote.resolver,
        output: out.target,
        backend: cpuBackend,
        cachedInputBytes: CACHE,
      });
      return out.bytes('model.safetensors');
    };
    const plain = remoteModels(pair);
    const before = await run(plain);
    const { store, stats } = trackingStore();
    const spooled = remoteModels(pair, store);
    const after = await run(spooled);
    expect(Buffer.from(after).equals(Buffer.from(before))).toBe(true);
    const [start, end] = tensorRange(models[0], EMBEDDING);
    // Two chunks, each read once per tensor (a tensor of two chunks keeps both across its passes).
    expect(coverage(plain.reads.get(`${BASE}/model.safetensors`)!, start, end).most).toBe(2);
    expect(coverage(spooled.reads.get(`${BASE}/model.safetensors`)!, start, end)).toEqual({
      most: 1,
      least: 1,
    });
    expect(stats.live.size).toBe(0);
  }, 120_000);

  it('removes the spools when the merge fails and when it is cancelled', async () => {
    for (const ending of ['failure', 'cancel'] as const) {
      const { store, stats } = trackingStore();
      const controller = new AbortController();
      let reads = 0;
      const remote = remoteModels(models, store, undefined, () => {
        reads++;
        // Mid-way through the embedding's passes (its reads come after the headers and small tensors).
        if (stats.written > 3_000_000) {
          if (ending === 'cancel') controller.abort();
          else return true;
        }
        return false;
      });
      const run = merge('ties', cpuBackend, remote, controller.signal);
      await expect(run).rejects.toThrow(
        ending === 'cancel' ? 'the merge was cancelled' : 'the connection broke',
      );
      expect(reads).toBeGreaterThan(0);
      expect(stats.written).toBeGreaterThan(3_000_000);
      expect(stats.live.size, `${ending}: every spool removed`).toBe(0);
    }
  }, 120_000);
});
