/**
 * Models linked in place: the library stores the folder's handle and its files' sizes and mtimes,
 * no bytes; the engine reads the folder's files; a permission the browser has not granted, a file
 * that changed (size, mtime) or is gone is refused with a named error listing every such file;
 * Re-link accepts the folder as it is; removing the model leaves the folder alone.
 */
import { describe, expect, it } from 'vitest';
import { makeTinyModel, TINY_TRIO } from '../../src/demo/tiny-qwen';
import { LibraryError, ModelLibrary } from '../../src/store/library';
import { LinkedFolderChangedError, LinkPermissionError, linkState } from '../../src/store/linked-folder';
import { memoryStore } from '../fixtures/memory-store';
import { FakeFolder } from './fake-file-system-access';

async function linkedSystem2() {
  const model = await makeTinyModel(TINY_TRIO[2]);
  const folder = new FakeFolder('tiny-qwen-system2').put(model.files);
  folder.put(new Map([['README.md', new TextEncoder().encode('not a model file')]]));
  const kv = memoryStore();
  const library = new ModelLibrary(kv);
  const record = await library.link(folder.asHandle());
  return { model, folder, kv, library, record };
}

describe('linked model folders', () => {
  it('stores the handle and file facts only, and reads the bytes from the folder', async () => {
    const { model, folder, kv, library, record } = await linkedSystem2();
    expect([...kv.data.keys()]).toEqual([`model:${record.id}`]);
    expect(record.source).toEqual({ kind: 'linked' });
    expect(record.link?.handle).toBe(folder);
    expect(record.files.map((f) => f.name)).toEqual(
      [...model.files.keys()].sort((a, b) => a.localeCompare(b)),
    );
    expect(record.files.every((f) => f.chunks === 0)).toBe(true);
    expect(record.summary.architecture).toBe('Qwen2ForCausalLM');
    const opened = await library.openModel({ name: 'tiny-qwen-system2' });
    for (const [name, bytes] of model.files) {
      const source = await opened.open(name);
      expect(await source.read(0, source.size)).toEqual(bytes);
    }
  });

  it('refuses a folder linked twice', async () => {
    const { folder, library } = await linkedSystem2();
    await expect(library.link(folder.asHandle())).rejects.toThrow(LibraryError);
    await expect(library.link(folder.asHandle())).rejects.toThrow('already linked as tiny-qwen-system2');
  });

  it('names every changed or missing file, refuses to open the model, and Re-link accepts it', async () => {
    const { folder, library, record } = await linkedSystem2();
    const shard = 'model-00001-of-00002.safetensors';
    const file = await folder.getFileHandle(shard);
    file.write(file.bytes); // same bytes, new mtime
    const index = await folder.getFileHandle('model.safetensors.index.json');
    index.write(new Uint8Array([...index.bytes, 0x20]));
    await folder.removeEntry('tokenizer.json');
    const state = await linkState(record.link!);
    expect(state.state).toBe('changed');
    const changes = state.state === 'changed' ? state.changes : [];
    expect(changes).toContainEqual(expect.objectContaining({ file: shard, kind: 'modified' }));
    expect(changes).toContainEqual(
      expect.objectContaining({
        file: 'model.safetensors.index.json',
        kind: 'size',
        now: index.bytes.length,
        was: index.bytes.length - 1,
      }),
    );
    expect(changes).toContainEqual({ file: 'tokenizer.json', kind: 'missing' });
    expect(changes).toHaveLength(3);
    const opening = library.openModel({ name: 'tiny-qwen-system2' });
    await expect(opening).rejects.toThrow(LinkedFolderChangedError);
    await expect(library.openModel({ name: 'tiny-qwen-system2' })).rejects.toThrow(
      new RegExp(
        `${shard} was modified.*model.safetensors.index.json is ${index.bytes.length} bytes, was ${index.bytes.length - 1}`,
      ),
    );
    // The index is restored, so the folder is a model again; Re-link records it as it is now.
    index.write(index.bytes.subarray(0, index.bytes.length - 1));
    expect(record.files.some((f) => f.name === 'tokenizer.json')).toBe(true);
    const relinked = await library.relink(record.id);
    expect(relinked.id).toBe(record.id);
    expect((await linkState(relinked.link!)).state).toBe('ready');
    await expect(library.openModel({ name: 'tiny-qwen-system2' })).resolves.toBeDefined();
  });

  it('a file that changes after the model was opened is refused when it is read', async () => {
    const { folder, library } = await linkedSystem2();
    const opened = await library.openModel({ name: 'tiny-qwen-system2' });
    const shard = await folder.getFileHandle('model-00002-of-00002.safetensors');
    shard.write(shard.bytes);
    await expect(opened.open('model-00002-of-00002.safetensors')).rejects.toThrow(LinkedFolderChangedError);
  });

  it('without permission the model is refused with what to press', async () => {
    const { folder, library, record } = await linkedSystem2();
    folder.permission = 'prompt';
    expect(await linkState(record.link!)).toEqual({ state: 'permission' });
    await expect(library.openModel({ name: 'tiny-qwen-system2' })).rejects.toThrow(LinkPermissionError);
    await expect(library.openModel({ name: 'tiny-qwen-system2' })).rejects.toThrow('Press "Allow reading"');
  });

  it('removing a linked model removes the link, never the files', async () => {
    const { folder, kv, library, record } = await linkedSystem2();
    const before = folder.tree();
    await library.delete(record.id);
    expect(kv.data.size).toBe(0);
    expect(folder.tree()).toEqual(before);
  });
});
