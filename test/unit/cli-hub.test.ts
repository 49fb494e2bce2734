/**
 * The real `l2s-merge` binary resolving hub ids against the local test hub (test/browser/hub-server.ts,
 * a real HTTP server): downloads into the Hugging Face cache layout, resume after a broken transfer
 * or Ctrl-C, a corrupted file refused, `@revision`, `--offline`, the token kept from the CDN.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import {
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { homedir, hostname, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeTinyModel, TINY_TRIO, type TinyModelFiles } from '../../src/demo/tiny-qwen';
import { hubCacheDir, hubSettings, hubToken } from '../../src/node/hub-settings';
import { HubServer } from '../browser/hub-server';
import { buildCliBin, expectOk, failureLine, runBin } from '../fixtures/cli-bin';
import { writeModel } from '../fixtures/tiny';

const SYSTEM1 = 'test-org/tiny-qwen-system1';
const SYSTEM2 = 'test-org/tiny-qwen-system2';
/** system1's only shard: the file cut, stalled and corrupted below. */
const SHARD = 'model.safetensors';

const hubRecipe = (system2 = SYSTEM2) => `merge_method: task_arithmetic
base_model: ${SYSTEM1}
models:
  - model: ${system2}
    parameters: {weight: 0.7}
dtype: bfloat16
`;

let bin: string;
let disposeBin: () => Promise<void>;
let dir: string;
let system1: TinyModelFiles;
let system2: TinyModelFiles;
let instruct: TinyModelFiles;
const servers: HubServer[] = [];

beforeAll(async () => {
  ({ bin, dispose: disposeBin } = await buildCliBin());
  dir = await mkdtemp(join(tmpdir(), 'l2s-cli-hub-'));
  [system1, instruct, system2] = await Promise.all(TINY_TRIO.map((spec) => makeTinyModel(spec)));
  for (const m of [system1, instruct, system2]) await writeModel(join(dir, 'local'), m);
}, 120_000);

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  await disposeBin?.();
});

/** A hub serving system1 and system2 (system2 also as branch v2 holding the instruct model's files). */
async function startHub(options: { token?: string; lfsBaseUrl?: string } = {}): Promise<HubServer> {
  const hub = new HubServer({ lfsBaseUrl: options.lfsBaseUrl });
  hub.addRepo(SYSTEM1, { files: system1.files, token: options.token });
  hub.addRepo(SYSTEM2, {
    files: system2.files,
    token: options.token,
    otherRevisions: new Map([['v2', instruct.files]]),
  });
  await hub.start();
  servers.push(hub);
  return hub;
}

/** A fresh folder for one test: the recipe, an empty cache and HF_HOME. */
async function workDir(
  recipe = hubRecipe(),
): Promise<{ work: string; cache: string; env: NodeJS.ProcessEnv }> {
  const work = await mkdtemp(join(dir, 'run-'));
  await writeFile(join(work, 'r.yml'), recipe);
  const cache = join(work, 'hf-home', 'hub');
  return {
    work,
    cache,
    // HF_HOME keeps the user's own cache and token file out of the test.
    env: {
      HF_HOME: join(work, 'hf-home'),
      HF_HUB_CACHE: cache,
      HF_TOKEN: '',
      HF_ENDPOINT: '',
      HF_HUB_OFFLINE: '',
    },
  };
}

function l2s(args: string[], env: NodeJS.ProcessEnv, options: Parameters<typeof runBin>[2] = {}) {
  return runBin(bin, [...args, '--device', 'cpu'], { ...options, env: { ...env, ...options.env } });
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
const gitSha1 = (bytes: Uint8Array) =>
  createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
const blobName = (path: string, bytes: Uint8Array) =>
  path.endsWith('.safetensors') ? sha256(bytes) : gitSha1(bytes);

/** Every file of a merge output except the two that name the models (the recipe and the card). */
async function outputBytes(out: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const f of (await readdir(out)).sort()) {
    if (f === 'mergekit_config.yml' || f === 'README.md') continue;
    files.set(f, sha256(await readFile(join(out, f))));
  }
  return files;
}

let localMerge: Map<string, Map<string, string>> | undefined;
/** The merge of the local folders (system2 or instruct as the second model), made once. */
async function localOutput(second: 'tiny-qwen-system2' | 'tiny-qwen-instruct'): Promise<Map<string, string>> {
  localMerge ??= new Map();
  const known = localMerge.get(second);
  if (known) return known;
  const work = await mkdtemp(join(dir, 'local-'));
  await writeFile(
    join(work, 'r.yml'),
    hubRecipe(`../local/${second}`).replace(SYSTEM1, '../local/tiny-qwen-system1'),
  );
  expectOk(await l2s([join(work, 'r.yml'), join(work, 'out'), '--quiet'], {}));
  const bytes = await outputBytes(join(work, 'out'));
  localMerge.set(second, bytes);
  return bytes;
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const repoDir = (cache: string, repo: string) => join(cache, `models--${repo.replace('/', '--')}`);

function fileRequests(hub: HubServer, path: string) {
  return hub.requests.filter((r) => r.path === path && r.range !== 'bytes=0-0');
}

describe('l2s-merge with hub ids', () => {
  it('downloads into the Hugging Face cache layout and merges the same bytes as the local folders', async () => {
    const hub = await startHub();
    const { work, cache, env } = await workDir();
    const run = await l2s([join(work, 'r.yml'), join(work, 'out'), '--hub-endpoint', hub.url], env);
    expectOk(run);
    expect(run.stderr).toContain(`${SYSTEM1}@main: downloading ${system1.files.size} file(s)`);
    expect(await outputBytes(join(work, 'out'))).toEqual(await localOutput('tiny-qwen-system2'));

    for (const [repo, model] of [
      [SYSTEM1, system1],
      [SYSTEM2, system2],
    ] as const) {
      const root = repoDir(cache, repo);
      const commit = hub.revisions(repo).get('main')?.sha as string;
      expect(await readFile(join(root, 'refs', 'main'), 'utf8')).toBe(commit);
      const snapshot = join(root, 'snapshots', commit);
      expect((await readdir(snapshot)).sort()).toEqual([...model.files.keys()].sort());
      for (const [name, bytes] of model.files) {
        const link = join(snapshot, name);
        expect((await lstat(link)).isSymbolicLink(), name).toBe(true);
        expect(await readlink(link)).toBe(`../../blobs/${blobName(name, bytes)}`);
        expect(sha256(await readFile(link))).toBe(sha256(bytes));
      }
      expect((await readdir(join(root, 'blobs'))).sort()).toEqual(
        [...model.files].map(([name, bytes]) => blobName(name, bytes)).sort(),
      );
    }

    // Complete in the cache: a second run asks the hub for the revision and listing, not for files.
    const before = hub.requests.length;
    expectOk(await l2s([join(work, 'r.yml'), join(work, 'out2'), '--hub-endpoint', hub.url], env));
    expect(hub.requests.slice(before)).toEqual([]);
    expect(await outputBytes(join(work, 'out2'))).toEqual(await localOutput('tiny-qwen-system2'));
  }, 120_000);

  it('resumes a transfer that broke off with a Range request from where it stopped', async () => {
    const hub = await startHub();
    const { work, cache, env } = await workDir();
    const shard = system1.files.get(SHARD) as Uint8Array;
    const cutAt = 40_000 + 123;
    const cut = hub.cutFile(SYSTEM1, SHARD, cutAt);
    const first = await l2s([join(work, 'r.yml'), join(work, 'out'), '--hub-endpoint', hub.url], env);
    await cut;
    const line = failureLine(first);
    expect(line).toContain(
      `HubTransferError: ${SYSTEM1}@main/${SHARD}: the transfer broke off at byte ${cutAt} of ${shard.length}`,
    );
    expect(line).toContain('run again to resume from there');
    const incomplete = join(repoDir(cache, SYSTEM1), 'blobs', `${sha256(shard)}.incomplete`);
    expect((await stat(incomplete)).size).toBe(cutAt);
    expect(existsSync(join(work, 'out'))).toBe(false);

    const before = fileRequests(hub, SHARD).length;
    const second = await l2s([join(work, 'r.yml'), join(work, 'out'), '--hub-endpoint', hub.url], env);
    expectOk(second);
    expect(second.stderr).toContain(`${SYSTEM1}@main/${SHARD}: resuming at byte ${cutAt} of ${shard.length}`);
    expect(
      fileRequests(hub, SHARD)
        .slice(before)
        .map((r) => r.range),
    ).toEqual([`bytes=${cutAt}-`]);
    expect(existsSync(incomplete)).toBe(false);
    expect(sha256(await readFile(join(repoDir(cache, SYSTEM1), 'blobs', sha256(shard))))).toBe(sha256(shard));
    expect(await outputBytes(join(work, 'out'))).toEqual(await localOutput('tiny-qwen-system2'));
  }, 120_000);

  it('Ctrl-C during a download stops it resumably; the next run continues from the same byte', async () => {
    const hub = await startHub();
    const { work, cache, env } = await workDir();
    const shard = system1.files.get(SHARD) as Uint8Array;
    const stallAt = 65_536;
    const stall = hub.stallFile(SYSTEM1, SHARD, stallAt);
    let child: ChildProcess | undefined;
    const stopped = l2s([join(work, 'r.yml'), join(work, 'out'), '--hub-endpoint', hub.url], env, {
      onStderr: (_text, c) => {
        child = c;
      },
    });
    // The server has sent stallAt bytes and waits; the client has them once they are on disk.
    await stall.reached;
    const incomplete = join(repoDir(cache, SYSTEM1), 'blobs', `${sha256(shard)}.incomplete`);
    for (let i = 0; i < 200 && (await stat(incomplete).catch(() => undefined))?.size !== stallAt; i++)
      await new Promise((r) => setTimeout(r, 25));
    expect(child, 'the CLI said nothing before the download').toBeDefined();
    child?.kill('SIGINT');
    const r = await stopped;
    stall.release();
    expect(r.code, r.stderr).toBe(130);
    expect(r.stderr).toContain(
      `${SYSTEM1}@main/${SHARD}: stopped at byte ${stallAt} of ${shard.length}; the next run resumes from there`,
    );
    expect((await stat(incomplete)).size).toBe(stallAt);

    const before = fileRequests(hub, SHARD).length;
    expectOk(await l2s([join(work, 'r.yml'), join(work, 'out'), '--hub-endpoint', hub.url], env));
    expect(
      fileRequests(hub, SHARD)
        .slice(before)
        .map((x) => x.range),
    ).toEqual([`bytes=${stallAt}-`]);
    expect(await outputBytes(join(work, 'out'))).toEqual(await localOutput('tiny-qwen-system2'));
  }, 120_000);

  it('two runs at once fetch each file once: one waits for the other’s lock, then uses its blobs', async () => {
    const hub = await startHub();
    // Slow transfers, and system1's shard pauses mid-way until the other run is seen waiting for it
    // (with a progress line), so the two downloads overlap whatever the start-up times.
    hub.pieceDelayMs = 2;
    const shard = system1.files.get(SHARD) as Uint8Array;
    const stall = hub.stallFile(SYSTEM1, SHARD, 65_536, { resume: true });
    const { work, cache, env } = await workDir();
    const lockPath = join(cache, '.locks', `models--${SYSTEM1.replace('/', '--')}`, `${sha256(shard)}.lock`);
    const waitLine = `${SYSTEM1}@main/${SHARD}: waiting for another download of this file (process `;
    const children: ChildProcess[] = [];
    let lockSeen: { pid: number; host: string; started: string } | undefined;
    const run = (i: number) =>
      l2s([join(work, 'r.yml'), join(work, `out-${i}`), '--hub-endpoint', hub.url], env, {
        onStderr: (text, child) => {
          children[i] = child;
          const at = text.indexOf(waitLine);
          if (at < 0) return;
          lockSeen ??= JSON.parse(readFileSync(lockPath, 'utf8'));
          if (text.slice(at).includes(`% ${SYSTEM1}@main ${SHARD}, `)) stall.release();
        },
      });
    const runs = await Promise.all([run(0), run(1)]);
    for (const r of runs) expectOk(r);
    const waiter = runs.findIndex((r) => r.stderr.includes(waitLine));
    expect(waiter, runs.map((r) => r.stderr).join('\n---\n')).toBeGreaterThanOrEqual(0);
    const holder = 1 - waiter;
    expect(runs[holder].stderr).not.toContain(waitLine);
    // The lock held the holder's pid, this host and when it was taken.
    expect(lockSeen?.pid).toBe(children[holder].pid);
    expect(lockSeen?.host).toBe(hostname());
    expect(Date.now() - Date.parse(lockSeen?.started ?? '')).toBeLessThan(60_000);
    const waited = runs[waiter].stderr;
    expect(waited).toContain(
      `l2s-merge: ${waitLine}${lockSeen?.pid} on ${hostname()}, since ${lockSeen?.started}); its lock is ${lockPath}\n`,
    );
    expect(waited).toContain(
      `l2s-merge: ${SYSTEM1}@main/${SHARD}: downloaded by the other process; using it\n`,
    );

    // One transfer of every file, whole; both merges equal the local one; no lock or partial left.
    for (const [repo, model] of [
      [SYSTEM1, system1],
      [SYSTEM2, system2],
    ] as const) {
      for (const name of model.files.keys()) {
        const transfers = hub.requests.filter((q) => q.repo === repo && q.path === name);
        expect(
          transfers.map((q) => q.range),
          `${repo}/${name}`,
        ).toEqual([null]);
      }
      expect(await readdir(join(cache, '.locks', `models--${repo.replace('/', '--')}`))).toEqual([]);
      expect((await readdir(join(repoDir(cache, repo), 'blobs'))).filter((b) => b.includes('.'))).toEqual([]);
    }
    for (const i of [0, 1])
      expect(await outputBytes(join(work, `out-${i}`))).toEqual(await localOutput('tiny-qwen-system2'));
  }, 120_000);

  it('takes over a stale lock: its process is gone, or nothing moved for longer than the bound', async () => {
    const hub = await startHub();
    const { work, cache, env } = await workDir();
    const shard = system1.files.get(SHARD) as Uint8Array;
    const locks = (repo: string) => join(cache, '.locks', `models--${repo.replace('/', '--')}`);
    const lock1 = join(locks(SYSTEM1), `${sha256(shard)}.lock`);
    // A process that has exited: its pid is free.
    const gone = spawn(process.execPath, ['-e', '']);
    const deadPid = gone.pid as number;
    await new Promise((r) => gone.on('close', r));
    await mkdir(locks(SYSTEM1), { recursive: true });
    await writeFile(
      lock1,
      JSON.stringify({ pid: deadPid, host: hostname(), started: new Date().toISOString(), token: 'x' }),
    );
    // huggingface_hub's kind of lock (an empty file), an hour old, on system2's config.json.
    const config2 = system2.files.get('config.json') as Uint8Array;
    const lock2 = join(locks(SYSTEM2), `${gitSha1(config2)}.lock`);
    await mkdir(locks(SYSTEM2), { recursive: true });
    await writeFile(lock2, '');
    const hourAgo = new Date(Date.now() - 3600_000);
    await utimes(lock2, hourAgo, hourAgo);

    const r = await l2s([join(work, 'r.yml'), join(work, 'out'), '--hub-endpoint', hub.url], env);
    expectOk(r);
    expect(r.stderr).toContain(
      `l2s-merge: ${SYSTEM1}@main/${SHARD}: taking over the download lock ${lock1}: its process ${deadPid} is no longer running\n`,
    );
    expect(r.stderr).toMatch(
      new RegExp(
        `l2s-merge: ${SYSTEM2}@main/config\\.json: taking over the download lock ${escapeRegExp(lock2)}: no sign of progress for 36\\d\\d s ` +
          `\\(a lock without a process id, such as huggingface_hub's, last changed ${hourAgo.toISOString().slice(0, 16)}`,
      ),
    );
    expect(r.stderr).not.toContain('waiting for another download');
    expect(await readdir(locks(SYSTEM1))).toEqual([]);
    expect(await readdir(locks(SYSTEM2))).toEqual([]);
    expect(await outputBytes(join(work, 'out'))).toEqual(await localOutput('tiny-qwen-system2'));

    // A live process (this one) whose lock and partial file are an hour old: hung, taken over, and
    // its partial file resumed.
    const again = await workDir();
    const lock3 = join(
      again.cache,
      '.locks',
      `models--${SYSTEM1.replace('/', '--')}`,
      `${sha256(shard)}.lock`,
    );
    await mkdir(dirname(lock3), { recursive: true });
    const started = hourAgo.toISOString();
    await writeFile(lock3, JSON.stringify({ pid: process.pid, host: hostname(), started, token: 'y' }));
    const blobs = join(repoDir(again.cache, SYSTEM1), 'blobs');
    await mkdir(blobs, { recursive: true });
    const incomplete = join(blobs, `${sha256(shard)}.incomplete`);
    await writeFile(incomplete, shard.subarray(0, 40_000));
    await utimes(incomplete, hourAgo, hourAgo);
    const before = fileRequests(hub, SHARD).length;
    const hung = await l2s(
      [join(again.work, 'r.yml'), join(again.work, 'out'), '--hub-endpoint', hub.url],
      again.env,
    );
    expectOk(hung);
    expect(hung.stderr).toMatch(
      new RegExp(
        `l2s-merge: ${SYSTEM1}@main/${SHARD}: taking over the download lock ${escapeRegExp(lock3)}: no sign of progress for 36\\d\\d s ` +
          `\\(process ${process.pid} on ${hostname()}, since ${started}\\)\n`,
      ),
    );
    expect(hung.stderr).toContain(`${SYSTEM1}@main/${SHARD}: resuming at byte 40000 of ${shard.length}`);
    expect(
      fileRequests(hub, SHARD)
        .slice(before)
        .filter((q) => q.repo === SYSTEM1)
        .map((q) => q.range),
    ).toEqual(['bytes=40000-']);
    expect(existsSync(lock3)).toBe(false);
    expect(await outputBytes(join(again.work, 'out'))).toEqual(await localOutput('tiny-qwen-system2'));
  }, 120_000);

  it('refuses a corrupted file, naming repo, file and both hashes, and keeps nothing of it', async () => {
    const hub = await startHub();
    const { work, cache, env } = await workDir();
    hub.corruptFile(SYSTEM1, SHARD);
    const shard = system1.files.get(SHARD) as Uint8Array;
    const corrupted = shard.slice();
    corrupted[Math.floor(corrupted.length / 2)] ^= 0xff;
    const r = await l2s([join(work, 'r.yml'), join(work, 'out'), '--hub-endpoint', hub.url], env);
    expect(failureLine(r)).toBe(
      `l2s-merge: HubChecksumError: ${SYSTEM1}@main/${SHARD}: the downloaded bytes have sha256 ${sha256(corrupted)}, ` +
        `but the hub lists ${sha256(shard)}; the download was discarded (nothing kept in the cache); run again to download it afresh`,
    );
    const root = repoDir(cache, SYSTEM1);
    const blobs = await readdir(join(root, 'blobs'));
    expect(blobs.filter((b) => b.startsWith(sha256(shard)))).toEqual([]);
    const commit = hub.revisions(SYSTEM1).get('main')?.sha as string;
    expect(existsSync(join(root, 'snapshots', commit, SHARD))).toBe(false);
    expect(existsSync(join(work, 'out'))).toBe(false);
  }, 120_000);

  it('downloads model@revision (a branch, then its commit sha with the hub stopped)', async () => {
    const hub = await startHub();
    const v2 = hub.revisions(SYSTEM2).get('v2')?.sha as string;
    const { work, cache, env } = await workDir(hubRecipe(`${SYSTEM2}@v2`));
    expectOk(await l2s([join(work, 'r.yml'), join(work, 'out'), '--hub-endpoint', hub.url], env));
    // Branch v2 holds the instruct model's files: the merge is the one with the instruct folder.
    expect(await outputBytes(join(work, 'out'))).toEqual(await localOutput('tiny-qwen-instruct'));
    const root = repoDir(cache, SYSTEM2);
    expect(await readFile(join(root, 'refs', 'v2'), 'utf8')).toBe(v2);
    expect(existsSync(join(root, 'refs', 'main'))).toBe(false);
    expect(await readdir(join(root, 'snapshots'))).toEqual([v2]);
    const recipe = await readFile(join(work, 'out', 'mergekit_config.yml'), 'utf8');
    expect(recipe).toContain(`- model: ${SYSTEM2}@v2\n`);

    // A commit sha needs no hub when its snapshot is complete.
    await hub.stop();
    await writeFile(join(work, 'sha.yml'), hubRecipe(`${SYSTEM2}@${v2}`).replace(SYSTEM1, `${SYSTEM1}@main`));
    const offline = await l2s([join(work, 'sha.yml'), join(work, 'out-sha'), '--hub-endpoint', hub.url], env);
    expectOk(offline);
    // main of system1 comes from its cached ref, said so.
    expect(offline.stderr).toContain(
      `${SYSTEM1}@main: cannot reach ${new URL(hub.url).host} (offline?); using the cached snapshot`,
    );
    expect(await outputBytes(join(work, 'out-sha'))).toEqual(await localOutput('tiny-qwen-instruct'));
  }, 120_000);

  it('--offline with an empty cache is refused with the cache folder and how to download', async () => {
    const hub = await startHub();
    const { work, cache, env } = await workDir();
    const r = await l2s(
      [join(work, 'r.yml'), join(work, 'out'), '--hub-endpoint', hub.url, '--offline'],
      env,
    );
    expect(failureLine(r)).toBe(
      `l2s-merge: HubOfflineError: ${SYSTEM1}@main: not in the Hugging Face cache (looked in ${repoDir(cache, SYSTEM1)}), ` +
        'and offline mode (--offline or HF_HUB_OFFLINE) forbids downloading it; run once without --offline to download it ' +
        `(or \`hf download ${SYSTEM1}\`)`,
    );
    expect(hub.log).toEqual([]);
    // HF_HUB_OFFLINE=1 is the same.
    const env1 = await l2s([join(work, 'r.yml'), join(work, 'out')], {
      ...env,
      HF_HUB_OFFLINE: '1',
      HF_ENDPOINT: hub.url,
    });
    expect(failureLine(env1)).toContain('HubOfflineError: ');
    expect(hub.log).toEqual([]);
  }, 60_000);

  it('--offline with a filled cache merges with the hub stopped; without --offline it says the hub is unreachable', async () => {
    const hub = await startHub();
    const { work, env } = await workDir();
    expectOk(await l2s([join(work, 'r.yml'), join(work, 'out'), '--hub-endpoint', hub.url, '--quiet'], env));
    await hub.stop();
    const offline = await l2s(
      [join(work, 'r.yml'), join(work, 'out2'), '--hub-endpoint', hub.url, '--offline'],
      env,
    );
    expectOk(offline);
    expect(offline.stderr).not.toContain('cannot reach');
    expect(await outputBytes(join(work, 'out2'))).toEqual(await localOutput('tiny-qwen-system2'));

    // Nothing cached and no hub: the hub is named.
    const empty = await workDir();
    const r = await l2s(
      [join(empty.work, 'r.yml'), join(empty.work, 'out'), '--hub-endpoint', hub.url],
      empty.env,
    );
    expect(failureLine(r)).toBe(
      `l2s-merge: HubUnreachableError: ${SYSTEM1}@main: cannot reach ${new URL(hub.url).host} (offline?): check the connection and the hub URL, then try again; ` +
        `the model is not in the cache (looked in ${repoDir(empty.cache, SYSTEM1)}) (HF_ENDPOINT or --hub-endpoint sets the hub URL)`,
    );
  }, 120_000);

  it('uses a cache laid out by huggingface_hub (refs, blobs, relative snapshot links)', async () => {
    const { work, cache, env } = await workDir();
    // As huggingface_hub writes it: refs/main holds the sha, snapshot files link to ../../blobs/<etag>.
    const commit = 'a'.repeat(40);
    for (const [repo, model] of [
      [SYSTEM1, system1],
      [SYSTEM2, system2],
    ] as const) {
      const root = repoDir(cache, repo);
      await mkdir(join(root, 'blobs'), { recursive: true });
      await mkdir(join(root, 'refs'), { recursive: true });
      await mkdir(join(root, 'snapshots', commit), { recursive: true });
      await writeFile(join(root, 'refs', 'main'), commit);
      for (const [name, bytes] of model.files) {
        await writeFile(join(root, 'blobs', blobName(name, bytes)), bytes);
        await symlink(`../../blobs/${blobName(name, bytes)}`, join(root, 'snapshots', commit, name));
      }
    }
    expectOk(await l2s([join(work, 'r.yml'), join(work, 'out'), '--offline'], env));
    expect(await outputBytes(join(work, 'out'))).toEqual(await localOutput('tiny-qwen-system2'));
  }, 60_000);

  it('sends HF_TOKEN to the hub and never to the CDN; without it a gated repo says to set HF_TOKEN', async () => {
    const cdn = new HubServer({ xCache: 'Hit from cloudfront' });
    cdn.addRepo(SYSTEM1, { files: system1.files });
    cdn.addRepo(SYSTEM2, { files: system2.files });
    await cdn.start();
    servers.push(cdn);
    const hub = await startHub({ token: 'secret-token', lfsBaseUrl: cdn.url });
    const { work, env } = await workDir();
    // HF_ENDPOINT names a dead hub; the flag wins.
    const dead = 'http://127.0.0.1:9';
    const r = await l2s([join(work, 'r.yml'), join(work, 'out'), '--hub-endpoint', hub.url], {
      ...env,
      HF_ENDPOINT: dead,
      HF_TOKEN: 'secret-token',
    });
    expectOk(r);
    expect(hub.log.length).toBeGreaterThan(0);
    expect(hub.log.every((l) => l.authorization === 'Bearer secret-token')).toBe(true);
    expect(cdn.requests.filter((q) => q.path.endsWith('.safetensors')).length).toBe(3);
    expect(cdn.log.every((l) => l.authorization === null)).toBe(true);
    expect(await outputBytes(join(work, 'out'))).toEqual(await localOutput('tiny-qwen-system2'));

    const denied = await workDir();
    const noToken = await l2s([join(denied.work, 'r.yml'), join(denied.work, 'out')], {
      ...denied.env,
      HF_ENDPOINT: hub.url,
    });
    expect(failureLine(noToken)).toBe(
      `l2s-merge: HubAccessDeniedError: ${SYSTEM1}@main: access denied by ${new URL(hub.url).host} (HTTP 401); ` +
        'if it is gated or private, accept its terms on the hub and set HF_TOKEN to an access token (or log in with `hf auth login`); ' +
        'the hub answers the same for a repo id that does not exist',
    );
    // The token file huggingface_hub's login writes is read too.
    await mkdir(denied.env.HF_HOME as string, { recursive: true });
    await writeFile(join(denied.env.HF_HOME as string, 'token'), 'secret-token\n');
    expectOk(
      await l2s([join(denied.work, 'r.yml'), join(denied.work, 'out'), '--quiet'], {
        ...denied.env,
        HF_ENDPOINT: hub.url,
      }),
    );
  }, 120_000);

  it('a folder under org/name wins over the hub for org/name@revision, as in mergekit, and says so', async () => {
    const { work, env } = await workDir(hubRecipe(`${SYSTEM2}@v2`));
    await writeModel(join(work, 'test-org'), system1);
    await writeModel(join(work, 'test-org'), system2);
    // No hub at all: both models are the folders.
    const r = await l2s(
      [join(work, 'r.yml'), join(work, 'out'), '--hub-endpoint', 'http://127.0.0.1:9'],
      env,
    );
    expectOk(r);
    expect(r.stderr).toContain(
      `l2s-merge: ${SYSTEM2}@v2: using the folder ${join(work, SYSTEM2)}; the revision @v2 applies only to hub models`,
    );
    expect(await outputBytes(join(work, 'out'))).toEqual(await localOutput('tiny-qwen-system2'));
  }, 60_000);

  it('a missing repo or revision fails with HTTP 404 and what to check', async () => {
    const hub = await startHub();
    const { work, env } = await workDir(hubRecipe(`${SYSTEM2}@no-such-branch`));
    const r = await l2s([join(work, 'r.yml'), join(work, 'out'), '--hub-endpoint', hub.url], env);
    expect(failureLine(r)).toBe(
      `l2s-merge: HubNotFoundError: ${SYSTEM2}@no-such-branch: not found on ${new URL(hub.url).host} (HTTP 404); ` +
        'check the repo id and the revision after @ (a branch, tag or commit sha)',
    );
  }, 60_000);

  it('generate runs a hub id as it runs the same local folder', async () => {
    const fixture = 'test/fixtures/qwen2-tiny-l2s/system1';
    const files = new Map<string, Uint8Array>();
    for (const name of await readdir(fixture))
      if (name !== 'reference.json') files.set(name, new Uint8Array(await readFile(join(fixture, name))));
    const hub = new HubServer();
    hub.addRepo('test-org/qwen2-tiny', { files });
    await hub.start();
    servers.push(hub);
    const { work, env } = await workDir();
    const args = ['--prompt', 'What is 2+3?', '--max-new-tokens', '4', '--json', '--device', 'cpu'];
    const fromHub = await runBin(bin, ['generate', 'test-org/qwen2-tiny@main', ...args], {
      cwd: work,
      env: { ...env, HF_ENDPOINT: hub.url },
    });
    expectOk(fromHub);
    const local = await runBin(bin, ['generate', fixture, ...args], { env });
    expectOk(local);
    expect(JSON.parse(fromHub.stdout).token_ids).toHaveLength(4);
    expect(fromHub.stdout).toBe(local.stdout);
  }, 60_000);

  it('eval runs a hub id as it runs the same local folder', async () => {
    const fixture = 'test/fixtures/qwen2-tiny-l2s/system2';
    const files = new Map<string, Uint8Array>();
    for (const name of await readdir(fixture))
      if (name !== 'reference.json') files.set(name, new Uint8Array(await readFile(join(fixture, name))));
    const hub = new HubServer();
    hub.addRepo('test-org/qwen2-tiny-system2', { files });
    await hub.start();
    servers.push(hub);
    const { work, env } = await workDir();
    const questions = join(work, 'q.jsonl');
    await writeFile(
      questions,
      `${JSON.stringify({ question: 'What is 2+3?', answer: '5' })}\n${JSON.stringify({ question: 'What is 34 - 10?', answer: 24 })}\n`,
    );
    const args = [
      '--questions',
      questions,
      '--max-new-tokens',
      '12',
      '--system',
      '',
      '--json',
      '--device',
      'cpu',
    ];
    const hubId = 'test-org/qwen2-tiny-system2@main';
    const fromHub = await runBin(bin, ['eval', hubId, ...args], {
      cwd: work,
      env: { ...env, HF_ENDPOINT: hub.url },
    });
    expectOk(fromHub);
    expect(fromHub.stderr).toContain(`l2s-merge: ${hubId}: downloading ${files.size} file(s)`);
    const local = await runBin(bin, ['eval', resolve(fixture), ...args], { env });
    expectOk(local);
    type EvalOutput = {
      results: Array<{ model: string; text: string; generatedTokens: number }>;
      table: Array<{ model: string }>;
    };
    const hubOut = JSON.parse(fromHub.stdout) as EvalOutput;
    const localOut = JSON.parse(local.stdout) as EvalOutput;
    expect(hubOut.results).toHaveLength(2);
    expect(hubOut.results.every((r) => r.model === hubId && r.generatedTokens > 0)).toBe(true);
    expect(hubOut.table.map((r) => r.model)).toEqual([hubId]);
    // The same responses, grades and table; only the model's name differs.
    expect(fromHub.stdout.replaceAll(JSON.stringify(hubId), JSON.stringify(resolve(fixture)))).toBe(
      local.stdout,
    );
    expect(localOut.results.map((r) => r.text)).toEqual(hubOut.results.map((r) => r.text));
  }, 60_000);
});

describe('hub settings, read as huggingface_hub reads them', () => {
  it('takes the cache from HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub', () => {
    expect(hubCacheDir({ HF_HUB_CACHE: '/c', HF_HOME: '/h' })).toBe('/c');
    expect(hubCacheDir({ HF_HOME: '/h' })).toBe('/h/hub');
    expect(hubCacheDir({ XDG_CACHE_HOME: '/x' })).toBe('/x/huggingface/hub');
    expect(hubCacheDir({})).toBe(join(homedir(), '.cache', 'huggingface', 'hub'));
  });

  it('reads HF_TOKEN, else HF_TOKEN_PATH, else HF_HOME/token, trimmed', async () => {
    const home = await mkdtemp(join(dir, 'home-'));
    await writeFile(join(home, 'token'), '  from-home\n');
    await writeFile(join(home, 'other'), 'from-path\n');
    expect(await hubToken({ HF_TOKEN: ' env ', HF_HOME: home })).toBe('env');
    expect(await hubToken({ HF_TOKEN_PATH: join(home, 'other'), HF_HOME: home })).toBe('from-path');
    expect(await hubToken({ HF_HOME: home })).toBe('from-home');
    expect(await hubToken({ HF_HOME: join(home, 'none') })).toBeUndefined();
  });

  it('lets --hub-endpoint win over HF_ENDPOINT, and HF_HUB_OFFLINE take 1/ON/YES/TRUE', async () => {
    const env = { HF_ENDPOINT: 'https://mirror.example/', HF_HOME: dir };
    expect((await hubSettings({}, env)).endpoint).toBe('https://mirror.example');
    expect((await hubSettings({ endpoint: 'http://127.0.0.1:1' }, env)).endpoint).toBe('http://127.0.0.1:1');
    expect((await hubSettings({}, { HF_HOME: dir })).endpoint).toBe('https://huggingface.co');
    for (const on of ['1', 'on', 'YES', 'true'])
      expect((await hubSettings({}, { HF_HUB_OFFLINE: on })).offline).toBe(true);
    for (const off of ['0', '', 'no'])
      expect((await hubSettings({}, { HF_HUB_OFFLINE: off })).offline).toBe(false);
    await expect(hubSettings({ endpoint: 'ftp://x' }, env)).rejects.toThrow(
      "the hub address 'ftp://x' is not an http(s) URL",
    );
  });
});
