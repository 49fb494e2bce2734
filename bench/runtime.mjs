// npm run bench, runtime rows: prefill and decode tokens/s of the model runtime on synthetic
// Qwen2.5-0.5B- and 1.5B-shaped models (random bf16 weights, speed only), each with its ratio to the
// memory-bandwidth bound of decoding (weight bytes read per token / a device copy bandwidth measured
// in the same run; see bench/runtime/measure.ts).
//
// Node rows: the models are generated into a temp folder and read back through the project's folder
// source; the GPU runner runs on Node's WebGPU (Dawn) where an adapter exists, the CPU reference
// runner always. Browser rows: the same measurements inside a module Web Worker in headless Chromium
// (models made in memory as Blobs), driven like bench/browser.mjs.
//
// Layers: L2S_BENCH_RUNTIME_LAYERS (or --layers) cuts each model to that many decoder layers (default
// 2; the real counts are 24 and 28) so a slow machine finishes; the embedding / lm_head keeps its real
// 151936 rows unless --vocab says otherwise. The bound and the ratio are computed for the model as
// run. On a software adapter (SwiftShader) GPU figures say nothing about GPU speed.

import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from '@playwright/test';
import { createServer } from 'vite';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

class RuntimeBenchError extends Error {
  name = 'RuntimeBenchError';
}

function options() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        models: { type: 'string', default: '0.5b,1.5b' },
        layers: { type: 'string', default: process.env.L2S_BENCH_RUNTIME_LAYERS ?? '2' },
        vocab: { type: 'string', default: '151936' },
        prompt: { type: 'string', default: '16' },
        decode: { type: 'string', default: '4' },
        rounds: { type: 'string', default: '1' },
        devices: { type: 'string', default: 'gpu,cpu' },
        envs: { type: 'string', default: 'node,browser' },
        timeout: { type: 'string', default: '1800' },
      },
    }));
  } catch (e) {
    throw new RuntimeBenchError(
      `${e.message}; options: --models 0.5b,1.5b --layers N --vocab N --prompt N --decode N --rounds N --devices gpu,cpu --envs node,browser --timeout SECONDS`,
    );
  }
  const positive = (name) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < 1)
      throw new RuntimeBenchError(`--${name} must be a whole number >= 1; got '${values[name]}'`);
    return n;
  };
  const listOf = (name, allowed) => {
    const list = values[name].split(',').filter(Boolean);
    const bad = list.filter((x) => !allowed.includes(x));
    if (list.length === 0 || bad.length > 0) {
      throw new RuntimeBenchError(
        `--${name} takes a comma list of ${allowed.join(', ')}; got '${values[name]}'`,
      );
    }
    return list;
  };
  return {
    models: listOf('models', ['0.5b', '1.5b']),
    layers: positive('layers'),
    vocab: positive('vocab'),
    prompt: positive('prompt'),
    decode: positive('decode'),
    rounds: positive('rounds'),
    devices: listOf('devices', ['gpu', 'cpu']),
    envs: listOf('envs', ['node', 'browser']),
    timeoutSeconds: positive('timeout'),
  };
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

/** $L2S_CHROMIUM (scripts/env.sh finds one), else Playwright's own Chromium, else Debian's. */
function chromiumPath() {
  if (process.env.L2S_CHROMIUM) return process.env.L2S_CHROMIUM;
  if (existsSync(chromium.executablePath())) return undefined;
  return '/usr/bin/chromium';
}

/** Writes the synthetic model's files (Blobs) into `dir`, one file at a time. */
async function writeFolder(files, dir) {
  for (const name of files.files()) {
    const source = await files.open(name);
    await writeFile(join(dir, name), await source.read(0, source.size));
  }
}

async function nodeRows(opts, rows, errors) {
  const vite = await createServer({
    root: repoRoot,
    configFile: false,
    logLevel: 'warn',
    appType: 'custom',
    server: { middlewareMode: true, hmr: false },
  });
  try {
    const measure = await vite.ssrLoadModule('/bench/runtime/measure.ts');
    const { modelFolder } = await vite.ssrLoadModule('/src/node/model-folder.ts');
    const { nodeGpu } = await vite.ssrLoadModule('/src/node/webgpu.ts');
    const { GpuContext } = await vite.ssrLoadModule('/src/gpu/device.ts');
    let gpu;
    if (opts.devices.includes('gpu')) {
      gpu = await nodeGpu().catch((e) => {
        errors.push(`node gpu: ${e.message}`);
        return undefined;
      });
      const adapter = gpu && (await gpu.requestAdapter());
      if (gpu && !adapter) {
        errors.push('node gpu: no WebGPU adapter for Node; GPU rows skipped');
        gpu = undefined;
      }
    }
    for (const model of opts.models) {
      const o = { ...opts, model };
      const dir = await mkdtemp(join(tmpdir(), `l2s-runtime-bench-${model}-`));
      try {
        await writeFolder(await measure.syntheticRuntimeModel(`synthetic-qwen2.5-${model}`, o), dir);
        for (const device of opts.devices) {
          if (device === 'gpu' && !gpu) continue;
          const folder = await modelFolder(dir, `synthetic-qwen2.5-${model}`);
          let ctx;
          try {
            if (device === 'gpu') ctx = await GpuContext.create({ gpu, label: 'bench' });
            rows.push({ env: 'node', ...(await measure.benchRuntime(folder, device, o, ctx)) });
          } catch (e) {
            errors.push(`node ${model} ${device}: ${e.name}: ${e.message}`);
          } finally {
            ctx?.destroy();
            await folder.close();
          }
          process.stderr.write(`bench runtime: node ${model} ${device} done\n`);
        }
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }
  } finally {
    await vite.close();
  }
}

async function browserRows(opts, rows, errors) {
  const port = await freePort();
  const server = await createServer({
    root: repoRoot,
    configFile: false,
    logLevel: 'warn',
    clearScreen: false,
    server: { host: '127.0.0.1', port, strictPort: true, hmr: false },
  });
  await server.listen();
  const userDataDir = await mkdtemp(join(tmpdir(), 'l2s-runtime-bench-browser-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: chromiumPath(),
      headless: true,
      args: ['--enable-unsafe-webgpu'],
    });
    const page = await context.newPage();
    const q = new URLSearchParams({
      models: opts.models.join(','),
      layers: String(opts.layers),
      vocab: String(opts.vocab),
      prompt: String(opts.prompt),
      decode: String(opts.decode),
      rounds: String(opts.rounds),
      devices: opts.devices.join(','),
    });
    await page.goto(`http://127.0.0.1:${port}/bench/runtime/index.html?${q}`);
    const handle = await page.waitForFunction(
      () => window.runtimeBench?.done && window.runtimeBench,
      undefined,
      {
        timeout: opts.timeoutSeconds * 1000,
        polling: 1000,
      },
    );
    const state = await handle.jsonValue();
    for (const row of state.rows) rows.push({ env: 'browser', ...row });
    for (const e of state.errors) errors.push(`browser ${e}`);
  } finally {
    await context?.close();
    await server.close();
    await rm(userDataDir, { recursive: true, force: true });
  }
}

function printTable(opts, rows, errors) {
  const gb = (b) => (b / 1e9).toFixed(2);
  console.log('');
  console.log(
    `Model runtime: synthetic Qwen2.5 shapes, ${opts.layers} decoder layer(s) (L2S_BENCH_RUNTIME_LAYERS; real: 24 / 28), vocab ${opts.vocab}, ` +
      `prompt ${opts.prompt} tokens, ${opts.decode} decoded, median of ${opts.rounds} round(s) after a warm-up.`,
  );
  console.log(
    'Bound = copy bandwidth (read + written) / weight bytes read per decoded token (bf16 on the GPU, f32 on the CPU reference).',
  );
  const header = [
    'env',
    'device',
    'model',
    'prefill tok/s',
    'decode tok/s',
    'MB/token',
    'copy GB/s',
    'bound tok/s',
    'decode/bound',
    'adapter',
  ];
  const table = rows.map((r) => [
    r.env,
    r.device,
    `${r.model} (${r.layers}L)`,
    r.prefillTokensPerS.toFixed(2),
    r.decodeTokensPerS.toFixed(2),
    (r.bytesPerToken / 1e6).toFixed(1),
    gb(r.copyBytesPerS),
    r.boundTokensPerS.toFixed(2),
    `${(r.ratio * 100).toFixed(1)}%`,
    r.adapter,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i].length)));
  const line = (cells) => cells.map((c, i) => c.padEnd(widths[i])).join('  ');
  console.log(line(header));
  for (const row of table) console.log(line(row));
  if (rows.some((r) => /swiftshader/i.test(r.adapter))) {
    console.log(
      'SwiftShader is a CPU emulation of a GPU: its GPU rows check that the runtime runs, not how fast a GPU is.',
    );
  }
  for (const e of errors) console.log(`not measured: ${e}`);
}

const opts = options();
const rows = [];
const errors = [];
if (opts.envs.includes('node')) await nodeRows(opts, rows, errors);
if (opts.envs.includes('browser')) await browserRows(opts, rows, errors);
printTable(opts, rows, errors);
