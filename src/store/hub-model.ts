/**
 * A hub repo as a ModelFiles the engine reads in place: the file list from the hub, each file opened
 * as HTTP Range reads (http-range-source.ts), nothing stored. The revision is pinned to its commit
 * sha when the run begins, so a resumed run (or a branch moving meanwhile) reads the same bytes.
 * Every request goes through the token-scoped hub fetch.
 */
import { listFiles } from '@huggingface/hub';
import type { ModelFiles } from '../engine/io';
import { type ByteSource, bytesByteSource } from '../formats/byte-source';
import { httpRangeSource } from './http-range-source';
import { createHubFetch, DEFAULT_HUB_URL } from './hub-fetch';
import { isModelFile } from './import-folder';
import {
  encodeHubPath,
  HubDownloadError,
  HubFileNameError,
  hubFileNameProblem,
  isRepoId,
  isUnreachable,
  listedHashes,
  unreachableMessage,
} from './import-hub';

export interface HubStreamAccess {
  hubUrl?: string;
  /** Kept in memory for the run only. */
  accessToken?: string;
  signal?: AbortSignal;
  /** Test and tuning knobs of the range reads. */
  minRequestBytes?: number;
  retryDelayMs?: number;
  /** Sees the bytes of every range request a file's reads send (see HttpRangeSourceOptions.onFetched). */
  onFetched?: (file: string, start: number, bytes: Uint8Array) => Promise<void> | void;
}

/** A model file as the hub lists it, with the hashes a stored copy must have. */
export interface HubListedFile {
  name: string;
  size: number;
  expectedSha256?: string;
  expectedGitSha1?: string;
}

/** A hub model pinned to one commit. */
export interface HubModelFiles extends ModelFiles {
  readonly repo: string;
  /** The commit sha the files are read at. */
  readonly commit: string;
  /** Bytes of the *.safetensors files: what a run downloads. */
  readonly weightBytes: number;
  /** The model files with their sizes and hashes, as listed at `commit`. */
  readonly listing: readonly HubListedFile[];
  /**
   * The file as exact Range reads: no read widened, none reported to `onFetched` (for fetching the
   * bytes a merge never read).
   */
  openExact(file: string): ByteSource;
}

const COMMIT_SHA = /^[0-9a-f]{40}$/;

function hubError(e: unknown, what: string, access: HubStreamAccess): never {
  if (access.signal?.aborted) throw e;
  if (isUnreachable(e))
    throw new HubDownloadError(`${what}: ${unreachableMessage(access.hubUrl ?? DEFAULT_HUB_URL)}`);
  if (e instanceof Error && ['HubDownloadError', 'HubAccessError', 'HubFileNameError'].includes(e.name))
    throw e;
  const status = e instanceof Error && 'statusCode' in e ? Number(e.statusCode) : undefined;
  if (status === 401 || status === 403) {
    throw new HubDownloadError(
      `${what}: access denied (HTTP ${status}); the repo is gated or private: accept its terms on the hub and enter an access token`,
    );
  }
  if (status === 404)
    throw new HubDownloadError(`${what}: not found on the hub (HTTP 404); check the repo id and revision`);
  throw new HubDownloadError(`${what}: ${e instanceof Error ? e.message : String(e)}`);
}

/** The commit sha `revision` (a branch, tag or sha) points at now, from the hub's revision API. */
export async function pinHubRevision(
  repo: string,
  revision: string,
  access: HubStreamAccess = {},
): Promise<string> {
  if (!isRepoId(repo)) throw new HubDownloadError(`'${repo}' is not a hub repo id (owner/name)`);
  if (COMMIT_SHA.test(revision)) return revision;
  const hubUrl = access.hubUrl ?? DEFAULT_HUB_URL;
  const fetchFn = createHubFetch({ hubUrl, accessToken: access.accessToken, signal: access.signal });
  const what = `${repo}@${revision}`;
  let sha: unknown;
  try {
    const response = await fetchFn(
      `${hubUrl.replace(/\/$/, '')}/api/models/${repo}/revision/${encodeURIComponent(revision)}`,
    );
    if (!response.ok) {
      await response.body?.cancel().catch(() => undefined);
      throw Object.assign(new Error(`HTTP ${response.status}`), { statusCode: response.status });
    }
    sha = ((await response.json()) as { sha?: unknown }).sha;
  } catch (e) {
    hubError(e, what, access);
  }
  if (typeof sha !== 'string' || !COMMIT_SHA.test(sha)) {
    throw new HubDownloadError(`${what}: the hub did not say which commit the revision is at`);
  }
  return sha;
}

/** Opens `repo` at the commit `commit` for streaming: lists its model files, reads nothing else. */
export async function openHubModel(
  repo: string,
  commit: string,
  access: HubStreamAccess = {},
): Promise<HubModelFiles> {
  if (!isRepoId(repo)) throw new HubDownloadError(`'${repo}' is not a hub repo id (owner/name)`);
  if (!COMMIT_SHA.test(commit)) throw new HubDownloadError(`${repo}: '${commit}' is not a commit sha`);
  const hubUrl = (access.hubUrl ?? DEFAULT_HUB_URL).replace(/\/$/, '');
  const fetchFn = createHubFetch({ hubUrl, accessToken: access.accessToken, signal: access.signal });
  const what = `${repo}@${commit.slice(0, 12)}`;
  const listed = new Map<string, HubListedFile>();
  try {
    for await (const entry of listFiles({ repo, revision: commit, hubUrl, fetch: fetchFn })) {
      if (entry.type !== 'file') continue;
      const problem = hubFileNameProblem(entry.path);
      if (problem) {
        throw new HubFileNameError(
          `${what}: the hub lists a file named ${JSON.stringify(entry.path)}, which is refused: ${problem}`,
        );
      }
      if (!isModelFile(entry.path)) continue;
      const size = entry.lfs?.size ?? entry.size;
      if (!Number.isSafeInteger(size) || size < 0) {
        throw new HubDownloadError(`${what}/${entry.path}: the hub lists an invalid size (${String(size)})`);
      }
      listed.set(entry.path, { name: entry.path, size, ...listedHashes(entry) });
    }
  } catch (e) {
    hubError(e, what, access);
  }
  if (!listed.has('config.json')) {
    throw new HubDownloadError(`${what}: the repo has no config.json at its top level`);
  }
  const names = [...listed.keys()];
  const weightBytes = [...listed.values()]
    .filter((f) => f.name.endsWith('.safetensors'))
    .reduce((s, f) => s + f.size, 0);
  const sizeOf = (file: string): number => {
    const size = listed.get(file)?.size;
    if (size === undefined) throw new HubDownloadError(`${what}: no file ${file} in the repo`);
    return size;
  };
  const urlOf = (file: string) => `${hubUrl}/${repo}/resolve/${commit}/${encodeHubPath(file)}`;
  return {
    // The library name a recipe uses: the repo id, as `model:` lines write it.
    name: repo,
    repo,
    commit,
    weightBytes,
    listing: [...listed.values()],
    files: () => names,
    async open(file) {
      const size = sizeOf(file);
      const name = `${repo}/${file}`;
      if (size === 0) return bytesByteSource(new Uint8Array(0), name);
      const onFetched = access.onFetched;
      return httpRangeSource({
        name,
        url: urlOf(file),
        size,
        fetch: fetchFn,
        safetensors: file.endsWith('.safetensors'),
        minRequestBytes: access.minRequestBytes,
        retryDelayMs: access.retryDelayMs,
        signal: access.signal,
        onFetched: onFetched && ((start, bytes) => onFetched(file, start, bytes)),
      });
    },
    openExact(file) {
      return httpRangeSource({
        name: `${repo}/${file}`,
        url: urlOf(file),
        size: sizeOf(file),
        fetch: fetchFn,
        // Reads shorter than this are widened to grid blocks; 0 widens none.
        minRequestBytes: 0,
        retryDelayMs: access.retryDelayMs,
        signal: access.signal,
      });
    },
  };
}
