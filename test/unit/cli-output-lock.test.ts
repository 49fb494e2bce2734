/**
 * Two real `l2s-merge` processes for one OUT_DIR (src/cli/output-lock.ts): while the first holds the
 * folder's lock (its hub download stalled by the local test hub), a second run for the same folder,
 * however spelled, fails at once naming the folder and the first run's process, and touches nothing;
 * the first then finishes and removes its lock. A lock left by a killed run, or one on another host
 * that has not been touched for STALE_LOCK_MS, is taken over; a fresh one on another host is not.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeTinyModel, TINY_TRIO, type TinyModelFiles } from '../../src/demo/tiny-qwen';
import { STALE_LOCK_MS } from '../../src/node/file-lock';
import { HubServer } from '../browser/hub-server';
import { buildCliBin, expectOk, failureLine, messageLines, runBin } from '../fixtures/cli-bin';
import { writeModel } from '../fixtures/tiny';

const SYSTEM1 = 'test-org/tiny-qwen-system1';
const SYSTEM2 = 'test-org/tiny-qwen-system2';

const recipe = (base: string, model: string) => `merge_method: task_arithmetic
base_model: ${base}
models:
  - model: ${model}
    parameters: {weight: 0.7}
dtype: bfloat16
`;

let bin: string;
let disposeBin: () => Promise<void>;
let dir: string;
let models: TinyModelFiles[];
let hub: HubServer | undefined;

beforeAll(async () => {
  ({ bin, dispose: disposeBin } = await buildCliBin());
  dir = await mkdtemp(join(tmpdir(), 'l2s-cli-lock-'));
  models = await Promise.all(TINY_TRIO.map((spec) => makeTinyModel(spec)));
}, 180_000);

afterEach(async () => {
  await hub?.stop();
  hub = undefined;
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  await disposeBin?.();
});

/** A fresh folder holding the local models and a recipe of them, with an empty Hugging Face home. */
async function workDir(recipeText = recipe('tiny-qwen-system1', 'tiny-qwen-system2')) {
  const work = await mkdtemp(join(dir, 'run-'));
  for (const m of models) await writeModel(work, m);
  await writeFile(join(work, 'r.yml'), recipeText);
  const env = { HF_HOME: join(work, 'hf-home'), HF_TOKEN: '', HF_ENDPOINT: '', HF_HUB_OFFLINE: '' };
  return { work, env };
}

function l2s(args: string[], env: NodeJS.ProcessEnv, options: Parameters<typeof runBin>[2] = {}) {
  return runBin(bin, [...args, '--device', 'cpu'], { ...options, env: { ...env, ...options.env } });
}

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const gone = spawn(process.execPath, ['-e', '']);
  await new Promise((done) => gone.on('exit', done));
  return gone.pid as number;
}

async function writeLock(path: string, owner: { pid: number; host: string; started: Date }): Promise<void> {
  const { pid, host, started } = owner;
  await writeFile(path, `${JSON.stringify({ pid, host, started: started.toISOString(), token: 'f00d' })}\n`);
}

describe('l2s-merge locks its output folder for the run', () => {
  it("fails a second run for the same OUT_DIR at once, naming the folder and the first run's process", async () => {
    const { work, env } = await workDir(recipe(SYSTEM1, SYSTEM2));
    hub = new HubServer();
    hub.addRepo(SYSTEM1, { files: models[0].files });
    hub.addRepo(SYSTEM2, { files: models[2].files });
    await hub.start();
    // The first run takes the lock before its downloads; the stall holds it there.
    const stall = hub.stallFile(SYSTEM1, 'model.safetensors', 65_536, { resume: true });
    const out = join(work, 'out');
    let child: ChildProcess | undefined;
    const firstRun = l2s([join(work, 'r.yml'), out, '--hub-endpoint', hub.url], env, {
      onStderr: (_text, c) => {
        child = c;
      },
      timeoutMs: 120_000,
    });
    await stall.reached;
    const lockPath = join(work, '.out.lock');
    const lock = JSON.parse(await readFile(lockPath, 'utf8'));
    expect(child?.pid).toBeDefined();
    expect(lock.pid).toBe(child?.pid);
    expect(lock.host).toBe(hostname());
    const siblings = (await readdir(work)).sort();

    // Spelled through a link to the same parent folder, it is the same OUT_DIR.
    await symlink(work, join(work, 'same'));
    for (const spelling of [out, join(work, 'same', 'out')]) {
      const second = await l2s([join(work, 'r.yml'), spelling, '--hub-endpoint', hub.url], env);
      expect(failureLine(second)).toBe(
        `l2s-merge: OutputLockedError: ${spelling}: another l2s-merge run is writing this output folder ` +
          `(process ${lock.pid} on ${lock.host}, since ${lock.started}); wait for it to finish or choose another ` +
          `OUT_DIR (its lock is ${lockPath})`,
      );
      // It failed before cleaning up after killed runs, downloading or writing anything.
      expect((await readdir(work)).filter((e) => e !== 'same').sort()).toEqual(siblings);
      expect(JSON.parse(await readFile(lockPath, 'utf8'))).toEqual(lock);
    }

    stall.release();
    expectOk(await firstRun);
    expect(existsSync(join(out, 'model.safetensors'))).toBe(true);
    expect(existsSync(lockPath)).toBe(false);
  }, 240_000);

  it('takes over the lock of a run that was killed, and says so', async () => {
    const { work, env } = await workDir();
    const lockPath = join(work, '.out.lock');
    const pid = await deadPid();
    await writeLock(lockPath, { pid, host: hostname(), started: new Date() });
    const r = await l2s([join(work, 'r.yml'), join(work, 'out')], env);
    expectOk(r);
    expect(messageLines(r.stderr)).toContain(
      `l2s-merge: taking over the output folder's lock ${lockPath}: its process ${pid} is no longer running`,
    );
    expect(existsSync(join(work, 'out', 'model.safetensors'))).toBe(true);
    expect(existsSync(lockPath)).toBe(false);
  }, 120_000);

  it('leaves a fresh lock of another host alone, and takes over one untouched for STALE_LOCK_MS', async () => {
    const { work, env } = await workDir();
    const out = join(work, 'out');
    const lockPath = join(work, '.out.lock');
    // A pid cannot be checked on another host: only the lock's age tells.
    const started = new Date(Date.now() - STALE_LOCK_MS - 60_000);
    await writeLock(lockPath, { pid: process.pid, host: 'another-host.example', started });
    const refused = await l2s([join(work, 'r.yml'), out], env);
    expect(failureLine(refused)).toBe(
      `l2s-merge: OutputLockedError: ${out}: another l2s-merge run is writing this output folder ` +
        `(process ${process.pid} on another-host.example, since ${started.toISOString()}); wait for it to ` +
        `finish or choose another OUT_DIR (its lock is ${lockPath})`,
    );
    expect(existsSync(out)).toBe(false);

    // The owner touches its lock every minute; one untouched for longer than STALE_LOCK_MS is stale.
    await utimes(lockPath, started, started);
    const r = await l2s([join(work, 'r.yml'), out], env);
    expectOk(r);
    const notice = messageLines(r.stderr).find((l) => l.includes("taking over the output folder's lock"));
    expect(notice).toMatch(
      new RegExp(
        `^l2s-merge: taking over the output folder's lock ${lockPath}: no sign of progress for \\d+ s `,
      ),
    );
    expect(existsSync(lockPath)).toBe(false);
  }, 120_000);
});
