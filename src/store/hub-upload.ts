/**
 * "Push to the hub": a merged output folder (shards, index, config, tokenizer, the model card
 * README.md and mergekit_config.yml) committed to a model repo with the user's token, as
 * mergekit-gui and LazyMergekit do. The repo is created when missing (private unless asked
 * otherwise) and updated when it exists. Uploads go through `commitIter` of @huggingface/hub
 * (what its uploadFilesWithProgress wraps) so that every request passes through createHubFetch
 * (the token to the chosen hub's origin only, never over plain HTTP but to localhost):
 * LFS files are hashed, offered to the hub's LFS batch endpoint, uploaded with a plain PUT where
 * asked (basic or multipart, not xet), then one commit adds every file.
 */
import { commitIter, createRepo, HubApiError } from '@huggingface/hub';
import { createHubFetch, HubAccessError } from './hub-fetch';
import { isRepoId, isUnreachable, unreachableMessage } from './import-hub';

export class HubUploadError extends Error {
  override name = 'HubUploadError';
}

export interface HubUploadProgress {
  phase: 'creating' | 'preuploading' | 'uploadingLargeFiles' | 'committing';
  /** Per file: state and the fraction done (hashing, then uploading). */
  file?: { path: string; state: 'hashing' | 'uploading' | 'error'; progress: number };
}

export interface HubUploadRequest {
  repo: string;
  accessToken: string;
  hubUrl: string;
  files: readonly File[];
  /** A new repo is private unless this is false; an existing repo keeps its visibility. */
  private?: boolean;
  commitTitle?: string;
  signal?: AbortSignal;
  onProgress?: (p: HubUploadProgress) => void;
}

export interface HubUploadResult {
  repoUrl: string;
  created: boolean;
  commitUrl?: string;
}

function uploadError(e: unknown, repo: string, hubUrl: string): HubUploadError {
  if (isUnreachable(e)) return new HubUploadError(`${repo}: ${unreachableMessage(hubUrl)}`);
  if (e instanceof HubApiError) {
    if (e.statusCode === 401) {
      return new HubUploadError(
        `${repo}: the hub refused the token (HTTP 401); paste a token with write access`,
      );
    }
    if (e.statusCode === 403) {
      return new HubUploadError(
        `${repo}: the token may not write here (HTTP 403); use a write token of the repo's owner or organization`,
      );
    }
    return new HubUploadError(`${repo}: the hub answered HTTP ${e.statusCode}: ${e.message}`);
  }
  return new HubUploadError(`${repo}: ${e instanceof Error ? e.message : String(e)}`);
}

export async function pushToHub(request: HubUploadRequest): Promise<HubUploadResult> {
  const { repo, accessToken, hubUrl, signal } = request;
  if (!isRepoId(repo)) throw new HubUploadError(`'${repo}' is not a hub repo id (owner/name)`);
  if (!accessToken.trim())
    throw new HubUploadError(`${repo}: pushing needs an access token with write access`);
  if (request.files.length === 0) throw new HubUploadError(`${repo}: the output has no files to push`);
  let fetch: typeof globalThis.fetch;
  try {
    fetch = createHubFetch({ hubUrl, accessToken, signal });
  } catch (e) {
    if (e instanceof HubAccessError)
      throw new HubUploadError(`${repo}: the token was not sent: ${e.message}`);
    throw e;
  }
  const base = hubUrl.replace(/\/+$/, '');
  let created = false;
  let repoUrl = `${base}/${repo}`;
  try {
    request.onProgress?.({ phase: 'creating' });
    const made = await createRepo({
      repo: { type: 'model', name: repo },
      accessToken,
      hubUrl: base,
      visibility: request.private === false ? 'public' : 'private',
      fetch,
    });
    created = true;
    repoUrl = made.repoUrl || repoUrl;
  } catch (e) {
    // 409: the repo exists already; the commit below updates it.
    if (!(e instanceof HubApiError && e.statusCode === 409)) throw uploadError(e, repo, hubUrl);
  }
  try {
    const commits = commitIter({
      repo: { type: 'model', name: repo },
      accessToken,
      hubUrl: base,
      title: request.commitTitle ?? 'Upload a merge made with l2s-merge',
      operations: request.files.map((file) => ({ operation: 'addOrUpdate', path: file.name, content: file })),
      useXet: false,
      abortSignal: signal,
      fetch,
    });
    let phase: HubUploadProgress['phase'] = 'preuploading';
    for (;;) {
      const next = await commits.next();
      if (next.done) return { repoUrl, created, commitUrl: next.value?.commit.url };
      const event = next.value;
      if (event.event === 'phase') phase = event.phase;
      request.onProgress?.(
        event.event === 'phase'
          ? { phase }
          : { phase, file: { path: event.path, state: event.state, progress: event.progress } },
      );
    }
  } catch (e) {
    if (signal?.aborted) throw new DOMException('The upload was cancelled.', 'AbortError');
    throw uploadError(e, repo, hubUrl);
  }
}
