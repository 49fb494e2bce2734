/**
 * Downloading a model from the Hugging Face hub into the library.
 *
 * Files are listed with `@huggingface/hub` (which also gives each file's oid: the sha256 of an LFS
 * file, the git blob sha1 of a file kept in git), streamed into chunks, and hashed as they arrive.
 * Progress (chunks stored, hash state) is saved with every chunk, so after a reload the download
 * continues with an HTTP Range request where it stopped. A file whose hash differs from the hub's
 * is deleted and the import fails naming it.
 *
 * Every request goes through `createHubFetch`, which sends the access token to the chosen hub's
 * origin only. File names come from the hub, so they are checked (no `\`, `?`, `#`, `.`/`..`
 * segments or control characters) and URL-encoded segment by segment before they reach a URL.
 */
import { downloadFile, fileDownloadInfo, listFiles } from '@huggingface/hub';
import { createHubFetch, DEFAULT_HUB_URL } from './hub-fetch';
import type { ImportProgress } from './import-folder';
import { ImportAbortedError, isModelFile } from './import-folder';
import { LibraryError, type ModelImport, type ModelLibrary, type ModelRecord } from './library';
import { Sha256 } from './sha256';

export { DEFAULT_HUB_URL };

export interface HubAccess {
  /** Where the hub is; tests point this at a local server. */
  hubUrl?: string;
  /** For gated or private repos; kept in memory only, never stored. */
  accessToken?: string;
  signal?: AbortSignal;
  onProgress?: (p: ImportProgress) => void;
}

export class HubDownloadError extends Error {
  override name = 'HubDownloadError';
}

/** A repo id as the hub spells it: `owner/name`, letters, digits, `-`, `_`, `.`. */
export function isRepoId(s: string): boolean {
  return /^[A-Za-z0-9][\w.-]{0,95}\/[A-Za-z0-9][\w.-]{0,95}$/.test(s);
}

/** A file name the hub listed that is never used in a URL or stored (see `hubFileNameProblem`). */
export class HubFileNameError extends Error {
  override name = 'HubFileNameError';
}

/**
 * Why a path the hub lists cannot be downloaded, or undefined when it can. `\\` is a path separator
 * to URL parsers, `?` and `#` end a URL path, `.`/`..` segments climb out of the repo, and control
 * characters hide what a name really is.
 */
export function hubFileNameProblem(path: string): string | undefined {
  if (path === '') return 'it is empty';
  for (const ch of path) {
    const code = ch.charCodeAt(0);
    if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) {
      return `it contains the control character U+${code.toString(16).padStart(4, '0').toUpperCase()}`;
    }
  }
  for (const c of ['\\', '?', '#']) if (path.includes(c)) return `it contains '${c}'`;
  const segments = path.split('/');
  if (segments.some((s) => s === '.' || s === '..')) return "it has a '.' or '..' segment";
  if (segments.some((s) => s === '')) return 'it has an empty segment';
  return undefined;
}

/** The path as a URL path: every segment percent-encoded, `/` kept between them. */
export function encodeHubPath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

/** A file name shown to the user with control characters spelled out. */
function shownName(path: string): string {
  return JSON.stringify(path);
}

function hubFetch(access: HubAccess): typeof fetch {
  return createHubFetch({
    hubUrl: access.hubUrl ?? DEFAULT_HUB_URL,
    accessToken: access.accessToken,
    signal: access.signal,
  });
}

function describeStatus(status: number, what: string): string {
  if (status === 401 || status === 403) {
    return `${what}: access denied (HTTP ${status}); the repo is gated or private: accept its terms on the hub and enter an access token`;
  }
  if (status === 404) return `${what}: not found on the hub (HTTP 404); check the repo id and revision`;
  return `${what}: the hub answered HTTP ${status}`;
}

/**
 * A fetch that never got an answer (DNS, refused connection, offline, CORS): browsers say only
 * "Failed to fetch" (Chromium), "NetworkError when attempting to fetch resource." (Firefox) or
 * "Load failed" (Safari), all as a TypeError.
 */
export function isUnreachable(e: unknown): boolean {
  return e instanceof TypeError && /failed to fetch|networkerror|load failed|fetch failed/i.test(e.message);
}

/** What to tell the user when the hub at `hubUrl` cannot be reached. */
export function unreachableMessage(hubUrl: string): string {
  let host = hubUrl;
  try {
    host = new URL(hubUrl).host;
  } catch {
    // not a URL: name it as typed
  }
  return `cannot reach ${host} (offline?): check the connection and the hub URL, then try again`;
}

function rethrowHubError(e: unknown, what: string, signal?: AbortSignal, hubUrl?: string): never {
  if (signal?.aborted) throw new ImportAbortedError(what);
  if (isUnreachable(e))
    throw new HubDownloadError(`${what}: ${unreachableMessage(hubUrl ?? DEFAULT_HUB_URL)}`);
  if (e instanceof Error && 'statusCode' in e && typeof e.statusCode === 'number') {
    throw new HubDownloadError(describeStatus(e.statusCode, what));
  }
  if (
    e instanceof Error &&
    (e.name === 'HubDownloadError' ||
      e.name === 'HubAccessError' ||
      e.name === 'HubFileNameError' ||
      e.name === 'StorageFullError' ||
      e.name === 'ChecksumMismatchError')
  ) {
    throw e;
  }
  throw new HubDownloadError(`${what}: ${e instanceof Error ? e.message : String(e)}`);
}

/** The hashes a stored copy of a listed file must have, as the library's import checks them. */
export function listedHashes(entry: { oid?: string; lfs?: { oid: string } }): {
  expectedSha256?: string;
  expectedGitSha1?: string;
} {
  // An LFS file's oid is its sha256; a file kept in git has its git blob sha1 as oid.
  if (entry.lfs) return { expectedSha256: entry.lfs.oid };
  return /^[0-9a-f]{40}$/i.test(entry.oid ?? '') ? { expectedGitSha1: entry.oid } : {};
}

/** Starts downloading `repo` at `revision` into the library; resolves when the model is in it. */
export async function importFromHub(
  library: ModelLibrary,
  repo: string,
  revision: string,
  access: HubAccess = {},
): Promise<ModelRecord> {
  if (!isRepoId(repo)) throw new HubDownloadError(`'${repo}' is not a hub repo id (owner/name)`);
  const revisionProblem = hubFileNameProblem(revision);
  if (revisionProblem) {
    throw new HubDownloadError(
      `${repo}: the revision ${shownName(revision)} cannot be used: ${revisionProblem}`,
    );
  }
  const files: { name: string; size: number; expectedSha256?: string; expectedGitSha1?: string }[] = [];
  try {
    for await (const entry of listFiles({
      repo,
      // listFiles puts the revision into the URL as it is; a branch such as refs/pr/1 is one segment.
      revision: encodeURIComponent(revision),
      hubUrl: access.hubUrl ?? DEFAULT_HUB_URL,
      fetch: hubFetch(access),
    })) {
      if (entry.type !== 'file') continue;
      const problem = hubFileNameProblem(entry.path);
      if (problem) {
        throw new HubFileNameError(
          `${repo}@${revision}: the hub lists a file named ${shownName(entry.path)}, which is refused: ${problem}. ` +
            "File names with \\, ?, #, '.' or '..' segments, or control characters are never downloaded.",
        );
      }
      if (!isModelFile(entry.path)) continue;
      const size = entry.lfs?.size ?? entry.size;
      if (!Number.isSafeInteger(size) || size < 0) {
        throw new HubDownloadError(`${repo}/${entry.path}: the hub lists an invalid size (${String(size)})`);
      }
      files.push({ name: entry.path, size, ...listedHashes(entry) });
    }
  } catch (e) {
    rethrowHubError(e, `${repo}@${revision}`, access.signal, access.hubUrl);
  }
  if (!files.some((f) => f.name === 'config.json')) {
    throw new HubDownloadError(`${repo}@${revision}: the repo has no config.json at its top level`);
  }
  if (!files.some((f) => f.name.endsWith('.safetensors'))) {
    throw new HubDownloadError(`${repo}@${revision}: the repo has no *.safetensors weights at its top level`);
  }
  const job = await library.beginImport({
    name: repo,
    source: { kind: 'hub', repo, revision },
    resumable: true,
    files,
  });
  return downloadRemaining(job, access);
}

/** Continues an interrupted hub import (after a reload, a network error or a failed checksum). */
export async function resumeHubImport(
  library: ModelLibrary,
  importId: string,
  access: HubAccess = {},
): Promise<ModelRecord> {
  const job = await library.resumeImport(importId);
  if (job.pending.source.kind !== 'hub')
    throw new LibraryError(`${job.name}: only hub downloads can be resumed`);
  return downloadRemaining(job, access);
}

async function downloadRemaining(job: ModelImport, access: HubAccess): Promise<ModelRecord> {
  const source = job.pending.source;
  if (source.kind !== 'hub') throw new LibraryError(`${job.name}: not a hub import`);
  const bytesTotal = job.pending.files.reduce((s, f) => s + f.size, 0);
  let bytesDone = job.pending.files.reduce((s, f) => s + f.bytesDone, 0);
  for (const f of job.pending.files) {
    if (f.done) continue;
    if (f.size === 0) {
      await job.completeEmptyFile(f.name);
      continue;
    }
    const what = `${source.repo}/${f.name}`;
    const stream = await openFileStream(source.repo, source.revision, f.name, f.size, f.bytesDone, access);
    const hash = new Sha256(f.hashState);
    const reader = stream.getReader();
    let parts: Uint8Array[] = [];
    let buffered = 0;
    try {
      while (!f.done) {
        if (access.signal?.aborted) throw new ImportAbortedError(job.name);
        const { done, value } = await reader.read();
        if (done) {
          throw new HubDownloadError(
            `${what}: the connection ended at byte ${f.bytesDone + buffered} of ${f.size}`,
          );
        }
        let piece = value;
        while (piece.length > 0) {
          if (f.done)
            throw new HubDownloadError(`${what}: the hub sent more than the listed ${f.size} bytes`);
          const chunkTarget = Math.min(job.pending.chunkBytes, f.size - f.bytesDone);
          const take = piece.subarray(0, Math.min(chunkTarget - buffered, piece.length));
          hash.update(take);
          parts.push(take);
          buffered += take.length;
          piece = piece.subarray(take.length);
          if (buffered === chunkTarget) {
            await job.appendChunk(f.name, new Blob(parts as BlobPart[]), hash);
            bytesDone += buffered;
            parts = [];
            buffered = 0;
          }
        }
        access.onProgress?.({
          model: job.name,
          file: f.name,
          fileBytesDone: f.bytesDone + buffered,
          fileBytes: f.size,
          bytesDone: bytesDone + buffered,
          bytesTotal,
        });
      }
    } catch (e) {
      rethrowHubError(e, what, access.signal, access.hubUrl);
    } finally {
      await reader.cancel().catch(() => undefined);
    }
  }
  return job.finish();
}

/** The file's bytes from `start` on: a Range request, checked to really start there. */
async function openFileStream(
  repo: string,
  revision: string,
  path: string,
  size: number,
  start: number,
  access: HubAccess,
): Promise<ReadableStream<Uint8Array>> {
  const what = `${repo}/${path}`;
  const hubUrl = access.hubUrl ?? DEFAULT_HUB_URL;
  const fetchFn = hubFetch(access);
  try {
    const info = await fileDownloadInfo({
      repo,
      path: encodeHubPath(path),
      revision,
      hubUrl,
      fetch: fetchFn,
    });
    if (!info) throw new HubDownloadError(`${what}: the file is no longer in ${repo}@${revision}`);
    if (info.size !== size) {
      throw new HubDownloadError(
        `${what}: the file changed on the hub (${info.size} bytes, listed ${size}); import again`,
      );
    }
    if (info.xet) {
      // Xet-stored files are reassembled by the library's Blob, which fetches ranges itself.
      const blob = await downloadFile({
        repo,
        path: encodeHubPath(path),
        revision,
        hubUrl,
        fetch: fetchFn,
        downloadInfo: info,
      });
      if (!blob) throw new HubDownloadError(`${what}: the file is no longer in ${repo}@${revision}`);
      return blob.slice(start).stream() as ReadableStream<Uint8Array>;
    }
    // The hub fetch adds the token if info.url is on the hub, and only then (it may be the CDN's).
    const response = await fetchFn(info.url, { headers: { Range: `bytes=${start}-` } });
    if (!response.ok) throw new HubDownloadError(describeStatus(response.status, what));
    const range = response.headers.get('Content-Range');
    const startsAt = response.status === 206 && range ? Number(/^bytes (\d+)-/.exec(range)?.[1]) : 0;
    if (startsAt !== start) {
      throw new HubDownloadError(
        `${what}: the server did not honour the range request from byte ${start} (status ${response.status})`,
      );
    }
    if (!response.body) throw new HubDownloadError(`${what}: the hub sent no body`);
    return response.body;
  } catch (e) {
    rethrowHubError(e, what, access.signal, access.hubUrl);
  }
}
