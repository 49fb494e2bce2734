/**
 * A local stand-in for the Hugging Face hub over real HTTP, answering the calls `@huggingface/hub`
 * makes: `GET /api/models/{repo}/tree/{rev}` (file list with LFS oids = sha256),
 * `GET /api/models/{repo}/revision/{rev}` (the commit sha a branch or tag points at) and
 * `GET /{repo}/resolve/{rev}/{path}` (Range requests, ETag / X-Linked-* / X-Repo-Commit headers; LFS
 * files redirect to a content-addressed URL as the hub redirects to its CDN). A repo may have several
 * revisions (branches or tags, each with its own files and commit sha; `{rev}` may be a name or the
 * sha). It can require a token, stall a file mid-way (then break off, or go on) or cut the
 * connection there (to test resumption), send files slowly (`pieceDelayMs`, to make two clients'
 * downloads overlap) and serve corrupted bytes (to test sha256 verification), and it logs every
 * range it was asked for.
 *
 * Uploads take the calls `@huggingface/hub`'s createRepo and commit make: `POST /api/repos/create`,
 * `POST /api/models/{repo}/preupload/{rev}`, `POST /{repo}.git/info/lfs/objects/batch` (answering
 * with "basic" PUT URLs, on another server when `lfsStorage` is set, as the hub hands out S3 URLs),
 * `PUT /upload/{sha256}` (checked against its sha256), and `POST /api/models/{repo}/commit/{rev}`
 * (NDJSON).
 *
 * A second HubServer with the same repos can play the CDN on another origin: point the hub's
 * `lfsBaseUrl` at it and give it `xCache` (the hub's CDN answers `X-Cache: Hit from cloudfront`).
 * `log` holds every request with the Authorization header it carried, preflights included.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HubRepo {
  files: Map<string, Uint8Array>;
  /** The branch `files` are on; `main` by default. */
  revision?: string;
  /** Further branches or tags, each with its own files. */
  otherRevisions?: Map<string, Map<string, Uint8Array>>;
  /** When set, requests need `Authorization: Bearer <token>`. */
  token?: string;
}

export interface RangeRequest {
  repo: string;
  path: string;
  range: string | null;
}

export interface LoggedRequest {
  method: string;
  /** The request path as sent (still percent-encoded). */
  url: string;
  authorization: string | null;
  /** A preflight's Access-Control-Request-Headers. */
  requestHeaders: string | null;
}

export interface HubServerOptions {
  /** Where LFS resolves redirect to (another origin, as the hub's CDN); this server by default. */
  lfsBaseUrl?: string;
  /** An X-Cache header on every file this server sends, as a CDN answers. */
  xCache?: string;
}

interface Stall {
  afterBytes: number;
  /** After release the transfer goes on (a pause) instead of breaking off. */
  resume?: boolean;
  release: Promise<void>;
  resolve: () => void;
  /** Resolves once the server has sent `afterBytes` bytes and stopped. */
  reached: Promise<void>;
  markReached: () => void;
}

const CORS_HEADERS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, HEAD, POST, PUT, OPTIONS',
  'Access-Control-Allow-Headers': 'Range, Authorization, Accept, Content-Type, X-Request-Id',
  'Access-Control-Expose-Headers':
    'Content-Range, Content-Length, ETag, X-Linked-ETag, X-Linked-Size, X-Error-Code, Link, Accept-Ranges, X-Cache',
};

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** git's blob id, which the hub gives as `oid` of files stored in git itself. */
function gitBlobSha1(bytes: Uint8Array): string {
  return createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
}

/** A revision's commit sha: made up from the repo, the revision name and its files, so it is stable. */
function commitSha(repo: string, revision: string, files: Map<string, Uint8Array>): string {
  const hash = createHash('sha1').update(`${repo}\0${revision}\0`);
  for (const [path, bytes] of [...files].sort(([a], [b]) => (a < b ? -1 : 1)))
    hash.update(`${path}\0${sha256(bytes)}\0`);
  return hash.digest('hex');
}

function isLfs(path: string): boolean {
  return path.endsWith('.safetensors');
}

async function body(req: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of req) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

export class HubServer {
  readonly requests: RangeRequest[] = [];
  /** LFS objects received by PUT, by sha256. */
  readonly uploaded = new Map<string, Uint8Array>();
  /** Tokens that may create repos and commit to them. */
  readonly writeTokens = new Set<string>();
  /** Where LFS uploads are sent (another origin, like the hub's S3); this server when unset. */
  lfsStorage?: HubServer;
  readonly log: LoggedRequest[] = [];
  private readonly repos = new Map<string, HubRepo>();
  private readonly byOid = new Map<string, { repo: string; path: string; bytes: Uint8Array }>();
  private readonly stalls = new Map<string, Stall>();
  /** One-shot cuts: the connection is destroyed once this many bytes of the file were sent. */
  private readonly cuts = new Map<string, { afterBytes: number; markReached: () => void }>();
  private readonly corrupt = new Set<string>();
  /** While set, every file request is answered with this status (a hub or CDN outage). */
  private outageStatus?: number;
  private server?: Server;
  url = '';
  /** A pause after every 4 KiB piece of a file, to make transfers slow. */
  pieceDelayMs = 0;

  repo(id: string): HubRepo | undefined {
    return this.repos.get(id);
  }

  constructor(private readonly options: HubServerOptions = {}) {}

  addRepo(id: string, repo: HubRepo): void {
    this.repos.set(id, repo);
    for (const files of [repo.files, ...(repo.otherRevisions?.values() ?? [])])
      for (const [path, bytes] of files)
        if (isLfs(path)) this.byOid.set(sha256(bytes), { repo: id, path, bytes });
  }

  /** Every revision of `id` by name, with its commit sha. */
  revisions(id: string): Map<string, { sha: string; files: Map<string, Uint8Array> }> {
    const repo = this.repos.get(id);
    const out = new Map<string, { sha: string; files: Map<string, Uint8Array> }>();
    if (!repo) return out;
    const main = repo.revision ?? 'main';
    out.set(main, { sha: commitSha(id, main, repo.files), files: repo.files });
    for (const [name, files] of repo.otherRevisions ?? [])
      out.set(name, { sha: commitSha(id, name, files), files });
    return out;
  }

  /** The files and commit sha of `rev` (a branch or tag name, or a commit sha) of `id`. */
  private revision(id: string, rev: string): { sha: string; files: Map<string, Uint8Array> } | undefined {
    const all = this.revisions(id);
    return all.get(rev) ?? [...all.values()].find((r) => r.sha === rev);
  }

  /** Serve `path` of `repo` with one byte flipped, while listing the true sha256. */
  corruptFile(repo: string, path: string): void {
    this.corrupt.add(`${repo}/${path}`);
  }

  /** Answer every file request with `status` (e.g. 503) from now on; `undefined` ends the outage. */
  failFiles(status: number | undefined): void {
    this.outageStatus = status;
  }

  /**
   * Stop sending `path` after `afterBytes` bytes until `release()`; the connection stays open, and
   * is then broken, or with `resume` the rest of the file is sent (a slow moment, not a failure).
   */
  stallFile(
    repo: string,
    path: string,
    afterBytes: number,
    options: { resume?: boolean } = {},
  ): { reached: Promise<void>; release: () => void } {
    let resolve!: () => void;
    let markReached!: () => void;
    const release = new Promise<void>((r) => {
      resolve = r;
    });
    const reached = new Promise<void>((r) => {
      markReached = r;
    });
    const stall = { afterBytes, release, resolve, reached, markReached, resume: options.resume };
    this.stalls.set(`${repo}/${path}`, stall);
    return {
      reached,
      release: () => {
        this.stalls.delete(`${repo}/${path}`);
        resolve();
      },
    };
  }

  /**
   * The next transfer of `path` that reaches byte `afterBytes` sends the bytes before it and then
   * breaks the connection (as a dropped network does); later transfers are whole. Resolves once cut.
   */
  cutFile(repo: string, path: string, afterBytes: number): Promise<void> {
    return new Promise((markReached) => {
      this.cuts.set(`${repo}/${path}`, { afterBytes, markReached });
    });
  }

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((e) => {
        if (!res.headersSent) res.writeHead(500, CORS_HEADERS);
        res.end(String(e));
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    for (const stall of this.stalls.values()) stall.resolve();
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }

  private authorized(repo: HubRepo, req: IncomingMessage): boolean {
    return !repo.token || req.headers.authorization === `Bearer ${repo.token}`;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.log.push({
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      authorization: req.headers.authorization ?? null,
      requestHeaders: (req.headers['access-control-request-headers'] as string | undefined) ?? null,
    });
    if (req.method === 'OPTIONS') {
      res.writeHead(204, CORS_HEADERS);
      res.end();
      return;
    }
    const url = new URL(req.url ?? '/', 'http://localhost');
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    if (req.method === 'POST' || req.method === 'PUT') return this.handleWrite(req, res, parts);
    // /api/models/{owner}/{name}/tree/{rev}
    if (parts[0] === 'api' && parts[1] === 'models' && parts[4] === 'tree') {
      const id = `${parts[2]}/${parts[3]}`;
      const repo = this.repos.get(id);
      if (!repo) return this.notFound(res, 'RepoNotFound');
      if (!this.authorized(repo, req)) return this.unauthorized(res);
      const revision = this.revision(id, parts[5]);
      if (!revision) return this.notFound(res, 'RevisionNotFound');
      const entries = [...revision.files].map(([path, bytes]) => ({
        type: 'file',
        path,
        size: bytes.length,
        oid: gitBlobSha1(isLfs(path) ? new TextEncoder().encode(`lfs pointer ${sha256(bytes)}`) : bytes),
        ...(isLfs(path) ? { lfs: { oid: sha256(bytes), size: bytes.length, pointerSize: 134 } } : {}),
      }));
      res.writeHead(200, { ...CORS_HEADERS, 'Content-Type': 'application/json' });
      res.end(JSON.stringify(entries));
      return;
    }
    // /api/models/{owner}/{name}/revision/{rev}: the repo's info, with the commit sha of rev.
    if (parts[0] === 'api' && parts[1] === 'models' && parts[4] === 'revision') {
      const id = `${parts[2]}/${parts[3]}`;
      const repo = this.repos.get(id);
      if (!repo) return this.notFound(res, 'RepoNotFound');
      if (!this.authorized(repo, req)) return this.unauthorized(res);
      const revision = this.revision(id, parts[5]);
      if (!revision) return this.notFound(res, 'RevisionNotFound');
      return this.json(res, 200, {
        _id: id,
        id,
        sha: revision.sha,
        private: repo.token !== undefined,
        siblings: [...revision.files.keys()].map((rfilename) => ({ rfilename })),
      });
    }
    // /lfs/{sha256}: the content-addressed download the hub's resolve redirects to.
    if (parts[0] === 'lfs' && parts.length === 2) {
      const found = this.byOid.get(parts[1]);
      if (!found) return this.notFound(res, 'EntryNotFound');
      return this.sendFile(req, res, found.repo, found.path, found.bytes);
    }
    // /{owner}/{name}/resolve/{rev}/{path...}
    if (parts[2] === 'resolve') {
      const id = `${parts[0]}/${parts[1]}`;
      const repo = this.repos.get(id);
      const path = parts.slice(4).join('/');
      if (!repo) return this.notFound(res, 'RepoNotFound');
      if (!this.authorized(repo, req)) return this.unauthorized(res);
      const revision = this.revision(id, parts[3]);
      if (!revision) return this.notFound(res, 'RevisionNotFound');
      const commit = { 'X-Repo-Commit': revision.sha };
      const bytes = revision.files.get(path);
      if (!bytes) return this.notFound(res, 'EntryNotFound', commit);
      if (isLfs(path)) {
        res.writeHead(302, {
          ...CORS_HEADERS,
          ...commit,
          Location: `${this.options.lfsBaseUrl ?? ''}/lfs/${sha256(bytes)}`,
          'X-Linked-ETag': `"${sha256(bytes)}"`,
          'X-Linked-Size': String(bytes.length),
        });
        res.end();
        return;
      }
      return this.sendFile(req, res, id, path, bytes, commit);
    }
    this.notFound(res, 'EntryNotFound');
  }

  private async sendFile(
    req: IncomingMessage,
    res: ServerResponse,
    repoId: string,
    path: string,
    original: Uint8Array,
    extraHeaders: Record<string, string> = {},
  ): Promise<void> {
    let bytes = original;
    if (this.corrupt.has(`${repoId}/${path}`)) {
      bytes = original.slice();
      bytes[Math.floor(bytes.length / 2)] ^= 0xff;
    }
    const range = req.headers.range ?? null;
    this.requests.push({ repo: repoId, path, range });
    if (this.outageStatus !== undefined) {
      res.writeHead(this.outageStatus, CORS_HEADERS);
      res.end('the hub is unavailable');
      return;
    }
    let start = 0;
    let end = bytes.length - 1;
    let status = 200;
    if (range) {
      const m = /^bytes=(\d+)-(\d*)$/.exec(range);
      if (!m || Number(m[1]) >= bytes.length) {
        res.writeHead(416, { ...CORS_HEADERS, 'Content-Range': `bytes */${bytes.length}` });
        res.end();
        return;
      }
      start = Number(m[1]);
      end = m[2] ? Math.min(Number(m[2]), bytes.length - 1) : bytes.length - 1;
      status = 206;
    }
    const etag = isLfs(path) ? sha256(original) : gitBlobSha1(original);
    res.writeHead(status, {
      ...CORS_HEADERS,
      ...extraHeaders,
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(end - start + 1),
      'Accept-Ranges': 'bytes',
      ETag: `"${etag}"`,
      ...(this.options.xCache ? { 'X-Cache': this.options.xCache } : {}),
      ...(status === 206 ? { 'Content-Range': `bytes ${start}-${end}/${bytes.length}` } : {}),
    });
    let stall = this.stalls.get(`${repoId}/${path}`);
    const cut = this.cuts.get(`${repoId}/${path}`);
    const cutAt = cut && cut.afterBytes > start && cut.afterBytes <= end ? cut.afterBytes : undefined;
    if (cutAt !== undefined) this.cuts.delete(`${repoId}/${path}`);
    let at = start;
    // Small writes, so a stall lands mid-file and progress is visible.
    const piece = 4096;
    while (at <= end) {
      if (stall && at >= stall.afterBytes) {
        stall.markReached();
        await stall.release;
        if (!stall.resume) {
          res.destroy();
          return;
        }
        stall = undefined;
      }
      if (cutAt !== undefined && at >= cutAt) {
        // Let the bytes sent so far reach the client, then drop the connection.
        await new Promise<void>((resolve) => res.write('', () => resolve()));
        await new Promise((resolve) => setTimeout(resolve, 50));
        res.socket?.destroy();
        cut?.markReached();
        return;
      }
      const stop = Math.min(end + 1, at + piece, stall?.afterBytes ?? end + 1, cutAt ?? end + 1);
      const ok = res.write(bytes.subarray(at, stop));
      at = stop;
      if (!ok) await new Promise((resolve) => res.once('drain', resolve));
      if (this.pieceDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.pieceDelayMs));
    }
    res.end();
  }

  private canWrite(req: IncomingMessage): boolean {
    const auth = req.headers.authorization ?? '';
    return auth.startsWith('Bearer ') && this.writeTokens.has(auth.slice('Bearer '.length));
  }

  private json(res: ServerResponse, status: number, value: unknown): void {
    res.writeHead(status, { ...CORS_HEADERS, 'Content-Type': 'application/json' });
    res.end(JSON.stringify(value));
  }

  private async handleWrite(req: IncomingMessage, res: ServerResponse, parts: string[]): Promise<void> {
    // PUT /upload/{sha256}: LFS content, on the storage server (no token needed: the URL is the grant).
    if (req.method === 'PUT' && parts[0] === 'upload' && parts.length === 2) {
      const bytes = new Uint8Array(await body(req));
      if (sha256(bytes) !== parts[1]) return this.json(res, 400, { error: 'sha256 mismatch' });
      this.uploaded.set(parts[1], bytes);
      res.writeHead(200, CORS_HEADERS);
      res.end();
      return;
    }
    if (!this.canWrite(req))
      return this.json(res, 401, { error: 'Invalid credentials in Authorization header' });
    // POST /api/repos/create {name, organization, type}
    if (parts.join('/') === 'api/repos/create') {
      const payload = JSON.parse((await body(req)).toString('utf8')) as {
        name: string;
        organization: string;
      };
      const id = `${payload.organization}/${payload.name}`;
      if (this.repos.has(id))
        return this.json(res, 409, {
          error: 'You already created this model repo',
          url: `${this.url}/${id}`,
        });
      this.repos.set(id, { files: new Map(), token: undefined });
      return this.json(res, 200, { url: `${this.url}/${id}`, id });
    }
    // POST /api/models/{owner}/{name}/preupload/{rev}
    if (parts[0] === 'api' && parts[1] === 'models' && parts[4] === 'preupload') {
      const id = `${parts[2]}/${parts[3]}`;
      if (!this.repos.has(id)) return this.notFound(res, 'RepoNotFound');
      const payload = JSON.parse((await body(req)).toString('utf8')) as { files: { path: string }[] };
      return this.json(res, 200, {
        files: payload.files.map((f) => ({ path: f.path, uploadMode: isLfs(f.path) ? 'lfs' : 'regular' })),
        commitOid: 'preupload',
      });
    }
    // POST /{owner}/{name}.git/info/lfs/objects/batch
    if (parts[1]?.endsWith('.git') && parts.slice(2).join('/') === 'info/lfs/objects/batch') {
      const id = `${parts[0]}/${parts[1].slice(0, -'.git'.length)}`;
      if (!this.repos.has(id)) return this.notFound(res, 'RepoNotFound');
      const payload = JSON.parse((await body(req)).toString('utf8')) as {
        objects: { oid: string; size: number }[];
      };
      const storage = this.lfsStorage ?? this;
      return this.json(res, 200, {
        transfer: 'basic',
        objects: payload.objects.map((o) => ({
          oid: o.oid,
          size: o.size,
          authenticated: true,
          ...(storage.uploaded.has(o.oid)
            ? {}
            : { actions: { upload: { href: `${storage.url}/upload/${o.oid}` } } }),
        })),
      });
    }
    // POST /api/models/{owner}/{name}/commit/{rev}: NDJSON header, file (base64) and lfsFile lines.
    if (parts[0] === 'api' && parts[1] === 'models' && parts[4] === 'commit') {
      const id = `${parts[2]}/${parts[3]}`;
      const repo = this.repos.get(id);
      if (!repo) return this.notFound(res, 'RepoNotFound');
      const storage = this.lfsStorage ?? this;
      const lines = (await body(req)).toString('utf8').split('\n').filter(Boolean);
      const files = new Map(repo.files);
      for (const line of lines) {
        const entry = JSON.parse(line) as {
          key: string;
          value: { path: string; content?: string; oid?: string };
        };
        if (entry.key === 'file')
          files.set(entry.value.path, new Uint8Array(Buffer.from(entry.value.content ?? '', 'base64')));
        if (entry.key === 'lfsFile') {
          const bytes = storage.uploaded.get(entry.value.oid ?? '');
          if (!bytes)
            return this.json(res, 400, { error: `LFS object ${entry.value.oid} was never uploaded` });
          files.set(entry.value.path, bytes);
        }
      }
      this.addRepo(id, { ...repo, files });
      const commitOid = createHash('sha1').update(lines.join('\n')).digest('hex');
      return this.json(res, 200, {
        success: true,
        commitOid,
        commitUrl: `${this.url}/${id}/commit/${commitOid}`,
      });
    }
    this.notFound(res, 'EntryNotFound');
  }

  private notFound(res: ServerResponse, code: string, extraHeaders: Record<string, string> = {}): void {
    res.writeHead(404, {
      ...CORS_HEADERS,
      ...extraHeaders,
      'X-Error-Code': code,
      'Content-Type': 'application/json',
    });
    res.end(JSON.stringify({ error: code }));
  }

  private unauthorized(res: ServerResponse): void {
    res.writeHead(401, { ...CORS_HEADERS, 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: 'Access to this repo is restricted; pass a token' }));
  }
}
