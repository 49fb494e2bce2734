import { open } from 'node:fs/promises';
import type { ByteSource } from '../formats/byte-source';

/** A file opened for positioned reads. Close it when the run ends. */
export interface FileByteSource extends ByteSource {
  close(): Promise<void>;
}

export async function fileByteSource(path: string, name = path): Promise<FileByteSource> {
  const handle = await open(path, 'r');
  const { size } = await handle.stat();
  return {
    name,
    size,
    async read(offset, length) {
      if (offset < 0 || length < 0 || offset + length > size) {
        throw new RangeError(
          `${name}: read of ${length} bytes at ${offset} is outside the file (${size} bytes)`,
        );
      }
      const buf = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(buf, done, length - done, offset + done);
        if (bytesRead === 0)
          throw new RangeError(`${name}: file ended at ${offset + done} (was ${size} bytes)`);
        done += bytesRead;
      }
      return buf;
    },
    close: () => handle.close(),
  };
}
