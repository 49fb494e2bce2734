// npm run bench, the 7B case: synthetic models with Qwen2.5-7B's tensor shapes (embedding and an
// untied lm_head of 152064 x 3584, 2 layers by default), base + 1 model, TIES on the CPU and on the
// GPU within a GPU memory budget, against the read+write floor (every input read, an output of the
// same size written, no math). Each case runs in its own process, so peak RSS is its own.
//   node --expose-gc bench/gpu-7b.mjs [--layers N] [--vocab N] [--gpu-memory SIZE] [--cases a,b]
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

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
const shape = {
  hiddenSize: 3584,
  intermediateSize: 18944,
  layers: Number(opts.layers),
  heads: 28,
  kvHeads: 4,
  vocabSize: Number(opts.vocab),
};
const root = resolve(opts.dir, `qwen25-7b-${shape.layers}l-${shape.vocabSize}v-v1`);
const RECIPE =
  'merge_method: ties\nbase_model: base\nmodels:\n  - model: reasoner\n    parameters: {weight: 1.0, density: 0.2}\nparameters: {lambda: 1.0}\ndtype: bfloat16\n';

/** xorshift32 noise: cheap, deterministic; the values only need realistic magnitudes. */
function fill(values, seed, std, base) {
  let x = seed >>> 0 || 1;
  for (let i = 0; i < values.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    values[i] = (base ? base[i] : 0) + (x / 4294967296 - 0.5) * std * 3.4641;
  }
}

async function writeModel(dir, seed, delta) {
  await mkdir(dir, { recursive: true });
  const tensors = api.tinyQwenTensorShapes(shape, false);
  const layout = api.planShards(tensors, Number.MAX_SAFE_INTEGER);
  const handle = await open(join(dir, 'model.safetensors'), 'w');
  const writer = new api.ShardWriter(layout, async () => ({
    write: async (b) => {
      await handle.write(b);
    },
    close: async () => {},
  }));
  let h = 0;
  // Large tensors are generated and written a slice of rows at a time.
  const SLICE = 1 << 24;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const std = t.shape.length === 1 ? 0.02 : 1 / Math.sqrt(t.shape[t.shape.length - 1]);
    h = (h * 31 + n) >>> 0;
    writer.beginTensor(t.name);
    for (let at = 0, k = 0; at < n; at += SLICE, k++) {
      const values = new Float32Array(Math.min(SLICE, n - at));
      fill(values, (h + k * 7919) ^ 0x5bd1e995, std);
      if (delta) fill(values, (h + k * 7919) ^ seed, std * 0.1, values.slice());
      await writer.writeTensorPart(api.encodeFromF32(values, 'BF16'));
    }
    await writer.endTensor();
  }
  await writer.finish();
  await handle.close();
  const config = {
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    hidden_size: shape.hiddenSize,
    intermediate_size: shape.intermediateSize,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    vocab_size: shape.vocabSize,
    tie_word_embeddings: false,
    torch_dtype: 'bfloat16',
  };
  await writeFile(join(dir, 'config.json'), JSON.stringify(config, null, 2));
}

async function runCase(name) {
  const out = join(root, `out-${name}`);
  await rm(out, { recursive: true, force: true });
  const recipe = api.parseRecipe(RECIPE, 'bench');
  const resolver = api.folderResolver(root);
  const output = await api.outputDir(out, { force: true });
  const started = performance.now();
  let inputBytes = 0;
  const row = { name, budgetBytes: null, gpuPeakBytes: null, summary: '' };
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
  await resolver.closeAll();
  await rm(out, { recursive: true, force: true });
  return { ...row, seconds, inputBytes, peakRssMB: process.resourceUsage().maxRSS / 1024 };
}

if (opts.case) {
  process.stdout.write(`${JSON.stringify(await runCase(opts.case))}\n`);
} else {
  if (!existsSync(join(root, 'reasoner', 'model.safetensors'))) {
    process.stderr.write(`bench: generating synthetic Qwen2.5-7B-shaped models in ${root}\n`);
    await writeModel(join(root, 'base'), 0, false);
    await writeModel(join(root, 'reasoner'), 0x1234, true);
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
  for (const name of names) {
    const child = spawnSync(
      process.execPath,
      [
        '--expose-gc',
        'bench/gpu-7b.mjs',
        '--case',
        name,
        '--dir',
        opts.dir,
        '--layers',
        opts.layers,
        '--vocab',
        opts.vocab,
        '--gpu-memory',
        opts['gpu-memory'],
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
    );
    if (child.status !== 0) throw new Error(`bench case ${name} failed (exit ${child.status})`);
    results.push(JSON.parse(child.stdout.trim().split('\n').at(-1)));
  }
  const floor = results.find((r) => r.name === 'baseline');
  console.log(
    `\nQwen2.5-7B shapes (vocab ${shape.vocabSize}, ${shape.layers} layers, untied lm_head), bf16, ties, base + 1 model`,
  );
  console.log('case        seconds   x floor   peak RSS   GPU peak / budget   placement');
  for (const r of results) {
    const ratio = floor ? (r.seconds / floor.seconds).toFixed(2) : '-';
    const gpuMem =
      r.budgetBytes === null
        ? '-'
        : `${(r.gpuPeakBytes / 1e6).toFixed(0)} / ${(r.budgetBytes / 1e6).toFixed(0)} MB${r.gpuPeakBytes <= r.budgetBytes ? '' : ' OVER'}`;
    console.log(
      `${r.name.padEnd(10)} ${r.seconds.toFixed(1).padStart(8)} ${ratio.padStart(9)} ${`${r.peakRssMB.toFixed(0)} MB`.padStart(10)} ${gpuMem.padStart(19)}   ${r.summary}`,
    );
  }
}
