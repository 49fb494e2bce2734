/**
 * Random-access bytes: a Blob in the browser, a file in Node, a fetch range reader.
 * Everything that reads model files goes through this, so parsing is written once.
 */
export interface ByteSource {
  /** Shown in errors: a file path or a library name such as `my-model/model-00001-of-00002.safetensors`. */
  readonly name: string;
  readonly size: number;
  /** Exactly `length` bytes from `offset`; rejects if the range is outside the source. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Exactly `target.byteLength` bytes from `offset` into `target` (a buffer reused read after read,
   * with no allocation). Optional: `readInto` below falls back to `read` and a copy.
   */
  readInto?(offset: number, target: Uint8Array): Promise<void>;
  /**
   * The Blobs the bytes lie in, in order, every one but the last `chunkBytes` long: Blobs are
   * structured-cloneable, so a browser kernel worker (src/worker/kernel-threads.ts) reads them itself.
   */
  readonly blobs?: BlobChunks;
}

export interface BlobChunks {
  readonly chunks: readonly Blob[];
  readonly chunkBytes: number;
}

/** Positioned read into a caller's buffer, through `readInto` where the source has it. */
export async function readInto(source: ByteSource, offset: number, target: Uint8Array): Promise<void> {
  if (source.readInto) return source.readInto(offset, target);
  target.set(await source.read(offset, target.byteLength));
}

export function blobByteSource(blob: Blob, name: string): ByteSource {
  return {
    name,
    size: blob.size,
    blobs: { chunks: [blob], chunkBytes: blob.size },
    async read(offset, length) {
      if (offset < 0 || length < 0 || offset + length > blob.size) {
        throw new RangeError(
          `${name}: read of ${length} bytes at ${offset} is outside the file (${blob.size} bytes)`,
        );
      }
      return new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
    },
  };
}

export function bytesByteSource(bytes: Uint8Array, name: string): ByteSource {
  return {
    name,
    size: bytes.byteLength,
    async read(offset, length) {
      if (offset < 0 || length < 0 || offset + length > bytes.byteLength) {
        throw new RangeError(
          `${name}: read of ${length} bytes at ${offset} is outside the file (${bytes.byteLength} bytes)`,
        );
      }
      return bytes.subarray(offset, offset + length);
    },
  };
}
