import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { makeTinyModel, TINY_TRIO } from '../../src/demo/tiny-qwen';
import { filesFromDirectoryInput, importFolder, isModelFile } from '../../src/store/import-folder';
import {
  ChecksumMismatchError,
  chunkedByteSource,
  ModelLibrary,
  StorageFullError,
} from '../../src/store/library';
import { Sha256 } from '../../src/store/sha256';
import { memoryStore } from '../fixtures/memory-store';

function pattern(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return out;
}

function nodeSha(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

describe('Sha256', () => {
  it('matches known digests', () => {
    expect(new Sha256().hex()).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    expect(new Sha256().update(new TextEncoder().encode('abc')).hex()).toBe(
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
  });

  it('gives the same digest for any split and across a saved state', () => {
    for (const n of [55, 56, 63, 64, 65, 119, 120, 1000, 4097]) {
      const bytes = pattern(n, n);
      const expected = nodeSha(bytes);
      for (const cut of [0, 1, 13, 63, 64, Math.floor(n / 2), n]) {
        const first = new Sha256().update(bytes.subarray(0, cut));
        const resumed = new Sha256(structuredClone(first.state())).update(bytes.subarray(cut));
        expect(resumed.hex(), `n=${n} cut=${cut}`).toBe(expected);
      }
    }
  });
});

describe('chunkedByteSource', () => {
  it('reads any range across chunk boundaries like the whole file', async () => {
    const bytes = pattern(1000);
    const chunkBytes = 64;
    const chunks: Blob[] = [];
    for (let at = 0; at < bytes.length; at += chunkBytes)
      chunks.push(new Blob([bytes.slice(at, at + chunkBytes)]));
    const source = chunkedByteSource(chunks, chunkBytes, 'm/f');
    expect(source.size).toBe(1000);
    for (const [offset, length] of [
      [0, 1000],
      [63, 2],
      [64, 64],
      [10, 300],
      [999, 1],
      [500, 0],
    ]) {
      expect([...(await source.read(offset, length))]).toEqual([...bytes.subarray(offset, offset + length)]);
    }
    await expect(source.read(990, 11)).rejects.toThrow(/m\/f: read of 11 bytes at 990 is outside/);
  });
});

describe('ModelLibrary', () => {
  it('imports a folder in chunks and reads every file back byte for byte', async () => {
    const model = await makeTinyModel(TINY_TRIO[2]);
    const kv = memoryStore();
    const library = new ModelLibrary(kv, 4096);
    const files = [...model.files].map(([name, bytes]) => ({ name, blob: new Blob([bytes as BlobPart]) }));
    files.push({ name: 'README.md', blob: new Blob(['not kept']) });
    const seen: number[] = [];
    const record = await importFolder(library, model.name, files, {
      onProgress: (p) => seen.push(p.bytesDone),
    });
    expect(record.name).toBe('tiny-qwen-system2');
    expect(record.files.map((f) => f.name)).not.toContain('README.md');
    expect(record.summary.architecture).toBe('Qwen2ForCausalLM');
    expect(record.summary.dtype).toBe('bfloat16');
    const total = [...model.files.values()].reduce((s, b) => s + b.length, 0);
    expect(record.summary.totalBytes).toBe(total);
    expect(seen.at(-1)).toBe(total);
    // 4 layers x 12 tensors + embeddings + final norm + untied head
    expect(record.summary.tensorCount).toBe(4 * 12 + 3);
    const opened = await library.openModel({ name: 'tiny-qwen-system2' });
    for (const [name, bytes] of model.files) {
      const f = record.files.find((x) => x.name === name)!;
      expect(f.chunks).toBe(Math.ceil(bytes.length / 4096));
      const source = await opened.open(name);
      expect(nodeSha(await source.read(0, source.size))).toBe(nodeSha(bytes));
    }
    expect(await library.pendingImports()).toEqual([]);
  });

  it('names a second import of the same folder apart and deletes every chunk', async () => {
    const model = await makeTinyModel(TINY_TRIO[0]);
    const kv = memoryStore();
    const library = new ModelLibrary(kv, 8192);
    const files = [...model.files].map(([name, bytes]) => ({ name, blob: new Blob([bytes as BlobPart]) }));
    const a = await importFolder(library, 'm', files);
    const b = await importFolder(library, 'm', files);
    expect([a.name, b.name]).toEqual(['m', 'm-2']);
    const before = kv.data.size;
    await library.delete(a.id);
    expect([...kv.data.keys()].some((k) => k.includes(a.id))).toBe(false);
    const chunksOfA = a.files.reduce((s, f) => s + f.chunks, 0);
    expect(kv.data.size).toBe(before - chunksOfA - 1);
    expect((await library.list()).map((m) => m.name)).toEqual(['m-2']);
  });

  it('reports a full store naming the file, removes the partial import, keeps the rest', async () => {
    const model = await makeTinyModel(TINY_TRIO[0]);
    const files = [...model.files].map(([name, bytes]) => ({ name, blob: new Blob([bytes as BlobPart]) }));
    const total = files.reduce((s, f) => s + f.blob.size, 0);
    const kv = memoryStore(total * 1.5);
    const library = new ModelLibrary(kv, 16384);
    await importFolder(library, 'first', files);
    const keysBefore = [...kv.data.keys()].sort();
    const error = await importFolder(library, 'second', files).catch((e) => e);
    expect(error).toBeInstanceOf(StorageFullError);
    expect(error.message).toMatch(/second\/model\.safetensors/);
    expect([...kv.data.keys()].sort()).toEqual(keysBefore);
    expect((await library.list()).map((m) => m.name)).toEqual(['first']);
  });

  it('refuses a file whose sha256 differs and deletes its chunks, keeping finished files', async () => {
    const kv = memoryStore();
    const library = new ModelLibrary(kv, 10);
    const good = pattern(25, 3);
    const bad = pattern(25, 4);
    const job = await library.beginImport({
      name: 'hub/model',
      source: { kind: 'hub', repo: 'hub/model', revision: 'main' },
      resumable: true,
      files: [
        { name: 'a.bin', size: 25, expectedSha256: nodeSha(good) },
        { name: 'b.bin', size: 25, expectedSha256: nodeSha(good) },
      ],
    });
    for (let at = 0; at < 25; at += 10) await job.appendChunk('a.bin', new Blob([good.slice(at, at + 10)]));
    await job.appendChunk('b.bin', new Blob([bad.slice(0, 10)]));
    await job.appendChunk('b.bin', new Blob([bad.slice(10, 20)]));
    const error = await job.appendChunk('b.bin', new Blob([bad.slice(20)])).catch((e) => e);
    expect(error).toBeInstanceOf(ChecksumMismatchError);
    expect(error.message).toContain(`hub/model/b.bin: sha256 is ${nodeSha(bad)}`);
    const keys = [...kv.data.keys()];
    expect(keys.filter((k) => k.includes('/b.bin/'))).toEqual([]);
    expect(keys.filter((k) => k.includes('/a.bin/')).length).toBe(3);
    // The import continues from the stored progress, as after a reload.
    const resumed = await library.resumeImport(job.id);
    expect(resumed.file('a.bin').done).toBe(true);
    expect(resumed.file('b.bin').bytesDone).toBe(0);
    expect(await library.list()).toEqual([]);
  });

  it('drops interrupted folder imports and orphan chunks, keeps resumable ones', async () => {
    const kv = memoryStore();
    const library = new ModelLibrary(kv, 10);
    const folder = await library.beginImport({
      name: 'f',
      source: { kind: 'folder' },
      resumable: false,
      files: [{ name: 'x', size: 20 }],
    });
    await folder.appendChunk('x', new Blob([pattern(10) as BlobPart]));
    const hub = await library.beginImport({
      name: 'o/h',
      source: { kind: 'hub', repo: 'o/h', revision: 'main' },
      resumable: true,
      files: [{ name: 'x', size: 20 }],
    });
    await hub.appendChunk('x', new Blob([pattern(10) as BlobPart]));
    await kv.write([['orphan-id/x/0', new Blob(['z'])]]);
    expect(await library.removeAbandoned()).toBe(3);
    expect([...kv.data.keys()].sort()).toEqual([`${hub.id}/x/0`, `import:${hub.id}`]);
  });
});

describe('folder input', () => {
  it('takes the folder name from webkitRelativePath and keeps only model files', () => {
    const file = (path: string) =>
      Object.assign(new File(['1'], path.split('/').pop()!), { webkitRelativePath: path });
    const { folder, files } = filesFromDirectoryInput([file('r1/config.json'), file('r1/sub/x.safetensors')]);
    expect(folder).toBe('r1');
    expect(files.map((f) => f.name)).toEqual(['config.json', 'sub/x.safetensors']);
    expect(isModelFile('sub/x.safetensors')).toBe(false);
    expect(
      [
        'model-00001-of-00002.safetensors',
        'model.safetensors.index.json',
        'tokenizer.json',
        'merges.txt',
      ].every(isModelFile),
    ).toBe(true);
    expect(['README.md', 'pytorch_model.bin', '.gitattributes'].some(isModelFile)).toBe(false);
  });
});
