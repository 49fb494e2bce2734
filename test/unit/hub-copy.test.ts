/**
 * A copy of a streamed hub model kept in the library (src/store/hub-copy.ts), against the local test
 * hub over real HTTP and IndexedDB's semantics in memory: ranges read out of order and overlapping
 * are stored once, the rest fetched at the end without asking for a stored byte again, files
 * assembled across chunk boundaries and verified; a corrupt byte or a full quota leaves nothing. A
 * copy resumed after a reload goes on from the pieces stored before it: reads they cover are served
 * from them, and none of their bytes is requested again.
 */
import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { makeTinyModel, TINY_TRIO } from '../../src/demo/tiny-qwen';
import type { ModelFiles } from '../../src/engine/io';
import { readModelTensorBytes, readModelTensors } from '../../src/formats/model-index';
import { HubCopy } from '../../src/store/hub-copy';
import { type HubModelFiles, openHubModel, pinHubRevision } from '../../src/store/hub-model';
import { ChecksumMismatchError, ModelLibrary, StorageFullError } from '../../src/store/library';
import { HubServer } from '../browser/hub-server';
import { memoryStore } from '../fixtures/memory-store';

const REPO = 'test-org/tiny-qwen-system2';
/** Small chunks, so pieces straddle chunk boundaries. */
const CHUNK_BYTES = 4000;
let hub: HubServer | undefined;

afterEach(async () => {
  await hub?.stop();
  hub = undefined;
});

async function setUp(quotaBytes?: number) {
  const model = await makeTinyModel(TINY_TRIO[2]);
  hub = new HubServer();
  hub.addRepo(REPO, { files: new Map(model.files) });
  await hub.start();
  const store = memoryStore(quotaBytes);
  const library = new ModelLibrary(store, CHUNK_BYTES);
  const commit = await pinHubRevision(REPO, 'main', { hubUrl: hub.url });
  let copy: HubCopy | undefined;
  const streamed: HubModelFiles = await openHubModel(REPO, commit, {
    hubUrl: hub.url,
    minRequestBytes: 2048,
    onFetched: (file, start, bytes) => copy?.record(file, start, bytes),
  });
  copy = await HubCopy.begin(library, streamed);
  return { model, store, library, streamed, copy, hub };
}

/** Bounded ranges the hub served per file, [start, end). */
function servedRanges(server: HubServer): Map<string, [number, number][]> {
  const byFile = new Map<string, [number, number][]>();
  for (const r of server.requests) {
    const m = /^bytes=(\d+)-(\d+)$/.exec(r.range ?? '');
    if (!m) throw new Error(`${r.path}: unbounded request ${r.range}`);
    byFile.set(r.path, [...(byFile.get(r.path) ?? []), [Number(m[1]), Number(m[2]) + 1]]);
  }
  return byFile;
}

describe('a copy of a streamed hub model', () => {
  it('stores what reads fetched, fetches only the rest, and lists the model whole', async () => {
    const { model, store, library, streamed, copy, hub } = await setUp();
    const index = await readModelTensors(streamed);
    // A few tensors, out of file order, one of them twice (overlapping fetches).
    const names = [...index.tensors.keys()];
    const picked = [
      names[names.length - 1],
      names[3],
      names[0],
      names[3],
      names[Math.floor(names.length / 2)],
    ];
    for (const name of picked) await readModelTensorBytes(index, name);
    expect(await library.list()).toEqual([]);
    const record = await copy.finish();
    expect(record.name).toBe(REPO);
    expect(record.source).toEqual({ kind: 'hub', repo: REPO, revision: streamed.commit });
    expect((await library.list()).map((m) => m.name)).toEqual([REPO]);

    const stored = await library.openModel({ name: REPO });
    expect([...stored.files()].sort()).toEqual([...model.files.keys()].sort());
    for (const [name, bytes] of model.files) {
      const source = await stored.open(name);
      expect(Buffer.from(await source.read(0, source.size)).equals(Buffer.from(bytes)), name).toBe(true);
      const file = record.files.find((f) => f.name === name)!;
      expect(file.chunks).toBe(Math.ceil(bytes.length / CHUNK_BYTES));
      if (name.endsWith('.safetensors'))
        expect(file.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    }
    // Only the model's record and chunks are left: no piece, no unfinished import.
    expect([...store.data.keys()].filter((k) => k.includes('/@') || k.startsWith('import:'))).toEqual([]);

    // Each byte past the headers (read by each opening of a shard) was requested once.
    for (const [path, ranges] of servedRanges(hub)) {
      const bytes = model.files.get(path)!;
      const headerEnd = path.endsWith('.safetensors')
        ? 8 + Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true))
        : 0;
      const seen = new Uint8Array(bytes.length);
      for (const [a, b] of ranges) for (let i = Math.max(a, headerEnd); i < b; i++) seen[i]++;
      const counts = new Set(seen.subarray(headerEnd));
      expect([...counts], `${path}: every byte past the header fetched exactly once`).toEqual([1]);
    }
  });

  it("serves a merge's later passes from its pieces (spoolFor), and nothing once it has failed", async () => {
    const { streamed, copy, hub } = await setUp();
    const index = await readModelTensors(streamed);
    const [name] = [...index.tensors.keys()];
    const info = index.tensors.get(name)!;
    const source = index.sources.get(info.file)!;
    let reused = 0;
    const spool = copy.spoolFor(info.file, source, (n) => {
      reused += n;
    });
    const first = await spool.read(info.offset, info.byteLength, true);
    const requests = hub.requests.length;
    // The later pass: from the stored pieces, no request.
    expect(
      Buffer.from(await spool.read(info.offset, info.byteLength, false)).equals(Buffer.from(first)),
    ).toBe(true);
    expect(hub.requests.length).toBe(requests);
    expect(reused).toBe(info.byteLength);
    // A range the copy does not hold yet is read from the hub.
    expect(await copy.readStored(info.file, info.offset + info.byteLength, 1 << 20)).toBeUndefined();
    await copy.discard();
    expect(await copy.readStored(info.file, info.offset, info.byteLength)).toBeUndefined();
    await spool.read(info.offset, info.byteLength, false);
    expect(hub.requests.length).toBeGreaterThan(requests);
  });

  it('fails with the checksum error on a corrupt byte and leaves the library as it was', async () => {
    const { model, store, library, streamed, copy, hub } = await setUp();
    const shard = [...model.files.keys()].find((n) => n.endsWith('.safetensors'))!;
    hub.corruptFile(REPO, shard);
    await readModelTensors(streamed);
    const error = await copy.finish().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ChecksumMismatchError);
    expect((error as Error).message).toMatch(
      new RegExp(
        `^${REPO}/${shard}: sha256 is [0-9a-f]{64} but the hub lists ${createHash('sha256').update(model.files.get(shard)!).digest('hex')}; ` +
          'the file is corrupt and was deleted\\. Nothing was added to the library; import the repo from the hub to try again\\.$',
      ),
    );
    expect(await library.list()).toEqual([]);
    expect([...store.data.keys()]).toEqual([]);
  });

  it('ends on a full quota without failing the reads, removing every piece', async () => {
    const { store, library, streamed, copy } = await setUp(6000);
    const index = await readModelTensors(streamed);
    // The reads go on although the copy cannot store them.
    for (const name of [...index.tensors.keys()].slice(0, 6)) await readModelTensorBytes(index, name);
    expect(copy.error).toBeInstanceOf(StorageFullError);
    await expect(copy.finish()).rejects.toThrow(StorageFullError);
    expect(await library.list()).toEqual([]);
    expect([...store.data.keys()]).toEqual([]);
  });

  it('discards its pieces and the unfinished import when the merge fails', async () => {
    const { store, library, streamed, copy } = await setUp();
    await readModelTensors(streamed);
    expect([...store.data.keys()].some((k) => k.includes('/@'))).toBe(true);
    await copy.discard();
    expect([...store.data.keys()]).toEqual([]);
    expect(await library.pendingImports()).toEqual([]);
  });

  it('is removed by its import id alone (a Cancel that ended its worker), a finished copy never', async () => {
    const { store, library, streamed, copy, hub: first } = await setUp();
    await readModelTensors(streamed);
    expect([...store.data.keys()].some((k) => k.startsWith(`${copy.importId}/`))).toBe(true);
    expect(await library.discardPendingImport(copy.importId)).toBe(true);
    expect([...store.data.keys()]).toEqual([]);
    expect(await library.pendingImports()).toEqual([]);
    expect(await library.discardPendingImport(copy.importId)).toBe(false);
    await first.stop();

    const again = await setUp();
    const record = await again.copy.finish();
    const keys = [...again.store.data.keys()].sort();
    expect(await again.library.discardPendingImport(again.copy.importId)).toBe(false);
    expect([...again.store.data.keys()].sort()).toEqual(keys);
    expect((await again.library.list()).map((m) => m.id)).toEqual([record.id]);
  });

  it('resumed after a reload, goes on from its stored pieces and fetches none of their bytes again', async () => {
    const { model, store, library, streamed, copy, hub } = await setUp();
    const index = await readModelTensors(streamed);
    const names = [...index.tensors.keys()];
    for (const name of names.slice(0, 5)) await readModelTensorBytes(index, name);
    // The pieces stored before the "reload", by file.
    const earlier = new Map<string, [number, number][]>();
    for (const [key, value] of store.data) {
      const m = /\/([^/]+)\/@(\d+)$/.exec(key);
      if (!m || !key.startsWith(`${copy.importId}/`)) continue;
      const start = Number(m[2]);
      earlier.set(m[1], [...(earlier.get(m[1]) ?? []), [start, start + (value as Blob).size]]);
    }
    expect(earlier.size).toBeGreaterThan(0);
    const requestsBefore = hub.requests.length;

    // A new run opens the model again and resumes the copy by its import id.
    let resumed: HubCopy | undefined;
    const again = await openHubModel(REPO, streamed.commit, {
      hubUrl: hub.url,
      minRequestBytes: 2048,
      onFetched: (file, start, bytes) => resumed?.record(file, start, bytes),
    });
    const resumption = await HubCopy.resume(library, again, copy.importId);
    resumed = resumption.copy;
    expect(resumption.restartedBecause).toBeUndefined();
    expect(resumption.bytesKept).toBe([...earlier.values()].flat().reduce((s, [a, b]) => s + b - a, 0));
    expect(resumed.importId).toBe(copy.importId);
    const readThrough: ModelFiles = {
      ...again,
      open: async (file) => resumed!.readThrough(file, await again.open(file)),
    };
    // The headers and a few tensors read again (stored before, and new), then the copy completed.
    const index2 = await readModelTensors(readThrough);
    for (const name of [...names.slice(2, 4), ...names.slice(-3)]) await readModelTensorBytes(index2, name);
    // What the stored pieces serve is the file's bytes: whole shards read through them.
    for (const [name, bytes] of model.files) {
      if (!name.endsWith('.safetensors')) continue;
      const source = await readThrough.open(name);
      const [a, b] = earlier.get(name)?.[0] ?? [0, 0];
      expect(Buffer.from(await source.read(a, b - a)).equals(Buffer.from(bytes.subarray(a, b))), name).toBe(
        true,
      );
    }
    const record = await resumed.finish();
    expect(record.name).toBe(REPO);
    const stored = await library.openModel({ name: REPO });
    for (const [name, bytes] of model.files) {
      const source = await stored.open(name);
      expect(Buffer.from(await source.read(0, source.size)).equals(Buffer.from(bytes)), name).toBe(true);
    }
    // No request after the reload asked for a byte stored before it.
    const after = servedRanges({ requests: hub.requests.slice(requestsBefore) } as HubServer);
    for (const [path, ranges] of after) {
      for (const [a, b] of ranges) {
        for (const [p, q] of earlier.get(path) ?? []) {
          expect(a < q && p < b, `${path}: bytes ${a}-${b - 1} requested again (stored ${p}-${q - 1})`).toBe(
            false,
          );
        }
      }
    }
    expect([...store.data.keys()].filter((k) => k.includes('/@') || k.startsWith('import:'))).toEqual([]);
  });

  it('resumed at another commit, or with its import gone, begins afresh and says why', async () => {
    const { library, streamed, copy } = await setUp();
    await readModelTensors(streamed);
    const moved = { ...streamed, commit: 'f'.repeat(40) } as HubModelFiles;
    const resumption = await HubCopy.resume(library, moved, copy.importId, `${REPO}@v2`);
    expect(resumption.restartedBecause).toBe(
      `the copy begun before the reload is not of ${REPO} at ${'f'.repeat(40)}`,
    );
    expect(resumption.bytesKept).toBe(0);
    const pending = await library.pendingImports();
    expect(pending.map((p) => p.id)).toEqual([resumption.copy.importId]);
    expect(pending[0].name).toBe(`${REPO}@v2`);
    const gone = await HubCopy.resume(library, streamed, copy.importId);
    expect(gone.restartedBecause).toBe('the copy begun before the reload is gone from the library');
  });
});
