// npm run bench, the 7B case: synthetic models with Qwen2.5-7B's tensor shapes (embedding and an
// untied lm_head of 152064 x 3584, 2 layers by default), base + 1 model, TIES on the CPU and on the
// GPU within a GPU memory budget, against the read+write floor (every input read, an output of the
// same size written, no math). Each case runs in its own process, so peak RSS is its own.
// On a software adapter (SwiftShader) the GPU row's time says nothing of GPU speed; the row shows
// that the merge stays within the budget and leaves no tensor to the CPU (the table labels it).
//   node --expose-gc bench/gpu-7b.mjs [--layers N] [--vocab N] [--gpu-memory SIZE] [--cases a,b]
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { cpuSecondsSince, peakRssMB, QWEN25_7B, runCaseProcess, writeSyntheticModel } from './lib.mjs';

const api = await import('../dist/cli/index.js');

const { values: opts } = parseArgs({
  options: {
    case: { type: 'string' },
    dir: { type: 'string', default: '.tmp/bench' },
    layers: { type: 'string', default: '2' },
    vocab: { type: 'string', default: '152064' },
    'gpu-memory': { type: 'string', default: '2B' },
    cases: { type: 'string', default: 'baseline,ties-cpu,ties-gpu' },
  },
});
const shape = { ...QWEN25_7B, layers: Number(opts.layers), vocabSize: Number(opts.vocab) };
const root = resolve(opts.dir, `qwen25-7b-${shape.layers}l-${shape.vocabSize}v-v1`);
const RECIPE =
  'merge_method: ties\nbase_model: base\nmodels:\n  - model: reasoner\n    parameters: {weight: 1.0, density: 0.2}\nparameters: {lambda: 1.0}\ndtype: bfloat16\n';

async function runCase(name) {
  const out = join(root, `out-${name}`);
  await rm(out, { recursive: true, force: true });
  const recipe = api.parseRecipe(RECIPE, 'bench');
  const resolver = api.folderResolver(root);
  const output = await api.outputDir(out, { force: true });
  const started = performance.now();
  const cpuStarted = process.cpuUsage();
  let inputBytes = 0;
  const row = { name, budgetBytes: null, gpuPeakBytes: null, adapter: null, summary: '' };
  if (name === 'baseline') {
    const { plan } = await api.prepareMerge(recipe, resolver);
    const writer = new api.ShardWriter(plan.layout, (f) => output.createFile(f));
    // Read and write a 64 MiB piece at a time, as the streamed merge does.
    const PIECE = 64 << 20;
    for (const t of plan.tensors) {
      writer.beginTensor(t.name);
      const sources = t.inputs.map((i) => ({
        source: plan.models[i.modelIndex].index.sources.get(i.tensor.file),
        info: i.tensor,
      }));
      for (let at = 0; at < t.byteLength; at += PIECE) {
        const len = Math.min(PIECE, t.byteLength - at);
        const parts = await Promise.all(sources.map((s) => s.source.read(s.info.offset + at, len)));
        for (const p of parts) inputBytes += p.byteLength;
        await writer.writeTensorPart(parts[0]);
      }
      await writer.endTensor();
    }
    await writer.finish();
    await output.commit();
  } else {
    let backend = api.cpuBackend;
    let gpu;
    if (name.endsWith('-gpu')) {
      const budget = api.parseByteSize(opts['gpu-memory']);
      gpu = await api.GpuMergeBackend.create({ gpu: await api.nodeGpu(), memoryBudget: budget });
      backend = api.gpuMergeBackend(gpu);
      row.budgetBytes = budget;
      row.adapter = adapterLabel(gpu.ctx.adapterInfo);
    }
    const result = await api.runMerge({
      recipe,
      resolveModel: resolver,
      output,
      backend,
      onProgress: (p) => {
        inputBytes = p.inputBytesDone;
      },
    });
    row.summary = api.placementSummary(result.placement);
    if (gpu) {
      row.gpuPeakBytes = gpu.ctx.pool.peakBytes;
      gpu.destroy();
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const cpuSeconds = cpuSecondsSince(cpuStarted);
  await resolver.closeAll();
  await rm(out, { recursive: true, force: true });
  return { ...row, seconds, cpuSeconds, inputBytes, peakRssMB: peakRssMB() };
}

/** The adapter's name, and whether it is a software renderer (then GPU times are no GPU speed). */
function adapterLabel(info = {}) {
  const name = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ');
  const software = info.isFallbackAdapter || /swiftshader|llvmpipe|lavapipe/i.test(name);
  return { name: name || 'unknown adapter', software: Boolean(software) };
}

if (opts.case) {
  process.stdout.write(`${JSON.stringify(await runCase(opts.case))}\n`);
} else {
  if (!existsSync(join(root, 'reasoner', 'model.safetensors'))) {
    process.stderr.write(`bench: generating synthetic Qwen2.5-7B-shaped models in ${root}\n`);
    await writeSyntheticModel(api, join(root, 'base'), { shape, tied: false });
    await writeSyntheticModel(api, join(root, 'reasoner'), { shape, tied: false, seed: 0x1234, delta: true });
  }
  let names = opts.cases.split(',');
  const adapter = await api
    .nodeGpu()
    .then((g) => g?.requestAdapter())
    .catch(() => null);
  if (!adapter && names.some((n) => n.endsWith('-gpu'))) {
    process.stderr.write('bench: no WebGPU adapter for Node; the 7B GPU row is skipped\n');
    names = names.filter((n) => !n.endsWith('-gpu'));
  }
  const results = [];
  const load = [os.loadavg()[0]];
  for (const name of names) {
    results.push(
      runCaseProcess('bench/gpu-7b.mjs', name, [
        '--dir',
        opts.dir,
        '--layers',
        opts.layers,
        '--vocab',
        opts.vocab,
        '--gpu-memory',
        opts['gpu-memory'],
      ]),
    );
    load.push(os.loadavg()[0]);
  }
  const floor = results.find((r) => r.name === 'baseline');
  console.log(
    `\nQwen2.5-7B shapes (vocab ${shape.vocabSize}, ${shape.layers} layers, untied lm_head), bf16, ties, base + 1 model, ` +
      `${((floor ?? results[0]).inputBytes / 1e9).toFixed(2)} GB read; load average ${Math.min(...load).toFixed(1)}-${Math.max(...load).toFixed(1)} on ${os.availableParallelism()} cores`,
  );
  console.log('case        seconds   floor/case   CPU s   peak RSS   GPU peak / budget   placement');
  for (const r of results) {
    const ratio = floor ? (floor.seconds / r.seconds).toFixed(2) : '-';
    const gpuMem =
      r.budgetBytes === null
        ? '-'
        : `${(r.gpuPeakBytes / 1e6).toFixed(0)} / ${(r.budgetBytes / 1e6).toFixed(0)} MB${r.gpuPeakBytes <= r.budgetBytes ? '' : ' OVER'}`;
    console.log(
      `${r.name.padEnd(10)} ${r.seconds.toFixed(1).padStart(8)} ${ratio.padStart(12)} ${r.cpuSeconds.toFixed(1).padStart(7)} ${`${r.peakRssMB.toFixed(0)} MB`.padStart(10)} ${gpuMem.padStart(19)}   ${r.summary}`,
    );
  }
  for (const r of results.filter((x) => x.adapter)) {
    console.log(
      r.adapter.software
        ? `${r.name}: on ${r.adapter.name}, a software renderer: its time says nothing of GPU speed; the row shows the budget holds`
        : `${r.name}: on ${r.adapter.name}`,
    );
  }
}
