/**
 * Importing a model folder the user picked or dropped: the files a merge needs are copied into the
 * library chunk by chunk; anything else in the folder (READMEs, pickles, images) is left out.
 */
import type { ModelLibrary, ModelRecord, ModelSource } from './library';

/** Files of a model folder the library keeps (top level of the folder only). */
export function isModelFile(name: string): boolean {
  if (name.includes('/')) return false;
  return (
    name === 'config.json' ||
    name === 'generation_config.json' ||
    name.endsWith('.safetensors') ||
    name.endsWith('.safetensors.index.json') ||
    name.startsWith('tokenizer') ||
    name === 'vocab.json' ||
    name === 'vocab.txt' ||
    name === 'merges.txt' ||
    name === 'special_tokens_map.json' ||
    name === 'added_tokens.json' ||
    name.startsWith('chat_template')
  );
}

export interface FolderFile {
  /** Path relative to the model folder. */
  name: string;
  blob: Blob;
}

export interface ImportProgress {
  model: string;
  file: string;
  fileBytesDone: number;
  fileBytes: number;
  bytesDone: number;
  bytesTotal: number;
}

export class ImportError extends Error {
  override name = 'ImportError';
}

export class ImportAbortedError extends Error {
  override name = 'AbortError';
  constructor(model: string) {
    super(`import of ${model} was cancelled; nothing of it was kept`);
  }
}

/**
 * Splits what `<input webkitdirectory>` yields (`folder/sub/file`) into the folder's name and its
 * files relative to it. Every file must be under one top-level folder.
 */
export function filesFromDirectoryInput(files: readonly File[]): { folder: string; files: FolderFile[] } {
  if (files.length === 0) throw new ImportError('the chosen folder is empty');
  const out: FolderFile[] = [];
  let folder: string | undefined;
  for (const file of files) {
    const path = file.webkitRelativePath || file.name;
    const slash = path.indexOf('/');
    const top = slash < 0 ? '' : path.slice(0, slash);
    if (folder === undefined) folder = top;
    else if (folder !== top)
      throw new ImportError(`choose one model folder at a time (got ${folder} and ${top})`);
    out.push({ name: slash < 0 ? path : path.slice(slash + 1), blob: file });
  }
  return { folder: folder || 'model', files: out };
}

/**
 * Checks that the kept files make a model: a config.json and at least one safetensors file. `where`
 * says what `folder` is in the messages: a folder the user chose, or a hub repo.
 */
export function selectModelFiles<F extends { name: string }>(
  folder: string,
  files: readonly F[],
  where: 'folder' | 'repo' = 'folder',
): F[] {
  const kept = files.filter((f) => isModelFile(f.name));
  if (!kept.some((f) => f.name === 'config.json')) {
    throw new ImportError(
      where === 'folder'
        ? `${folder}: no config.json at the top of the folder; choose the model's own folder`
        : `${folder}: the repo has no config.json at its top level`,
    );
  }
  if (!kept.some((f) => f.name.endsWith('.safetensors'))) {
    throw new ImportError(
      `${folder}: no *.safetensors file at the top of the ${where} (pytorch .bin weights are not supported; convert them to safetensors first)`,
    );
  }
  return kept.sort((a, b) => a.name.localeCompare(b.name));
}

export async function importFolder(
  library: ModelLibrary,
  folder: string,
  files: readonly FolderFile[],
  opts: { signal?: AbortSignal; onProgress?: (p: ImportProgress) => void; source?: ModelSource } = {},
): Promise<ModelRecord> {
  const kept = selectModelFiles(folder, files);
  const job = await library.beginImport({
    name: folder,
    source: opts.source ?? { kind: 'folder' },
    resumable: false,
    files: kept.map((f) => ({ name: f.name, size: f.blob.size })),
  });
  const bytesTotal = kept.reduce((s, f) => s + f.blob.size, 0);
  let bytesDone = 0;
  try {
    for (const { name, blob } of kept) {
      if (blob.size === 0) await job.completeEmptyFile(name);
      for (let at = 0; at < blob.size; at += library.chunkBytes) {
        if (opts.signal?.aborted) throw new ImportAbortedError(job.name);
        // Copied into memory first: a Blob that still points at the user's file is stored by
        // Chromium without counting it against the quota, and would break if the file changed.
        const chunk = new Blob([
          await blob.slice(at, Math.min(at + library.chunkBytes, blob.size)).arrayBuffer(),
        ]);
        await job.appendChunk(name, chunk);
        bytesDone += chunk.size;
        opts.onProgress?.({
          model: job.name,
          file: name,
          fileBytesDone: at + chunk.size,
          fileBytes: blob.size,
          bytesDone,
          bytesTotal,
        });
      }
    }
    if (opts.signal?.aborted) throw new ImportAbortedError(job.name);
    return await job.finish();
  } catch (e) {
    // A storage-full error has already removed the import; anything else removes it here.
    if (!(e instanceof Error && e.name === 'StorageFullError')) await job.abort().catch(() => undefined);
    throw e;
  }
}

/** The folder holds a model the library already has; nothing was stored. */
export class DuplicateModelError extends Error {
  override name = 'DuplicateModelError';
}

/** Bytes compared at each end of every file: headers, configs and tokenizers whole, weights sampled. */
const SAME_MODEL_PROBE_BYTES = 1024 * 1024;

/**
 * A library model with the same files as `kept` (names and sizes), whose first and last MiB of every
 * file hold the same bytes (a safetensors header names every tensor with its offsets, so two
 * different weight files of one size differ there in practice); undefined when there is none.
 */
export async function findSameModel(
  library: ModelLibrary,
  kept: readonly FolderFile[],
): Promise<ModelRecord | undefined> {
  const wanted = new Map(kept.map((f) => [f.name, f.blob]));
  for (const record of await library.list()) {
    // A linked model's bytes are the user's folder, not a copy: importing it too is allowed.
    if (record.link || record.files.length !== wanted.size) continue;
    if (!record.files.every((f) => wanted.get(f.name)?.size === f.size)) continue;
    const model = await library.openModel({ id: record.id });
    let same = true;
    for (const stored of record.files) {
      const blob = wanted.get(stored.name)!;
      const source = await model.open(stored.name);
      const head = Math.min(stored.size, SAME_MODEL_PROBE_BYTES);
      const tailAt = Math.max(head, stored.size - SAME_MODEL_PROBE_BYTES);
      for (const [at, length] of [
        [0, head],
        [tailAt, stored.size - tailAt],
      ]) {
        if (length === 0) continue;
        const [a, b] = await Promise.all([
          source.read(at, length),
          blob.slice(at, at + length).arrayBuffer(),
        ]);
        if (!equalBytes(a, new Uint8Array(b))) same = false;
      }
      if (!same) break;
    }
    if (same) return record;
  }
  return undefined;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
