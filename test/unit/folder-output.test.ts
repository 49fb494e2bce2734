/**
 * Output written straight into a folder the user picked: temporary names while writing, final names
 * only at commit (by move, or by copy where a browser has no move), the run's subfolder removed on
 * abort, an existing folder never written over, and clean-up after Cancel that never touches a
 * finished output or the user's files. Resumption: checkpoints make the bytes written so far the
 * file's (`durable()` says when), and after a "reload" the temporary files are reopened, cut to the
 * recorded end and continued, to the same files as one uninterrupted run.
 */
import { describe, expect, it } from 'vitest';
import {
  CHECKPOINT_MIN_BYTES,
  createFolderOutput,
  folderOutputState,
  freeFolderName,
  isPartialEntry,
  OutputFolderError,
  openFolderOutput,
  partialFileName,
  partialFolderFiles,
  removePartialFolderOutput,
} from '../../src/worker/folder-output';
import { FakeFile, FakeFolder } from './fake-file-system-access';

const enc = new TextEncoder();

async function writeTwoFiles(parent: FakeFolder, name = 'merged-model') {
  const output = await createFolderOutput({ parent: parent.asHandle(), name });
  const a = await output.createFile('model-00001-of-00002.safetensors');
  await a.write(enc.encode('first half, '));
  await a.write(enc.encode('second half'));
  await a.close();
  const b = await output.createFile('config.json');
  await b.write(enc.encode('{}'));
  // config.json is left open: commit closes it.
  return output;
}

describe('folder output', () => {
  it('writes under temporary names and renames every file at commit', async () => {
    const parent = new FakeFolder('models');
    const output = await writeTwoFiles(parent);
    const during = [...parent.tree().keys()].sort();
    // The open file is still empty under its temporary name; its bytes are in the browser's swap file.
    expect(during).toEqual([
      `merged-model/${partialFileName('config.json')}`,
      `merged-model/${partialFileName('config.json')}.crswap`,
      `merged-model/${partialFileName('model-00001-of-00002.safetensors')}`,
    ]);
    expect(during.every((n) => isPartialEntry(n.slice('merged-model/'.length)))).toBe(true);
    await output.commit();
    const after = parent.tree();
    expect([...after.keys()].sort()).toEqual([
      'merged-model/config.json',
      'merged-model/model-00001-of-00002.safetensors',
    ]);
    expect(new TextDecoder().decode(after.get('merged-model/model-00001-of-00002.safetensors'))).toBe(
      'first half, second half',
    );
    expect(await output.files()).toEqual([
      { name: 'config.json', size: 2 },
      { name: 'model-00001-of-00002.safetensors', size: 23 },
    ]);
  });

  it('copies to the final name where the browser cannot move a file, with the same result', async () => {
    const parent = new FakeFolder('models');
    const move = FakeFile.prototype.move;
    // biome-ignore lint/suspicious/noExplicitAny: taking the method away, as in a browser without it.
    (FakeFile.prototype as any).move = undefined;
    try {
      const output = await writeTwoFiles(parent);
      await output.commit();
    } finally {
      FakeFile.prototype.move = move;
    }
    expect([...parent.tree().keys()].sort()).toEqual([
      'merged-model/config.json',
      'merged-model/model-00001-of-00002.safetensors',
    ]);
    expect(new TextDecoder().decode(parent.tree().get('merged-model/config.json'))).toBe('{}');
  });

  it('abort removes the subfolder and everything in it; the picked folder keeps the rest', async () => {
    const parent = new FakeFolder('models').put(new Map([['notes.txt', enc.encode('mine')]]));
    const output = await writeTwoFiles(parent);
    await output.abort();
    expect([...parent.tree().keys()]).toEqual(['notes.txt']);
    await expect(output.createFile('x.json')).rejects.toThrow(/after the run ended/);
  });

  it('never writes over an existing folder or file, and finds the next free name', async () => {
    const parent = new FakeFolder('models');
    await (await writeTwoFiles(parent)).commit();
    const before = parent.tree();
    await expect(createFolderOutput({ parent: parent.asHandle(), name: 'merged-model' })).rejects.toThrow(
      OutputFolderError,
    );
    await expect(createFolderOutput({ parent: parent.asHandle(), name: 'merged-model' })).rejects.toThrow(
      'models/merged-model already exists; a merge never writes over an earlier output',
    );
    expect(parent.tree()).toEqual(before);
    parent.put(new Map([['merged-model-2', enc.encode('a file')]]));
    expect(await freeFolderName(parent.asHandle(), 'merged-model')).toBe('merged-model-3');
    expect(await freeFolderName(parent.asHandle(), 'other')).toBe('other');
    await expect(freeFolderName(parent.asHandle(), '../up')).rejects.toThrow(/not a plain folder name/);
  });

  it('clean-up after Cancel removes a partial subfolder only', async () => {
    const parent = new FakeFolder('models');
    await writeTwoFiles(parent, 'partial');
    await (await writeTwoFiles(parent, 'finished')).commit();
    const user = await parent.getDirectoryHandle('users', { create: true });
    user.put(
      new Map([
        [partialFileName('a.bin'), enc.encode('x')],
        ['b.bin', enc.encode('y')],
      ]),
    );
    const target = (name: string) => ({ parent: parent.asHandle(), name });
    expect(await removePartialFolderOutput(target('partial'))).toBe('removed');
    expect(await removePartialFolderOutput(target('finished'))).toBe('kept');
    expect(await removePartialFolderOutput(target('users'))).toBe('kept');
    expect(await removePartialFolderOutput(target('gone'))).toBe('absent');
    // What a start-up clean-up reads of a run's subfolder: a committed output has only final names.
    expect(await folderOutputState(target('finished'))).toBe('finished');
    expect(await folderOutputState(target('users'))).toBe('partial');
    expect(await folderOutputState(target('gone'))).toBe('absent');
    expect([...parent.children.keys()].sort()).toEqual(['finished', 'users']);
  });

  it('checkpoints a file once the bytes since the last checkpoint reach its size, and says when all is durable', async () => {
    const parent = new FakeFolder('models');
    const output = await createFolderOutput({ parent: parent.asHandle(), name: 'merged-model' });
    const sink = await output.createFile('model.safetensors');
    const file = () =>
      (parent.children.get('merged-model') as FakeFolder).children.get(
        partialFileName('model.safetensors'),
      ) as FakeFile;
    const bytes = (n: number, fill: number) => new Uint8Array(n).fill(fill);
    await sink.write(bytes(CHECKPOINT_MIN_BYTES - 1, 1));
    await sink.flush?.();
    // Below the minimum: still in the swap file, nothing a reload would keep.
    expect(output.durable()).toBe(false);
    expect(file().bytes.length).toBe(0);
    await sink.write(bytes(1, 2));
    await sink.flush?.();
    expect(output.durable()).toBe(true);
    expect(file().bytes.length).toBe(CHECKPOINT_MIN_BYTES);
    // The next checkpoint waits for as many bytes again as the file holds.
    await sink.write(bytes(CHECKPOINT_MIN_BYTES - 10, 3));
    await sink.flush?.();
    expect(output.durable()).toBe(false);
    expect(file().bytes.length).toBe(CHECKPOINT_MIN_BYTES);
    await sink.write(bytes(10, 4));
    await sink.flush?.();
    expect(output.durable()).toBe(true);
    expect(file().bytes.length).toBe(2 * CHECKPOINT_MIN_BYTES);
    // Written after the checkpoint at the end, not over the start.
    expect(file().bytes[CHECKPOINT_MIN_BYTES - 1]).toBe(2);
    expect(file().bytes[2 * CHECKPOINT_MIN_BYTES - 1]).toBe(4);
    // A closed file is durable.
    await sink.write(bytes(5, 5));
    expect(output.durable()).toBe(false);
    await sink.close();
    expect(output.durable()).toBe(true);
  });

  it('after a reload reopens the temporary files, cuts the one in progress to the recorded end, and commits every file', async () => {
    const parent = new FakeFolder('models');
    const target = { parent: parent.asHandle(), name: 'merged-model' };
    const first = await createFolderOutput(target);
    const done = await first.createFile('model-00001-of-00002.safetensors');
    await done.write(enc.encode('shard one'));
    await done.close();
    const inProgress = await first.createFile('model-00002-of-00002.safetensors');
    await inProgress.write(enc.encode('kept'));
    await inProgress.close();
    // The "reload": the run's stream on a reopened file is dropped, its swap file left behind.
    const again = await (await target.parent.getDirectoryHandle('merged-model')).getFileHandle(
      partialFileName('model-00002-of-00002.safetensors'),
    );
    const dropped = await again.createWritable({ keepExistingData: true });
    await dropped.seek(4);
    await dropped.write(enc.encode(' lost'));
    expect(await partialFolderFiles(target)).toEqual([
      { name: 'model-00001-of-00002.safetensors', size: 9 },
      { name: 'model-00002-of-00002.safetensors', size: 4 },
    ]);

    const resumed = await openFolderOutput(target);
    await expect(resumed.reopenFile('model-00002-of-00002.safetensors', 5)).rejects.toThrow(
      'models/merged-model: .model-00002-of-00002.safetensors.l2s-partial holds 4 bytes, fewer than the 5 already recorded as written',
    );
    await expect(resumed.reopenFile('config.json', 0)).rejects.toThrow(
      'models/merged-model: .config.json.l2s-partial is gone, so the run cannot continue',
    );
    // The journal recorded 2 bytes of the second shard: the rest belongs to an unfinished tensor.
    const sink = await resumed.reopenFile('model-00002-of-00002.safetensors', 2);
    await sink.write(enc.encode('-shard two'));
    const config = await resumed.createFile('config.json');
    await config.write(enc.encode('{}'));
    await resumed.commit();
    expect(new TextDecoder().decode(parent.tree().get('merged-model/model-00002-of-00002.safetensors'))).toBe(
      'ke-shard two',
    );
    expect([...(parent.children.get('merged-model') as FakeFolder).children.keys()].sort()).toEqual([
      'config.json',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
    ]);
    expect(await resumed.files()).toEqual([
      { name: 'config.json', size: 2 },
      { name: 'model-00001-of-00002.safetensors', size: 9 },
      { name: 'model-00002-of-00002.safetensors', size: 12 },
    ]);
    await expect(openFolderOutput({ parent: parent.asHandle(), name: 'gone' })).rejects.toThrow(
      'models/gone is gone (moved, renamed or deleted), so its partial files cannot be continued',
    );
    expect(await partialFolderFiles({ parent: parent.asHandle(), name: 'gone' })).toBeUndefined();
  });
});
