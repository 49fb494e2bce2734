import { constants, type Stats } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import type { ByteSource } from '../formats/byte-source';
import { fsErrorText } from './fs-errors';

/** A file opened for positioned reads. Close it when the run ends. */
export interface FileByteSource extends ByteSource {
  /** The open file's descriptor: worker threads of this process read through it (kernel-threads.ts). */
  readonly fd: number;
  close(): Promise<void>;
}

/** A model file that is not a regular file (a folder, a FIFO, a device) or cannot be opened. */
export class ModelFileError extends Error {
  override name = 'ModelFileError';
}

export function fileKind(st: Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

/**
 * Opens `path` for reading. Only regular files: it is checked before opening (opening a FIFO for
 * reading blocks until a writer comes, beyond any signal) and again on the open handle, which is
 * opened non-blocking in case the path changed in between.
 */
export async function fileByteSource(path: string, name = path): Promise<FileByteSource> {
  const refuse = (st: Stats) =>
    new ModelFileError(`${name}: is ${fileKind(st)}, not a regular file; l2s-merge reads only files`);
  let before: Stats;
  try {
    before = await stat(path);
  } catch (e) {
    throw new ModelFileError(`${name}: cannot open it (${fsErrorText(e)})`);
  }
  if (!before.isFile()) throw refuse(before);
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    throw new ModelFileError(`${name}: cannot open it (${fsErrorText(e)})`);
  }
  const opened = await handle.stat();
  if (!opened.isFile()) {
    await handle.close();
    throw refuse(opened);
  }
  const size = opened.size;
  const readInto = async (offset: number, target: Uint8Array) => {
    const length = target.byteLength;
    if (offset < 0 || offset + length > size) {
      throw new RangeError(
        `${name}: read of ${length} bytes at ${offset} is outside the file (${size} bytes)`,
      );
    }
    let done = 0;
    while (done < length) {
      let bytesRead: number;
      try {
        ({ bytesRead } = await handle.read(target, done, length - done, offset + done));
      } catch (e) {
        throw new ModelFileError(`${name}: reading failed (${fsErrorText(e)})`);
      }
      if (bytesRead === 0)
        throw new RangeError(`${name}: file ended at ${offset + done} (was ${size} bytes)`);
      done += bytesRead;
    }
  };
  return {
    name,
    size,
    async read(offset, length) {
      if (length < 0) {
        throw new RangeError(
          `${name}: read of ${length} bytes at ${offset} is outside the file (${size} bytes)`,
        );
      }
      const buf = new Uint8Array(length);
      await readInto(offset, buf);
      return buf;
    },
    readInto: (offset, target) => readInto(offset, target),
    fd: handle.fd,
    close: () => handle.close(),
  };
}
