/**
 * Hub models for the CLI, downloaded into the Hugging Face cache in exactly the layout Python's
 * huggingface_hub reads and writes (file_download.py), so a model fetched by either is used by both:
 *
 *   $HF_HUB_CACHE/models--org--name/
 *     refs/<revision>                 the commit sha the branch or tag pointed at (no newline);
 *                                     written only when the revision is not itself a commit sha
 *     blobs/<oid>                     a file's bytes, named by the hub's etag: the sha256 of an
 *                                     LFS file, the git blob sha1 of a file kept in git
 *     blobs/<oid>.incomplete          a download in progress
 *     snapshots/<commit>/<file>       a relative symbolic link to ../../blobs/<oid>
 *   $HF_HUB_CACHE/.locks/models--org--name/<oid>.lock
 *                                     held while a process downloads that blob
 *
 * The revision is resolved to its commit sha online (`modelInfo`), the files listed at that commit
 * (`listFiles`, which gives every file's oid and size), and only the files a merge reads are kept
 * (`isModelFile`: config, safetensors and index, tokenizer files, generation config). The blob
 * names come from the listing's oids, which are the hub's etags for the same files.
 *
 * `@huggingface/hub`'s own downloadFileToCacheDir neither resumes nor checks hashes (and names the
 * snapshot after a file's last commit, not the revision's), so the transfer is done here: bytes go
 * to `blobs/<oid>.incomplete`, a later run continues it with `Range: bytes=<its size>-`, and the file
 * is renamed into place only when its sha256 (LFS) or git blob sha1 equals the oid. A transfer that
 * breaks off (network, Ctrl-C) keeps its `.incomplete` to resume from; a file whose hash is wrong
 * has its `.incomplete` removed (its bytes cannot be trusted, so resuming it would only repeat the
 * mismatch) and the run fails naming both hashes.
 *
 * Every request goes through `createHubFetch`: the token reaches the hub's origin only, never the
 * CDN a download is redirected to.
 *
 * Two processes needing the same blob do not both fetch it: the transfer is done under the blob's
 * lock in `.locks/models--org--name/<oid>.lock` (hub-lock.ts), and the other waits and then uses
 * the blob.
 *
 * Not done: the copy instead of a link where symbolic links are unavailable (Windows without developer mode), Xet's chunk protocol
 * (Xet-stored files are read through the hub's plain-HTTP bridge, as huggingface_hub does without
 * hf_xet).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { listFiles, modelInfo } from '@huggingface/hub';
import type { HubModelRef } from '../recipe';
import { createHubFetch, tokenRefusal } from '../store/hub-fetch';
import { isModelFile, selectModelFiles } from '../store/import-folder';
import { encodeHubPath, hubFileNameProblem, isUnreachable, unreachableMessage } from '../store/import-hub';
import { acquireBlobLock, type BlobLock, blobLockPath } from './hub-lock';
import type { HubSettings } from './hub-settings';

/** The branch huggingface_hub uses when a reference names no revision. */
export const DEFAULT_REVISION = 'main';

const COMMIT_SHA = /^[0-9a-f]{40}$/;

export class HubModelError extends Error {
  override name = 'HubModelError';
}
/** --offline (or HF_HUB_OFFLINE) and the model is not complete in the cache. */
export class HubOfflineError extends HubModelError {
  override name = 'HubOfflineError';
}
/** No answer from the hub (DNS, refused connection, no network). */
export class HubUnreachableError extends HubModelError {
  override name = 'HubUnreachableError';
}
/** 401/403: gated or private. */
export class HubAccessDeniedError extends HubModelError {
  override name = 'HubAccessDeniedError';
}
/** 404: no such repo, revision or file. */
export class HubNotFoundError extends HubModelError {
  override name = 'HubNotFoundError';
}
/** A downloaded file whose hash differs from the hub's; nothing of it is kept. */
export class HubChecksumError extends HubModelError {
  override name = 'HubChecksumError';
}
/** A transfer that failed (broken connection, bad answer); a partial file is kept to resume. */
export class HubTransferError extends HubModelError {
  override name = 'HubTransferError';
}

export interface HubDownloadProgress {
  /** `org/name@revision` */
  model: string;
  file: string;
  fileBytesDone: number;
  fileBytes: number;
  bytesDone: number;
  bytesTotal: number;
  /** Bytes that were already on disk when this run started (a resumed transfer). */
  bytesResumed: number;
  elapsedMs: number;
}

export interface HubModelOptions {
  signal?: AbortSignal;
  onProgress?: (p: HubDownloadProgress) => void;
  /** One-line notices: what is downloaded, resumed, or taken from the cache without checking. */
  notice?: (line: string) => void;
}

export interface CachedHubModel {
  /** `snapshots/<commit>`: the model's files. */
  snapshotDir: string;
  /** `models--org--name`: the folder the snapshot's links stay inside. */
  repoDir: string;
  commit: string;
}

interface ListedFile {
  name: string;
  size: number;
  /** The blob name: sha256 for LFS files, git blob sha1 otherwise. */
  oid: string;
  hash: 'sha256' | 'git-sha1';
}

/** `models--org--name`, huggingface_hub's repo_folder_name for a model. */
export function repoFolderName(repo: string): string {
  return ['models', ...repo.split('/')].join('--');
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch {
    return undefined;
  }
}

/** The commit a cached branch or tag points at, as huggingface_hub reads refs (the whole file). */
async function cachedRef(repoDir: string, revision: string): Promise<string | undefined> {
  if (COMMIT_SHA.test(revision)) return revision;
  try {
    const sha = await readFile(join(repoDir, 'refs', revision), 'utf8');
    return COMMIT_SHA.test(sha.trim()) ? sha.trim() : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether a snapshot holds what a merge reads: config.json and the weights (every shard the index
 * lists, or a safetensors file when there is no index), each a link that leads to a file.
 */
async function snapshotComplete(snapshotDir: string): Promise<boolean> {
  if (!(await exists(join(snapshotDir, 'config.json')))) return false;
  const indexPath = join(snapshotDir, 'model.safetensors.index.json');
  if (await exists(indexPath)) {
    try {
      const index = JSON.parse(await readFile(indexPath, 'utf8')) as { weight_map?: Record<string, string> };
      const shards = new Set(Object.values(index.weight_map ?? {}));
      if (shards.size === 0) return false;
      for (const shard of shards) {
        if (
          typeof shard !== 'string' ||
          hubFileNameProblem(shard) ||
          !(await exists(join(snapshotDir, shard)))
        )
          return false;
      }
      return true;
    } catch {
      return false;
    }
  }
  return exists(join(snapshotDir, 'model.safetensors'));
}

function statusOf(e: unknown): number | undefined {
  return e instanceof Error && 'statusCode' in e && typeof e.statusCode === 'number'
    ? e.statusCode
    : undefined;
}

/** Which hub a message names: its host. */
function hostOf(endpoint: string): string {
  try {
    return new URL(endpoint).host;
  } catch {
    return endpoint;
  }
}

function httpError(status: number, what: string, settings: HubSettings): HubModelError {
  if (status === 401 || status === 403) {
    const tokenHint = settings.accessToken
      ? 'the token in HF_TOKEN (or the token file) has no access to it: accept the repo’s terms on the hub with that account, or use a token that has access'
      : 'if it is gated or private, accept its terms on the hub and set HF_TOKEN to an access token (or log in with `hf auth login`); the hub answers the same for a repo id that does not exist';
    return new HubAccessDeniedError(
      `${what}: access denied by ${hostOf(settings.endpoint)} (HTTP ${status}); ${tokenHint}`,
    );
  }
  if (status === 404) {
    return new HubNotFoundError(
      `${what}: not found on ${hostOf(settings.endpoint)} (HTTP 404); check the repo id and the revision after @ (a branch, tag or commit sha)`,
    );
  }
  return new HubTransferError(
    `${what}: ${hostOf(settings.endpoint)} answered HTTP ${status}; try again later`,
  );
}

/** Downloads and cache lookups for the hub models of one run, each model once. */
export class HubModels {
  private readonly fetch: typeof fetch;
  private readonly pending = new Map<string, Promise<CachedHubModel>>();
  /** Said before the first request when the token is withheld (plain HTTP to another machine). */
  private tokenNotice?: string;

  constructor(
    readonly settings: HubSettings,
    private readonly options: HubModelOptions = {},
  ) {
    const refusal = settings.accessToken ? tokenRefusal(settings.endpoint) : undefined;
    if (refusal) this.tokenNotice = `not sending the access token (HF_TOKEN): ${refusal}`;
    this.fetch = createHubFetch({
      hubUrl: settings.endpoint,
      accessToken: refusal ? undefined : settings.accessToken,
      signal: options.signal,
    });
  }

  /** The cache folder of a repo. */
  repoDir(repo: string): string {
    return join(this.settings.cacheDir, repoFolderName(repo));
  }

  /** The model's snapshot folder, downloading what is missing unless offline. */
  locate(ref: HubModelRef): Promise<CachedHubModel> {
    const revision = ref.revision ?? DEFAULT_REVISION;
    const key = `${ref.repo}@${revision}`;
    let found = this.pending.get(key);
    if (!found) {
      found = this.resolve(ref.repo, revision);
      this.pending.set(key, found);
    }
    return found;
  }

  private say(line: string): void {
    this.options.notice?.(line);
  }

  private async resolve(repo: string, revision: string): Promise<CachedHubModel> {
    const what = `${repo}@${revision}`;
    const problem = hubFileNameProblem(revision);
    if (problem) throw new HubModelError(`${what}: the revision cannot be used: ${problem}`);
    const repoDir = this.repoDir(repo);
    const fromCache = async (): Promise<CachedHubModel | undefined> => {
      const commit = await cachedRef(repoDir, revision);
      if (commit === undefined) return undefined;
      const snapshotDir = join(repoDir, 'snapshots', commit);
      return (await snapshotComplete(snapshotDir)) ? { snapshotDir, repoDir, commit } : undefined;
    };
    if (this.settings.offline) {
      const cached = await fromCache();
      if (cached) return cached;
      throw new HubOfflineError(
        `${what}: not in the Hugging Face cache (looked in ${repoDir}), and offline mode (--offline or HF_HUB_OFFLINE) ` +
          `forbids downloading it; run once without --offline to download it (or \`hf download ${repo}${revision === DEFAULT_REVISION ? '' : ` --revision ${revision}`}\`)`,
      );
    }
    // A commit never changes: when its snapshot is complete the hub is not asked at all.
    if (COMMIT_SHA.test(revision)) {
      const cached = await fromCache();
      if (cached) return cached;
    }
    if (this.tokenNotice) {
      this.say(this.tokenNotice);
      this.tokenNotice = undefined;
    }
    let commit: string;
    try {
      const info = await modelInfo({
        name: repo,
        revision,
        hubUrl: this.settings.endpoint,
        fetch: this.fetch,
        additionalFields: ['sha'],
      });
      commit = String((info as { sha?: unknown }).sha ?? '');
    } catch (e) {
      this.rethrowIfAborted(e);
      if (isUnreachable(e)) {
        // As huggingface_hub: without the hub, a branch or tag is taken from the cached ref.
        const cached = await fromCache();
        if (cached) {
          this.say(
            `${what}: cannot reach ${hostOf(this.settings.endpoint)} (offline?); using the cached snapshot ${cached.commit} (the revision may have moved on since)`,
          );
          return cached;
        }
        throw new HubUnreachableError(
          `${what}: ${unreachableMessage(this.settings.endpoint)}; the model is not in the cache (looked in ${repoDir}) ` +
            '(HF_ENDPOINT or --hub-endpoint sets the hub URL)',
        );
      }
      const status = statusOf(e);
      if (status !== undefined) throw httpError(status, what, this.settings);
      throw new HubModelError(`${what}: ${(e as Error).message}`);
    }
    if (!COMMIT_SHA.test(commit)) {
      throw new HubModelError(
        `${what}: ${hostOf(this.settings.endpoint)} gave no commit sha for the revision`,
      );
    }
    const snapshotDir = join(repoDir, 'snapshots', commit);
    const files = await this.listModelFiles(repo, revision, commit);
    await mkdir(join(repoDir, 'blobs'), { recursive: true });
    await mkdir(snapshotDir, { recursive: true });
    if (revision !== commit) await this.writeRef(repoDir, revision, commit);
    const missing: ListedFile[] = [];
    for (const f of files) if (!(await exists(join(snapshotDir, f.name)))) missing.push(f);
    if (missing.length > 0) await this.download(what, repo, commit, repoDir, snapshotDir, missing);
    return { snapshotDir, repoDir, commit };
  }

  private rethrowIfAborted(e: unknown): void {
    if (this.options.signal?.aborted || (e as Error)?.name === 'AbortError') {
      const error = new Error('cancelled');
      error.name = 'AbortError';
      throw error;
    }
  }

  private async writeRef(repoDir: string, revision: string, commit: string): Promise<void> {
    const refPath = join(repoDir, 'refs', revision);
    await mkdir(dirname(refPath), { recursive: true });
    const temp = `${refPath}.${process.pid}.tmp`;
    await writeFile(temp, commit);
    await rename(temp, refPath);
  }

  private async listModelFiles(repo: string, revision: string, commit: string): Promise<ListedFile[]> {
    const what = `${repo}@${revision}`;
    const files: ListedFile[] = [];
    try {
      for await (const entry of listFiles({
        repo,
        revision: commit,
        hubUrl: this.settings.endpoint,
        fetch: this.fetch,
      })) {
        if (entry.type !== 'file' || !isModelFile(entry.path)) continue;
        const problem = hubFileNameProblem(entry.path);
        if (problem)
          throw new HubModelError(
            `${what}: the hub lists a file ${JSON.stringify(entry.path)}, refused: ${problem}`,
          );
        const size = entry.lfs?.size ?? entry.size;
        const oid = (entry.lfs?.oid ?? entry.oid ?? '').toLowerCase();
        const hash = entry.lfs ? 'sha256' : 'git-sha1';
        if (!Number.isSafeInteger(size) || size < 0)
          throw new HubModelError(`${what}/${entry.path}: the hub lists an invalid size (${String(size)})`);
        if (!(hash === 'sha256' ? /^[0-9a-f]{64}$/ : COMMIT_SHA).test(oid))
          throw new HubModelError(
            `${what}/${entry.path}: the hub lists no usable ${hash} (${JSON.stringify(oid)})`,
          );
        files.push({ name: entry.path, size, oid, hash });
      }
    } catch (e) {
      if (e instanceof HubModelError) throw e;
      this.rethrowIfAborted(e);
      if (isUnreachable(e))
        throw new HubUnreachableError(`${what}: ${unreachableMessage(this.settings.endpoint)}`);
      const status = statusOf(e);
      if (status !== undefined) throw httpError(status, what, this.settings);
      throw new HubModelError(`${what}: ${(e as Error).message}`);
    }
    try {
      return selectModelFiles(what, files, 'repo');
    } catch (e) {
      throw new HubModelError((e as Error).message);
    }
  }

  private async download(
    what: string,
    repo: string,
    commit: string,
    repoDir: string,
    snapshotDir: string,
    files: ListedFile[],
  ): Promise<void> {
    const bytesTotal = files.reduce((s, f) => s + f.size, 0);
    let bytesDone = 0;
    let bytesResumed = 0;
    const started = Date.now();
    this.say(`${what}: downloading ${files.length} file(s), ${bytesTotal} bytes, into ${repoDir}`);
    for (const f of files) {
      const blob = join(repoDir, 'blobs', f.oid);
      const progress = (fileBytesDone: number, resumed: number) => {
        bytesResumed += resumed;
        this.options.onProgress?.({
          model: what,
          file: f.name,
          fileBytesDone,
          fileBytes: f.size,
          bytesDone: bytesDone + fileBytesDone,
          bytesTotal,
          bytesResumed,
          elapsedMs: Date.now() - started,
        });
      };
      if (!(await exists(blob))) {
        // While another process holds the blob's lock, its `.incomplete` shows as progress; the
        // bytes there when the wait began count as resumed (taken off again if this process then
        // downloads it and counts its own starting point).
        let waitResumed: number | undefined;
        const lock = await acquireBlobLock(
          blobLockPath(this.settings.cacheDir, repoFolderName(repo), f.oid),
          {
            file: `${what}/${f.name}`,
            incomplete: `${blob}.incomplete`,
            blob,
            signal: this.options.signal,
            notice: (line) => this.say(line),
            onWait: (size) => {
              const done = Math.min(size, f.size);
              progress(done, waitResumed === undefined ? done : 0);
              waitResumed ??= done;
            },
          },
        );
        if (lock !== 'done') {
          let uncount = waitResumed ?? 0;
          try {
            await this.downloadBlob(
              what,
              repo,
              commit,
              f,
              blob,
              (done, resumed) => {
                progress(done, resumed - uncount);
                uncount = 0;
              },
              lock,
            );
          } finally {
            await lock.release();
          }
        }
      }
      bytesDone += f.size;
      await linkIntoSnapshot(blob, join(snapshotDir, f.name));
    }
  }

  private async downloadBlob(
    what: string,
    repo: string,
    commit: string,
    f: ListedFile,
    blob: string,
    progress: (fileBytesDone: number, resumedBytes: number) => void,
    lock: BlobLock,
  ): Promise<void> {
    const file = `${what}/${f.name}`;
    const incomplete = `${blob}.incomplete`;
    let start = (await sizeOf(incomplete)) ?? 0;
    // Longer than the file: not a prefix of it, so not resumable.
    if (start > f.size) {
      await rm(incomplete, { force: true });
      start = 0;
    }
    let body: ReadableStream<Uint8Array> | undefined;
    if (start < f.size) {
      const url = `${this.settings.endpoint}/${repo}/resolve/${commit}/${encodeHubPath(f.name)}`;
      let response: Response;
      try {
        response = await this.fetch(url, { headers: start > 0 ? { Range: `bytes=${start}-` } : {} });
      } catch (e) {
        this.rethrowIfAborted(e);
        if (isUnreachable(e))
          throw new HubUnreachableError(
            `${file}: ${unreachableMessage(this.settings.endpoint)}; run again to resume`,
          );
        throw new HubTransferError(`${file}: ${(e as Error).message}`);
      }
      if (!response.ok) {
        await response.body?.cancel().catch(() => undefined);
        throw httpError(response.status, file, this.settings);
      }
      if (start > 0 && response.status !== 206) {
        // The server sent the whole file instead of the range: start over.
        start = 0;
        await rm(incomplete, { force: true });
      } else if (start > 0) {
        const range = /^bytes (\d+)-/.exec(response.headers.get('Content-Range') ?? '');
        if (!range || Number(range[1]) !== start) {
          await response.body?.cancel().catch(() => undefined);
          throw new HubTransferError(
            `${file}: the server answered the request for bytes ${start}- with ${response.headers.get('Content-Range') ?? 'no Content-Range'}`,
          );
        }
      }
      if (!response.body) throw new HubTransferError(`${file}: the hub sent no body`);
      body = response.body;
      if (start > 0) this.say(`${file}: resuming at byte ${start} of ${f.size}`);
    }
    const hash = f.hash === 'sha256' ? createHash('sha256') : createHash('sha1').update(`blob ${f.size}\0`);
    // The bytes already on disk go into the hash first (it is not saved between runs).
    if (start > 0) {
      for await (const chunk of createReadStream(incomplete, { end: start - 1 }))
        hash.update(chunk as Buffer);
    }
    progress(start, start);
    let at = start;
    if (body) {
      const out = await open(incomplete, start > 0 ? 'a' : 'w');
      try {
        for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
          if (at + chunk.length > f.size) {
            await out.close().catch(() => undefined);
            await rm(incomplete, { force: true });
            throw new HubTransferError(
              `${file}: the hub sent more than the listed ${f.size} bytes; nothing was kept`,
            );
          }
          await out.write(chunk);
          hash.update(chunk);
          at += chunk.length;
          progress(at, 0);
        }
      } catch (e) {
        if (e instanceof HubModelError) throw e;
        if (this.options.signal?.aborted)
          this.say(`${file}: stopped at byte ${at} of ${f.size}; the next run resumes from there`);
        this.rethrowIfAborted(e);
        throw new HubTransferError(
          `${file}: the transfer broke off at byte ${at} of ${f.size} (${(e as Error).message}); run again to resume from there`,
        );
      } finally {
        await out.close().catch(() => undefined);
      }
    }
    if (at !== f.size) {
      throw new HubTransferError(
        `${file}: the transfer ended at byte ${at} of ${f.size}; run again to resume from there`,
      );
    }
    const actual = hash.digest('hex');
    if (actual !== f.oid) {
      await rm(incomplete, { force: true });
      const kind = f.hash === 'sha256' ? 'sha256' : 'git blob sha1';
      throw new HubChecksumError(
        `${file}: the downloaded bytes have ${kind} ${actual}, but the hub lists ${f.oid}; ` +
          'the download was discarded (nothing kept in the cache); run again to download it afresh',
      );
    }
    // A process that judged this one hung took the lock and writes the same `.incomplete` now.
    if (!(await lock.held())) {
      throw new HubTransferError(
        `${file}: another process took over this download (its lock ${lock.path} was taken as stale); run again to use its result`,
      );
    }
    await rename(incomplete, blob);
  }
}

/** `snapshots/<commit>/<file>` as a relative link to the blob, replacing whatever was there. */
async function linkIntoSnapshot(blob: string, pointer: string): Promise<void> {
  await mkdir(dirname(pointer), { recursive: true });
  const temp = `${pointer}.${process.pid}.link`;
  await rm(temp, { force: true });
  await symlink(relative(dirname(pointer), blob), temp);
  await rename(temp, pointer);
}
