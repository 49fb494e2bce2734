// npm run bench, browser rows: the cases of bench/run.mjs (synthetic models with Qwen2.5-0.5B's
// tensor shapes, bf16, base + 1 model) measured inside a module Web Worker in headless Chromium, on
// the CPU backend (with --threads 1,2: the kernels in the worker, and on two kernel workers) and on
// the GPU backend (WebGPU) when the worker gets an adapter.
//
// The page (bench/browser/index.html) is served by Vite; the worker makes the models in memory as
// Blobs, merges into OPFS (or into a sink that discards, with --output discard) and reports each
// run here. Cases run round by round, interleaved; each row is a median. Ratios are floor time /
// case time, against the one storage floor of this run (read every input tensor a chunk of rows at
// a time into reused buffers, write the same output
// to the same kind of output, no math).
//
// The default embedding has 8192 rows, not Qwen2.5's 151936: it alone would be 82% of the model,
// and on a software adapter (SwiftShader) the GPU rows of a full one take minutes. `--vocab 151936`
// measures the real shapes. GPU rows run `--gpu-repeat` rounds (default 1), the others `--repeat`.
//
// Memory: "peak PSS" is the proportional set size of all the browser's processes (shared pages
// counted once), sampled from Linux's /proc while the run goes; it includes the models' Blobs and,
// on a software adapter, the GPU's memory. "JS peak" is the page's own measureUserAgentSpecificMemory
// (the page and its worker, ArrayBuffers included), sampled four times a second.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from '@playwright/test';
import { createServer } from 'vite';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CASES = ['floor', 'task_arithmetic', 'ties'];
const DEVICES = ['cpu', 'gpu'];
const OUTPUTS = ['opfs', 'discard'];
/** Reading the PSS of a multi-GB process costs the kernel tens of ms: sample twice a second. */
const PSS_SAMPLE_MS = 500;

class BrowserBenchError extends Error {
  name = 'BrowserBenchError';
}

function options() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        layers: { type: 'string', default: '2' },
        vocab: { type: 'string', default: '8192' },
        repeat: { type: 'string', default: '3' },
        'gpu-repeat': { type: 'string', default: '1' },
        cases: { type: 'string', default: CASES.join(',') },
        devices: { type: 'string', default: DEVICES.join(',') },
        threads: { type: 'string', default: '1' },
        output: { type: 'string', default: 'opfs' },
        timeout: { type: 'string', default: '900' },
      },
    }));
  } catch (e) {
    throw new BrowserBenchError(
      `${e.message}; options: --layers N --vocab N --repeat N --gpu-repeat N --cases LIST --devices cpu,gpu --threads 1,2 --output opfs|discard --timeout SECONDS`,
    );
  }
  const positive = (name) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < 1) {
      throw new BrowserBenchError(`--${name} must be a whole number >= 1; got '${values[name]}'`);
    }
    return n;
  };
  const listOf = (name, allowed) => {
    const list = values[name].split(',').filter(Boolean);
    const bad = list.filter((x) => !allowed.includes(x));
    if (list.length === 0 || bad.length > 0) {
      throw new BrowserBenchError(
        `--${name} takes a comma list of ${allowed.join(', ')}; got '${values[name]}'`,
      );
    }
    return list;
  };
  if (!OUTPUTS.includes(values.output)) {
    throw new BrowserBenchError(`--output is one of ${OUTPUTS.join(', ')}; got '${values.output}'`);
  }
  return {
    layers: positive('layers'),
    vocab: positive('vocab'),
    repeat: positive('repeat'),
    gpuRepeat: positive('gpu-repeat'),
    cases: listOf('cases', CASES),
    devices: listOf('devices', DEVICES),
    threads: listOf('threads', ['1', '2']),
    output: values.output,
    timeoutSeconds: positive('timeout'),
  };
}

/** $L2S_CHROMIUM (scripts/env.sh finds one), else Playwright's own Chromium, else Debian's. */
function chromiumPath() {
  if (process.env.L2S_CHROMIUM) return process.env.L2S_CHROMIUM;
  if (existsSync(chromium.executablePath())) return undefined;
  return '/usr/bin/chromium';
}

function freePort() {
  return new Promise((ok, fail) => {
    const s = createNetServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/**
 * Proportional set size, in bytes, of the browser process started with `userDataDir` and all its
 * descendants (shared pages split among the processes sharing them, so the sum counts each page
 * once); undefined where /proc does not tell (not Linux).
 */
function browserPss(userDataDir) {
  let pids;
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return undefined;
  }
  const children = new Map();
  let root;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1];
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(pid);
      if (root === undefined) {
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        if (cmdline.includes(`--user-data-dir=${userDataDir}\0`) && !cmdline.includes('--type=')) root = pid;
      }
    } catch {
      // the process ended while being read
    }
  }
  if (root === undefined) return undefined;
  let total = 0;
  const stack = [root];
  while (stack.length > 0) {
    const pid = stack.pop();
    try {
      const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
      if (m) total += Number(m[1]) * 1024;
    } catch {
      // the process ended while being read
    }
    stack.push(...(children.get(pid) ?? []));
  }
  return total;
}

/** The peak of `browserPss` between `start` and `stop`. */
class PssSampler {
  constructor(userDataDir) {
    this.userDataDir = userDataDir;
    this.timer = undefined;
    this.peak = undefined;
  }
  sample() {
    const pss = browserPss(this.userDataDir);
    if (pss !== undefined) this.peak = Math.max(this.peak ?? 0, pss);
  }
  start() {
    this.stop();
    this.peak = undefined;
    this.sample();
    this.timer = setInterval(() => this.sample(), PSS_SAMPLE_MS);
  }
  stop() {
    if (this.timer === undefined) return undefined;
    clearInterval(this.timer);
    this.timer = undefined;
    this.sample();
    return this.peak;
  }
}

const MB = (bytes) => (bytes === undefined ? '-' : `${(bytes / 1e6).toFixed(0)} MB`);

function printTable(opts, ready, browserVersion, runs, idlePss) {
  const keys = [];
  for (const r of runs) {
    const key = `${r.case}/${r.device}`;
    if (!keys.includes(key)) keys.push(key);
  }
  const rows = keys.map((key) => {
    const all = runs.filter((r) => `${r.case}/${r.device}` === key).sort((a, b) => a.seconds - b.seconds);
    const peakOf = (field) => {
      const values = all.map((r) => r[field]).filter((x) => x !== undefined);
      return values.length > 0 ? Math.max(...values) : undefined;
    };
    return {
      ...all[Math.floor(all.length / 2)],
      runs: all.length,
      peakPss: peakOf('peakPss'),
      jsPeakBytes: peakOf('jsPeakBytes'),
    };
  });
  const floor = rows.find((r) => r.case === 'floor');
  const adapter = ready.adapter ?? `none (${ready.adapterMissing ?? 'GPU rows not asked for'})`;
  const embedding = opts.vocab === 151936 ? 'full embedding' : `embedding ${opts.vocab} rows`;
  console.log(
    `\nQwen2.5-0.5B shapes, ${opts.layers} layers, ${embedding}, bf16, base + 1 model, browser worker ` +
      `(${browserVersion}), adapter: ${adapter}, output ${opts.output === 'opfs' ? 'OPFS' : 'discarded'}`,
  );
  console.log(
    `models made in the worker in ${ready.generateSeconds.toFixed(1)} s, ${MB(ready.modelBytes)} each; ` +
      `browser PSS with them loaded ${MB(idlePss)}; JS peak from ${ready.memorySource ?? 'nothing (no measuring API)'}`,
  );
  console.log(
    'case             device   runs   seconds   MB/s (input)   floor/case     peak PSS (browser)    JS peak',
  );
  for (const r of rows) {
    const mbps = r.inputBytes / 1e6 / r.seconds;
    const ratio = floor ? (floor.seconds / r.seconds).toFixed(2) : '-';
    console.log(
      `${r.case.padEnd(16)} ${r.device.padEnd(6)} ${String(r.runs).padStart(6)} ${r.seconds.toFixed(2).padStart(9)} ` +
        `${mbps.toFixed(0).padStart(14)} ${ratio.padStart(19)} ${MB(r.peakPss).padStart(20)} ${MB(r.jsPeakBytes).padStart(10)}`,
    );
  }
}

/** A persistent context has no Browser object to ask; the page's client hints tell the version. */
async function browserVersionOf(page) {
  const version = await page.evaluate(async () => {
    const hints = await navigator.userAgentData?.getHighEntropyValues(['uaFullVersion']);
    return hints?.uaFullVersion ?? /(?:HeadlessChrome|Chrome)\/([\d.]+)/.exec(navigator.userAgent)?.[1];
  });
  return `Chromium ${version ?? '(unknown version)'}`;
}

async function main() {
  const opts = options();
  const cleanups = [];
  const cleanup = async () => {
    while (cleanups.length > 0)
      await cleanups
        .pop()()
        .catch(() => undefined);
  };
  const onSignal = (signal) => {
    cleanup().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const port = await freePort();
    const server = await createServer({
      root: repoRoot,
      // The project's config for its plugins (the WebAssembly kernels); the settings below win.
      configFile: join(repoRoot, 'vite.config.ts'),
      logLevel: 'warn',
      clearScreen: false,
      server: {
        host: '127.0.0.1',
        port,
        strictPort: true,
        // A hot reload (a source file saved meanwhile) would restart the page and its runs.
        hmr: false,
        // Cross-origin isolation gives the page measureUserAgentSpecificMemory.
        headers: {
          'Cross-Origin-Opener-Policy': 'same-origin',
          'Cross-Origin-Embedder-Policy': 'require-corp',
        },
      },
      worker: { format: 'es' },
    });
    cleanups.push(() => server.close());
    await server.listen();

    // A persistent profile: an off-the-record profile keeps OPFS in memory, with a small quota.
    const userDataDir = await mkdtemp(join(tmpdir(), 'l2s-browser-bench-'));
    cleanups.push(() => rm(userDataDir, { recursive: true, force: true }));
    let context;
    try {
      context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: chromiumPath(),
        headless: true,
        // ForceEagerMeasureMemory: measureUserAgentSpecificMemory answers at once, not at the next GC.
        args: ['--enable-unsafe-webgpu', '--enable-blink-features=ForceEagerMeasureMemory'],
      });
    } catch (e) {
      throw new BrowserBenchError(
        `cannot start Chromium (${chromiumPath() ?? "Playwright's own"}): ${e.message.split('\n')[0]}; ` +
          'set L2S_CHROMIUM to a Chromium or Chrome binary',
      );
    }
    cleanups.push(() => context.close());
    const page = context.pages()[0] ?? (await context.newPage());

    const pss = new PssSampler(userDataDir);
    cleanups.push(async () => pss.stop());
    const runs = [];
    let ready;
    let idlePss;
    let succeed;
    let failWith;
    const finished = new Promise((ok, fail) => {
      succeed = ok;
      failWith = (message) => fail(new BrowserBenchError(message));
    });
    page.on('crash', () => failWith('the bench page crashed (out of memory?)'));
    page.on('pageerror', (e) => failWith(`the bench page failed: ${e.message}`));
    await page.exposeFunction('l2sBenchReport', (m) => {
      if (m.type === 'log') process.stderr.write(`bench/browser: ${m.line}\n`);
      else if (m.type === 'ready') {
        ready = m;
        idlePss = browserPss(userDataDir);
        process.stderr.write(
          `bench/browser: models made in ${m.generateSeconds.toFixed(1)} s; ` +
            `GPU adapter: ${m.adapter ?? `none (${m.adapterMissing ?? 'not asked for'}), GPU rows skipped`}\n`,
        );
      } else if (m.type === 'run-start') pss.start();
      else if (m.type === 'run') {
        const r = { ...m.result, peakPss: pss.stop() };
        runs.push(r);
        process.stderr.write(
          `bench/browser: round ${r.round + 1}: ${r.case} ${r.device === '-' ? '' : `${r.device} `}${r.seconds.toFixed(2)} s\n`,
        );
      } else if (m.type === 'done') succeed();
      else if (m.type === 'fatal') failWith(m.error);
    });
    let timer;
    const timedOut = new Promise((_, fail) => {
      timer = setTimeout(
        () =>
          fail(
            new BrowserBenchError(
              `no result after ${opts.timeoutSeconds} s; use fewer --layers, --vocab or --repeat, or a longer --timeout`,
            ),
          ),
        opts.timeoutSeconds * 1000,
      );
    });
    cleanups.push(async () => clearTimeout(timer));

    const query = new URLSearchParams({
      layers: String(opts.layers),
      vocab: String(opts.vocab),
      repeat: String(opts.repeat),
      gpuRepeat: String(opts.gpuRepeat),
      cases: opts.cases.join(','),
      devices: opts.devices.join(','),
      threads: opts.threads.join(','),
      output: opts.output,
    });
    await page.goto(`http://127.0.0.1:${port}/bench/browser/index.html?${query}`);
    const browserVersion = await browserVersionOf(page);
    await Promise.race([finished, timedOut]);
    printTable(opts, ready, browserVersion, runs, idlePss);
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

main().catch((e) => {
  process.stderr.write(`bench/browser: ${e instanceof BrowserBenchError ? e.message : (e?.stack ?? e)}\n`);
  process.exitCode = 1;
});
