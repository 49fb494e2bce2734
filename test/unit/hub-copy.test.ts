/**
 * A copy of a streamed hub model kept in the library (src/store/hub-copy.ts), against the local test
 * hub over real HTTP and IndexedDB's semantics in memory: ranges read out of order and overlapping
 * are stored once, the rest fetched at the end without asking for a stored byte again, files
 * assembled across chunk boundaries and verified; a corrupt byte or a full quota leaves nothing.
 */
import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { makeTinyModel, TINY_TRIO } from '../../src/demo/tiny-qwen';
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
});
