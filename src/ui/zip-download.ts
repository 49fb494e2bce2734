/**
 * "Download all": the output folder as one zip, built by client-zip (stored entries: safetensors do
 * not compress, and a stored zip streams at read speed; Zip64 past 4 GiB).
 *
 * Where the File System Access API offers a save picker (Chromium), the zip streams from OPFS
 * straight into the chosen file through `createWritable`, so a multi-GB output needs no memory.
 * Elsewhere the zip is built as a Blob and downloaded through an object URL, only up to
 * MAX_IN_MEMORY_ZIP_BYTES; larger outputs are refused with what to do instead. (A service worker
 * serving the stream as a download would lift that limit too; it is not written yet.)
 */
import { downloadZip, predictLength } from 'client-zip';

/** Largest zip built in memory where it cannot be streamed to a file. */
export const MAX_IN_MEMORY_ZIP_BYTES = 1024 * 1024 * 1024;

export class ZipTooLargeError extends Error {
  override name = 'ZipTooLargeError';
}

export type ZipRoute = 'stream-to-file' | 'in-memory';

export interface ZipSaved {
  route: ZipRoute;
  bytes: number;
  /** False when the user closed the save picker. */
  saved: boolean;
}

interface SavePickerWindow {
  showSaveFilePicker(options: {
    suggestedName: string;
    types: { description: string; accept: Record<string, string[]> }[];
  }): Promise<FileSystemFileHandle>;
}

interface WritableFileHandle {
  createWritable(): Promise<WritableStream<Uint8Array>>;
}

/** The zip's exact length, from the files' names and sizes. */
export function zipLength(files: readonly File[]): number {
  return Number(predictLength(files.map((f) => ({ name: f.name, size: f.size }))));
}

export async function saveZip(files: readonly File[], zipName: string): Promise<ZipSaved> {
  const bytes = zipLength(files);
  const picker = globalThis as unknown as Partial<SavePickerWindow>;
  if (typeof picker.showSaveFilePicker === 'function') {
    let handle: FileSystemFileHandle;
    try {
      handle = await picker.showSaveFilePicker({
        suggestedName: zipName,
        types: [{ description: 'Zip archive', accept: { 'application/zip': ['.zip'] } }],
      });
    } catch (e) {
      if (e instanceof DOMException && e.name === 'AbortError')
        return { route: 'stream-to-file', bytes, saved: false };
      throw e;
    }
    const writable = await (handle as unknown as WritableFileHandle).createWritable();
    const body = downloadZip(files).body;
    if (!body) throw new Error('the zip stream could not be opened');
    // pipeTo closes the file on success and aborts it (leaving the earlier content) on failure.
    await body.pipeTo(writable);
    return { route: 'stream-to-file', bytes, saved: true };
  }
  if (bytes > MAX_IN_MEMORY_ZIP_BYTES) {
    throw new ZipTooLargeError(
      `the zip would be ${(bytes / 1e9).toFixed(1)} GB, too large to build in memory, and this browser cannot ` +
        'stream it to a file: download the files one by one, or use "Save folder" in Chrome or Edge',
    );
  }
  const blob = await downloadZip(files).blob();
  const url = URL.createObjectURL(new Blob([blob], { type: 'application/zip' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = zipName;
  a.dataset.testid = 'download-zip-link';
  a.click();
  // The download has its own reference to the bytes once it starts.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return { route: 'in-memory', bytes, saved: true };
}
