/**
 * The File System Access API's handles in memory, with Chromium's semantics where the code depends
 * on them: createWritable writes into a swap file (`<name>.crswap`, a copy of the file with
 * `keepExistingData`, its cursor at 0) that replaces the file on close and vanishes on abort (a
 * stream dropped by a reload leaves it behind, and the file as it was); lastModified moves on every change; `move(newName)` renames (can be taken
 * away to test browsers without it); queryPermission answers what the test sets.
 */

let clock = 1_700_000_000_000;

export class FakeFile {
  readonly kind = 'file';
  bytes = new Uint8Array(0);
  lastModified = ++clock;
  constructor(
    public name: string,
    public parent: FakeFolder,
  ) {}

  async getFile(): Promise<File> {
    return new File([this.bytes as Uint8Array<ArrayBuffer>], this.name, { lastModified: this.lastModified });
  }

  write(bytes: Uint8Array): void {
    this.bytes = bytes.slice();
    this.lastModified = ++clock;
  }

  async createWritable(options?: { keepExistingData?: boolean }) {
    const swapName = `${this.name}.crswap`;
    const swap = new FakeFile(swapName, this.parent);
    if (options?.keepExistingData) swap.bytes = this.bytes.slice();
    this.parent.children.set(swapName, swap);
    // The swap's bytes and the write cursor (0 at the start, as in Chromium, even with the data kept).
    let data = swap.bytes;
    let position = 0;
    const writeAt = (bytes: Uint8Array) => {
      const end = position + bytes.length;
      if (end > data.length) {
        const grown = new Uint8Array(end);
        grown.set(data);
        data = grown;
      }
      data.set(bytes, position);
      position = end;
      swap.bytes = data;
    };
    const finish = () => {
      this.parent.children.delete(swapName);
      this.write(data);
    };
    // A real WritableStream (pipeTo needs one) with FileSystemWritableFileStream's write(), seek(), truncate().
    const stream = new WritableStream<Uint8Array>({
      write: (chunk) => writeAt(chunk),
      close: finish,
      abort: () => {
        this.parent.children.delete(swapName);
      },
    });
    return Object.assign(stream, {
      async write(chunk: Uint8Array) {
        const writer = stream.getWriter();
        try {
          await writer.write(chunk);
        } finally {
          writer.releaseLock();
        }
      },
      async seek(at: number) {
        position = at;
      },
      async truncate(size: number) {
        const cut = new Uint8Array(size);
        cut.set(data.subarray(0, size));
        data = cut;
        swap.bytes = data;
        if (position > size) position = size;
      },
    });
  }

  async move(newName: string): Promise<void> {
    if (this.parent.children.has(newName)) throw new DOMException('exists', 'InvalidModificationError');
    this.parent.children.delete(this.name);
    this.name = newName;
    this.parent.children.set(newName, this);
  }
}

export class FakeFolder {
  readonly kind = 'directory';
  readonly children = new Map<string, FakeFolder | FakeFile>();
  permission: PermissionState = 'granted';
  constructor(public name: string) {}

  async queryPermission(): Promise<PermissionState> {
    return this.permission;
  }

  async isSameEntry(other: unknown): Promise<boolean> {
    return other === this;
  }

  async getDirectoryHandle(name: string, options?: { create?: boolean }): Promise<FakeFolder> {
    const found = this.children.get(name);
    if (found instanceof FakeFolder) return found;
    if (found) throw new DOMException('a file', 'TypeMismatchError');
    if (!options?.create) throw new DOMException(`${name} not found`, 'NotFoundError');
    const d = new FakeFolder(name);
    this.children.set(name, d);
    return d;
  }

  async getFileHandle(name: string, options?: { create?: boolean }): Promise<FakeFile> {
    if (this.permission !== 'granted') throw new DOMException('not allowed', 'NotAllowedError');
    const found = this.children.get(name);
    if (found instanceof FakeFile) return found;
    if (found) throw new DOMException('a folder', 'TypeMismatchError');
    if (!options?.create) throw new DOMException(`${name} not found`, 'NotFoundError');
    const f = new FakeFile(name, this);
    this.children.set(name, f);
    return f;
  }

  async removeEntry(name: string, options?: { recursive?: boolean }): Promise<void> {
    const found = this.children.get(name);
    if (!found) throw new DOMException(`${name} not found`, 'NotFoundError');
    if (found instanceof FakeFolder && found.children.size > 0 && !options?.recursive) {
      throw new DOMException('not empty', 'InvalidModificationError');
    }
    this.children.delete(name);
  }

  async *keys(): AsyncIterable<string> {
    for (const k of [...this.children.keys()]) yield k;
  }

  async *values(): AsyncIterable<FakeFolder | FakeFile> {
    for (const v of [...this.children.values()]) yield v;
  }

  /** Adds files (name -> bytes) at the top of this folder. */
  put(files: Map<string, Uint8Array>): this {
    for (const [name, bytes] of files) {
      const f = new FakeFile(name, this);
      f.write(bytes);
      this.children.set(name, f);
    }
    return this;
  }

  /** Every file's bytes by relative path. */
  tree(prefix = ''): Map<string, Uint8Array> {
    const out = new Map<string, Uint8Array>();
    for (const [name, child] of this.children) {
      if (child instanceof FakeFile) out.set(prefix + name, child.bytes);
      else for (const [n, b] of child.tree(`${prefix}${name}/`)) out.set(n, b);
    }
    return out;
  }

  asHandle(): FileSystemDirectoryHandle {
    return this as unknown as FileSystemDirectoryHandle;
  }
}
