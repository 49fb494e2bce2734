// npm run bench, browser rows: the same cases as bench/run.mjs (synthetic Qwen2.5-0.5B-shaped
// models, bf16, base + 1 model) measured inside a module Web Worker in headless Chromium, on the
// CPU backend and on the GPU backend (WebGPU) when the worker gets an adapter.
//
// The page (bench/browser/index.html) is served by Vite; the worker makes the models in memory as
// Blobs, merges into OPFS (or a discarding sink with --output discard) and reports each run here.
// Cases run round by round, interleaved; each row is a median. Ratios are baseline time / case time
// with the one baseline (read every input tensor, write the same output, no math) of this run.
//
// Memory: peak PSS of all the browser's processes while the case ran (Linux /proc, sampled), which
// includes the Blobs of both models; and what the page's own measurement reports after the run
// (measureUserAgentSpecificMemory, the page being cross-origin isolated).
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
const CASES = ['baseline', 'task_arithmetic', 'ties'];
const DEVICES = ['cpu', 'gpu'];
const OUTPUTS = ['opfs', 'discard'];
/** How often the browser's memory is sampled while a case runs. */
const MEMORY_SAMPLE_MS = 200;

class BrowserBenchError extends Error {
  name = 'BrowserBenchError';
}

function options() {
  const { values } = parseArgs({
    options: {
      layers: { type: 'string', default: '2' },
      repeat: { type: 'string', default: '3' },
      cases: { type: 'string', default: CASES.join(',') },
      devices: { type: 'string', default: DEVICES.join(',') },
      output: { type: 'string', default: 'opfs' },
      timeout: { type: 'string', default: '600' },
    },
  });
  const positive = (name) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < 1) throw new BrowserBenchError(`--${name} must be a whole number >= 1`);
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
    repeat: positive('repeat'),
    cases: listOf('cases', CASES),
    devices: listOf('devices', DEVICES),
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
 * Proportional set size (shared pages split between the processes sharing them, so the sum over
 * processes counts each page once) of the browser process started with `userDataDir` and all its
 * descendants, in bytes; undefined where /proc does not tell.
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
      // ended
    }
    stack.push(...(children.get(pid) ?? []));
  }
  return total;
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
    const median = all[Math.floor(all.length / 2)];
    const peaks = all.map((r) => r.peakPss).filter((x) => x !== undefined);
    const mems = all.map((r) => r.memoryBytes).filter((x) => x !== undefined);
    return {
      ...median,
      peakPss: peaks.length ? Math.max(...peaks) : undefined,
      memoryBytes: mems.length ? Math.max(...mems) : undefined,
    };
  });
  const baseline = rows.find((r) => r.case === 'baseline');
  const adapter = ready.adapter ?? `none (${ready.adapterMissing ?? 'GPU rows not asked for'})`;
  console.log(
    `\nQwen2.5-0.5B shapes, ${opts.layers} layers, bf16, base + 1 model, browser worker (${browserVersion}), ` +
      `adapter ${adapter}, output ${opts.output === 'opfs' ? 'OPFS' : 'discarded'}, median of ${opts.repeat}`,
  );
  console.log(
    `models made in the worker in ${ready.generateSeconds.toFixed(1)} s, ${MB(ready.modelBytes)} each; ` +
      `browser PSS with them loaded ${MB(idlePss)}; JS memory from ${ready.memorySource ?? 'nothing (no API)'}`,
  );
  console.log(
    'case             device   seconds    MB/s (input)   ratio to baseline   peak PSS (browser)   JS memory',
  );
  for (const r of rows) {
    const mbps = r.inputBytes / 1e6 / r.seconds;
    const ratio = baseline ? (baseline.seconds / r.seconds).toFixed(2) : '-';
    console.log(
      `${r.case.padEnd(16)} ${r.device.padEnd(6)} ${r.seconds.toFixed(2).padStart(9)} ${mbps.toFixed(0).padStart(15)} ` +
        `${ratio.padStart(19)} ${MB(r.peakPss).padStart(20)} ${MB(r.memoryBytes).padStart(11)}`,
    );
  }
}

async function main() {
  const opts = options();
  const resources = [];
  const cleanup = async () => {
    for (const close of resources.reverse()) await close().catch(() => undefined);
    resources.length = 0;
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
      configFile: false,
      logLevel: 'warn',
      clearScreen: false,
      // Cross-origin isolation lets the page measure its memory; no hot reload in the middle of a run.
      server: {
        host: '127.0.0.1',
        port,
        strictPort: true,
        hmr: false,
        headers: {
          'Cross-Origin-Opener-Policy': 'same-origin',
          'Cross-Origin-Embedder-Policy': 'require-corp',
        },
      },
      worker: { format: 'es' },
    });
    resources.push(() => server.close());
    await server.listen();

    // A persistent profile: OPFS of an off-the-record profile lives in memory and has a small quota.
    const userDataDir = await mkdtemp(join(tmpdir(), 'l2s-browser-bench-'));
    resources.push(() => rm(userDataDir, { recursive: true, force: true }));
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: chromiumPath(),
      headless: true,
      // ForceEagerMeasureMemory: measureUserAgentSpecificMemory answers at once, not at the next GC.
      args: ['--enable-unsafe-webgpu', '--enable-blink-features=ForceEagerMeasureMemory'],
    });
    resources.push(() => context.close());
    const browserVersion = `Chromium ${context.browser()?.version() ?? (await browserVersionOf(context))}`;

    const page = context.pages()[0] ?? (await context.newPage());
    const runs = [];
    let ready;
    let idlePss;
    let sampling;
    let ok;
    let fail;
    const finished = new Promise((resolveRun, rejectRun) => {
      ok = resolveRun;
      fail = rejectRun;
    });
    page.on('crash', () => fail(new BrowserBenchError('the bench page crashed (out of memory?)')));
    page.on('pageerror', (e) => fail(new BrowserBenchError(`the bench page failed: ${e.message}`)));
    resources.push(async () => {
      if (sampling) clearInterval(sampling.timer);
    });
    await page.exposeFunction('l2sBenchReport', (m) => {
      if (m.type === 'log') process.stderr.write(`bench/browser: ${m.line}\n`);
      else if (m.type === 'ready') {
        ready = m;
        idlePss = browserPss(userDataDir);
        process.stderr.write(
          `bench/browser: models ready in ${m.generateSeconds.toFixed(1)} s; adapter ${m.adapter ?? `none: ${m.adapterMissing}`}\n`,
        );
      } else if (m.type === 'run-start') {
        const current = { peak: browserPss(userDataDir) };
        sampling = {
          current,
          timer: setInterval(() => {
            const pss = browserPss(userDataDir);
            if (pss !== undefined) current.peak = Math.max(current.peak ?? 0, pss);
          }, MEMORY_SAMPLE_MS),
        };
      } else if (m.type === 'run') {
        let peakPss;
        if (sampling) {
          clearInterval(sampling.timer);
          peakPss = sampling.current.peak;
          sampling = undefined;
        }
        const r = { ...m.result, peakPss };
        runs.push(r);
        process.stderr.write(
          `bench/browser: round ${r.round + 1} ${r.case} ${r.device}: ${r.seconds.toFixed(2)} s\n`,
        );
      } else if (m.type === 'done') ok();
      else if (m.type === 'fatal') fail(new BrowserBenchError(`the bench worker failed: ${m.error}`));
    });
    let timer;
    const timeout = new Promise((_, fail) => {
      timer = setTimeout(
        () =>
          fail(
            new BrowserBenchError(
              `no result after ${opts.timeoutSeconds} s; use fewer --layers or --repeat, or a longer --timeout`,
            ),
          ),
        opts.timeoutSeconds * 1000,
      );
    });
    resources.push(async () => clearTimeout(timer));
    const query = new URLSearchParams({
      layers: String(opts.layers),
      repeat: String(opts.repeat),
      cases: opts.cases.join(','),
      devices: opts.devices.join(','),
      output: opts.output,
    });
    await page.goto(`http://127.0.0.1:${port}/bench/browser/index.html?${query}`);
    await Promise.race([finished, timeout]);
    printTable(opts, ready, browserVersion, runs, idlePss);
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** A persistent context has no Browser object; its user agent names the version. */
async function browserVersionOf(context) {
  const page = context.pages()[0] ?? (await context.newPage());
  const ua = await page.evaluate(() => navigator.userAgent);
  return /(?:HeadlessChrome|Chrome)\/([\d.]+)/.exec(ua)?.[1] ?? 'unknown version';
}

main().catch((e) => {
  process.stderr.write(`bench/browser: ${e instanceof BrowserBenchError ? e.message : (e?.stack ?? e)}\n`);
  process.exitCode = 1;
});
