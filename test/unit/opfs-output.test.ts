/**
 * The OPFS output's commit and repair on an in-memory origin private file system with Chromium's
 * semantics (handles that move, one sync access handle per file, a byte quota): a commit cut short
 * after any number of moved files is never listed, and the next start puts the files back into
 * the run; a full quota names the file and leaves nothing of the run.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  createOpfsOutput,
  deleteOutput,
  listOutputs,
  OUTPUT_MANIFEST,
  outputFiles,
  partialRunFiles,
  repairOutputs,
  stallCommitsAfter,
} from '../../src/worker/opfs-output';

class Quota {
  used = 0;
  constructor(readonly bytes = Number.POSITIVE_INFINITY) {}
}

class FakeFileHandle {
  readonly kind = 'file';
  bytes = new Uint8Array(0);
  locked = false;
  lastModified = Date.now();
  constructor(
    public name: string,
    public parent: FakeDirectory,
    private readonly quota: Quota,
  ) {}

  async getFile(): Promise<File> {
    return new File([this.bytes as Uint8Array<ArrayBuffer>], this.name, { lastModified: this.lastModified });
  }

  async createSyncAccessHandle() {
    if (this.locked) throw new DOMException('locked', 'NoModificationAllowedError');
    this.locked = true;
    const resize = (size: number) => {
      if (this.quota.used - this.bytes.length + size > this.quota.bytes) {
        throw new DOMException('quota', 'QuotaExceededError');
      }
      const next = new Uint8Array(size);
      next.set(this.bytes.subarray(0, Math.min(size, this.bytes.length)));
      this.quota.used += size - this.bytes.length;
      this.bytes = next;
    };
    return {
      write: (buffer: Uint8Array, options?: { at?: number }) => {
        const at = options?.at ?? 0;
        if (at + buffer.byteLength > this.bytes.length) resize(at + buffer.byteLength);
        this.bytes.set(buffer, at);
        return buffer.byteLength;
      },
      getSize: () => this.bytes.length,
      truncate: (size: number) => resize(size),
      flush: () => {},
      close: () => {
        this.locked = false;
      },
    };
  }

  async move(destination: FakeDirectory, newName = this.name): Promise<void> {
    this.parent.children.delete(this.name);
    this.name = newName;
    this.parent = destination;
    destination.children.set(newName, this);
  }
}

class FakeDirectory {
  readonly kind = 'directory';
  readonly children = new Map<string, FakeDirectory | FakeFileHandle>();
  constructor(private readonly quota: Quota) {}

  async getDirectoryHandle(name: string, options?: { create?: boolean }): Promise<FakeDirectory> {
    const found = this.children.get(name);
    if (found instanceof FakeDirectory) return found;
    if (found) throw new DOMException(name, 'TypeMismatchError');
    if (!options?.create) throw new DOMException(name, 'NotFoundError');
    const d = new FakeDirectory(this.quota);
    this.children.set(name, d);
    return d;
  }

  async getFileHandle(name: string, options?: { create?: boolean }): Promise<FakeFileHandle> {
    const found = this.children.get(name);
    if (found instanceof FakeFileHandle) return found;
    if (found) throw new DOMException(name, 'TypeMismatchError');
    if (!options?.create) throw new DOMException(name, 'NotFoundError');
    const f = new FakeFileHandle(name, this, this.quota);
    this.children.set(name, f);
    return f;
  }

  async removeEntry(name: string, options?: { recursive?: boolean }): Promise<void> {
    const found = this.children.get(name);
    if (!found) throw new DOMException(name, 'NotFoundError');
    if (found instanceof FakeDirectory && found.children.size > 0 && !options?.recursive) {
      throw new DOMException(name, 'InvalidModificationError');
    }
    this.release(found);
    this.children.delete(name);
  }

  private release(entry: FakeDirectory | FakeFileHandle): void {
    if (entry instanceof FakeFileHandle) this.quota.used -= entry.bytes.length;
    else for (const child of entry.children.values()) this.release(child);
  }

  async *keys(): AsyncIterable<string> {
    for (const k of [...this.children.keys()]) yield k;
  }

  /** name -> file names (or nested trees), for assertions. */
  tree(): Record<string, unknown> {
    return Object.fromEntries(
      [...this.children].map(([k, v]) => [k, v instanceof FakeDirectory ? v.tree() : v.bytes.length]),
    );
  }
}

let root: FakeDirectory;
let quota: Quota;

function useOpfs(bytes?: number): void {
  quota = new Quota(bytes);
  root = new FakeDirectory(quota);
  vi.stubGlobal('navigator', { storage: { getDirectory: async () => root } });
}

beforeEach(() => useOpfs());
afterEach(() => {
  stallCommitsAfter(undefined);
  vi.unstubAllGlobals();
});

const FILES: [string, number][] = [
  ['model-00001-of-00002.safetensors', 5000],
  ['model-00002-of-00002.safetensors', 3000],
  ['model.safetensors.index.json', 200],
  ['config.json', 100],
];

async function writeRun(id: string): Promise<Awaited<ReturnType<typeof createOpfsOutput>>> {
  const output = await createOpfsOutput(id);
  for (const [name, size] of FILES) {
    const sink = await output.createFile(name);
    await sink.write(new Uint8Array(size).fill(name.length));
    await sink.close();
  }
  return output;
}

describe('OPFS output commit', () => {
  it('a finished commit lists the output with its files and nothing else', async () => {
    const output = await writeRun('run-a');
    await output.commit();
    const [listed, ...others] = await listOutputs();
    expect(others).toEqual([]);
    expect(listed.id).toBe('run-a');
    expect(listed.files).toEqual(
      FILES.map(([name, size]) => ({ name, size })).sort((a, b) => a.name.localeCompare(b.name)),
    );
    expect((await outputFiles('run-a')).map((f) => f.name)).not.toContain(OUTPUT_MANIFEST);
    expect(root.tree().runs).toEqual({});
  });

  for (let moved = 1; moved <= FILES.length; moved++) {
    it(`a commit cut short after ${moved} moved file(s) is not listed, and goes back to its run`, async () => {
      stallCommitsAfter(moved);
      const output = await writeRun('run-b');
      void output.commit();
      await vi.waitFor(() => {
        const outputs = root.tree().outputs as Record<string, Record<string, number>> | undefined;
        expect(Object.keys(outputs?.['run-b'] ?? {}).length).toBe(moved);
      });
      // The tab is gone from here on; what a new start sees:
      stallCommitsAfter(undefined);
      expect(await listOutputs()).toEqual([]);
      await expect(outputFiles('run-b')).rejects.toThrow('output run-b does not exist');
      expect(await repairOutputs()).toEqual({ restored: ['run-b'], removed: [], adopted: [] });
      expect(root.tree().outputs).toEqual({});
      const back = await partialRunFiles('run-b');
      expect(back?.map((f) => [f.name, f.size]).sort()).toEqual([...FILES].sort());
    });
  }

  it('a run under way is left alone by the repair', async () => {
    stallCommitsAfter(1);
    const output = await writeRun('run-c');
    void output.commit();
    await vi.waitFor(() => expect(Object.keys(root.tree().outputs ?? {})).toEqual(['run-c']));
    expect(await repairOutputs(['run-c'])).toEqual({ restored: [], removed: [], adopted: [] });
    expect(Object.keys((root.tree().outputs as Record<string, object>)['run-c'])).toHaveLength(1);
  });

  it('a delete cut short is removed; an output from before manifests is kept', async () => {
    await (await writeRun('run-d')).commit();
    const d = await (await root.getDirectoryHandle('outputs')).getDirectoryHandle('run-d');
    // deleteOutput marks the folder and removes the manifest first; stop right there.
    await d.getFileHandle('.l2s-deleting', { create: true });
    await d.removeEntry(OUTPUT_MANIFEST);
    const legacy = await (await root.getDirectoryHandle('outputs')).getDirectoryHandle('legacy', {
      create: true,
    });
    const access = await (
      await legacy.getFileHandle('model.safetensors', { create: true })
    ).createSyncAccessHandle();
    access.write(new Uint8Array(10), { at: 0 });
    access.close();
    expect(await repairOutputs()).toEqual({ restored: [], removed: ['run-d'], adopted: ['legacy'] });
    expect((await listOutputs()).map((o) => [o.id, o.files])).toEqual([
      ['legacy', [{ name: 'model.safetensors', size: 10 }]],
    ]);
    await deleteOutput('legacy');
    expect(root.tree().outputs).toEqual({});
  });
});

describe('OPFS output over the quota', () => {
  it('names the file being written; abort leaves nothing', async () => {
    useOpfs(6000);
    const output = await createOpfsOutput('run-q');
    const first = await output.createFile('model-00001-of-00002.safetensors');
    await first.write(new Uint8Array(5000));
    await first.close();
    const second = await output.createFile('model-00002-of-00002.safetensors');
    const error = (await second.write(new Uint8Array(3000)).catch((e: Error) => e)) as Error;
    expect(error.name).toBe('OutputStorageFullError');
    expect(error.message).toBe(
      'Browser storage is full while writing model-00002-of-00002.safetensors. The merge was stopped and its ' +
        'partial files deleted; your models and earlier outputs are untouched. Free space (delete models or ' +
        'outputs you no longer need, or press "Keep storage" to allow more) and run the merge again.',
    );
    await output.abort();
    expect(root.tree()).toEqual({ runs: {} });
    expect(quota.used).toBe(0);
  });

  it('a commit whose file list does not fit leaves nothing in outputs', async () => {
    useOpfs(8300);
    const output = await writeRun('run-r');
    const error = (await output.commit().catch((e: Error) => e)) as Error;
    expect(error.name).toBe('OutputStorageFullError');
    expect(error.message).toMatch(/^Browser storage is full while writing the file list of output run-r\./);
    expect(root.tree().outputs).toEqual({});
    await output.abort();
    expect(root.tree().runs).toEqual({});
  });
});
