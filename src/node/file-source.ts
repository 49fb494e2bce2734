import { open } from 'node:fs/promises';
import type { ByteSource } from '../formats/byte-source';

/** A file opened for positioned reads. Close it when the run ends. */
export interface FileByteSource extends ByteSource {
  close(): Promise<void>;
}

export async function fileByteSource(path: string, name = path): Promise<FileByteSource> {
  const handle = await open(path, 'r');
  const { size } = await handle.stat();
  const readInto = async (offset: number, target: Uint8Array) => {
    const length = target.byteLength;
    if (offset < 0 || offset + length > size) {
      throw new RangeError(
        `${name}: read of ${length} bytes at ${offset} is outside the file (${size} bytes)`,
      );
    }
    let done = 0;
    while (done < length) {
      const { bytesRead } = await handle.read(target, done, length - done, offset + done);
      if (bytesRead === 0)
        throw new RangeError(`${name}: file ended at ${offset + done} (was ${size} bytes)`);
      done += bytesRead;
    }
  };
  return {
    name,
    size,
    async read(offset, length) {
      const buf = new Uint8Array(length);
      await readInto(offset, buf);
      return buf;
    },
    readInto: (offset, target) => readInto(offset, target),
    close: () => handle.close(),
  };
}
