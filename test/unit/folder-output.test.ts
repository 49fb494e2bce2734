/**
 * Output written straight into a folder the user picked: temporary names while writing, final names
 * only at commit (by move, or by copy where a browser has no move), the run's subfolder removed on
 * abort, an existing folder never written over, and clean-up after Cancel that never touches a
 * finished output or the user's files.
 */
import { describe, expect, it } from 'vitest';
import {
  createFolderOutput,
  freeFolderName,
  isPartialEntry,
  OutputFolderError,
  partialFileName,
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
    expect([...parent.children.keys()].sort()).toEqual(['finished', 'users']);
  });
});
