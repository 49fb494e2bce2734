// npm run bench: merge throughput and peak memory on synthetic models with Qwen2.5-0.5B's tensor shapes.
//
// Each case runs in its own process (so peak RSS is its own) on the same files:
//   baseline         reads every input tensor and writes an output of the same size (no math)
//   task_arithmetic  the real merge, CPU backend
//   ties             the real merge, CPU backend
//   lowrank_task_arithmetic  rank-64 task arithmetic (not in the default list; bench/rsvd.mjs runs it)
// Ratios are baseline time / case time, measured in this run: 1.0 means "as fast as the I/O alone".
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const api = await import('../dist/cli/index.js');

const QWEN25_05B = {
  hiddenSize: 896,
  intermediateSize: 4864,
  layers: 24,
  heads: 14,
  kvHeads: 2,
  vocabSize: 151936,
};
const GEN_VERSION = 'v1';

const { values: opts } = parseArgs({
  options: {
    case: { type: 'string' },
    device: { type: 'string', default: 'cpu' },
    dir: { type: 'string', default: '.tmp/bench' },
    layers: { type: 'string' },
    cases: { type: 'string', default: 'baseline,task_arithmetic,ties' },
    repeat: { type: 'string', default: '3' },
  },
});
const shape = { ...QWEN25_05B, layers: opts.layers ? Number(opts.layers) : QWEN25_05B.layers };
const root = resolve(opts.dir, `qwen25-05b-${shape.layers}l-${GEN_VERSION}`);

/** xorshift32 noise: cheap, deterministic; the values only need realistic magnitudes. */
function fill(values, seed, std, base) {
  let x = seed >>> 0 || 1;
  for (let i = 0; i < values.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const u = x / 4294967296 - 0.5;
    values[i] = (base ? base[i] : 0) + u * std * 3.4641;
  }
}

async function writeModel(dir, seed, deltaOf) {
  await mkdir(dir, { recursive: true });
  const tensors = api.tinyQwenTensorShapes(shape, true);
  const layout = api.planShards(tensors, Number.MAX_SAFE_INTEGER);
  const handle = await open(join(dir, 'model.safetensors'), 'w');
  const writer = new api.ShardWriter(layout, async () => ({
    write: async (b) => {
      await handle.write(b);
    },
    close: async () => {},
  }));
  let h = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(n);
    const fanIn = t.shape[t.shape.length - 1];
    const std = t.shape.length === 1 ? 0.02 : 1 / Math.sqrt(fanIn);
    h = (h * 31 + n) >>> 0;
    fill(values, h ^ 0x5bd1e995, std);
    if (deltaOf) {
      const base = values.slice();
      fill(values, h ^ seed, std * 0.1, base);
    }
    await writer.writeTensor(t.name, api.encodeFromF32(values, 'BF16'));
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
    tie_word_embeddings: true,
    torch_dtype: 'bfloat16',
  };
  await writeFile(join(dir, 'config.json'), JSON.stringify(config, null, 2));
}

const RECIPES = {
  task_arithmetic:
    'merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: reasoner\n    parameters: {weight: 0.7}\ndtype: bfloat16\n',
  ties: 'merge_method: ties\nbase_model: base\nmodels:\n  - model: reasoner\n    parameters: {weight: 1.0, density: 0.2}\nparameters: {lambda: 1.0}\ndtype: bfloat16\n',
  // Rank 64 on every 2-D tensor but the embeddings (full rank there: plain task arithmetic).
  lowrank_task_arithmetic:
    'merge_method: lowrank_task_arithmetic\nbase_model: base\nmodels:\n  - model: reasoner\n    parameters: {weight: 0.7}\nparameters:\n  rank:\n    - {filter: embed_tokens, value: 896}\n    - {value: 64}\ndtype: bfloat16\n',
};

async function runCase(name, device) {
  const out = join(root, `out-${name}`);
  await rm(out, { recursive: true, force: true });
  const recipe = api.parseRecipe(RECIPES[name === 'baseline' ? 'task_arithmetic' : name], 'bench');
  const resolver = api.folderResolver(root);
  const output = await api.outputDir(out, { force: true });
  const started = performance.now();
  let inputBytes = 0;
  if (name === 'baseline') {
    // Same reads and writes as a merge, no decode, no math, no encode.
    const { plan } = await api.prepareMerge(recipe, resolver);
    const writer = new api.ShardWriter(plan.layout, (f) => output.createFile(f));
    for (const t of plan.tensors) {
      const bytes = await Promise.all(
        t.inputs.map((i) =>
          api.readTensorBytes(plan.models[i.modelIndex].index.sources.get(i.tensor.file), i.tensor),
        ),
      );
      for (const b of bytes) inputBytes += b.byteLength;
      await writer.writeTensor(
        t.name,
        bytes[0].byteLength === t.byteLength ? bytes[0] : new Uint8Array(t.byteLength),
      );
    }
    await writer.finish();
    await output.commit();
  } else {
    let backend = api.cpuBackend;
    if (device === 'gpu') {
      backend = (await api.selectBackend('gpu', recipe.mergeMethod, () => {})).backend;
    }
    await api.runMerge({
      recipe,
      resolveModel: resolver,
      output,
      backend,
      onProgress: (p) => {
        inputBytes = p.inputBytesDone;
      },
    });
  }
  const seconds = (performance.now() - started) / 1000;
  await resolver.closeAll();
  await rm(out, { recursive: true, force: true });
  return { name, device, seconds, inputBytes, peakRssMB: process.resourceUsage().maxRSS / 1024 };
}

if (opts.case) {
  const r = await runCase(opts.case, opts.device);
  process.stdout.write(`${JSON.stringify(r)}\n`);
} else {
  if (!existsSync(join(root, 'reasoner', 'model.safetensors'))) {
    process.stderr.write(`bench: generating synthetic Qwen2.5-0.5B-shaped models in ${root}\n`);
    await writeModel(join(root, 'base'), 0, false);
    await writeModel(join(root, 'reasoner'), 0x1234, true);
  }
  // Cases are interleaved round by round and each reports its median time, so that a slow moment
  // of the machine (page cache, another process) does not land on one case only.
  const names = opts.cases.split(',');
  const runs = new Map(names.map((n) => [n, []]));
  for (let round = 0; round < Number(opts.repeat); round++) {
    for (const name of names) {
      const child = spawnSync(
        process.execPath,
        [
          '--expose-gc',
          'bench/run.mjs',
          '--case',
          name,
          '--device',
          opts.device,
          '--dir',
          opts.dir,
          ...(opts.layers ? ['--layers', opts.layers] : []),
        ],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
      );
      if (child.status !== 0) throw new Error(`bench case ${name} failed (exit ${child.status})`);
      runs.get(name).push(JSON.parse(child.stdout.trim().split('\n').at(-1)));
    }
  }
  const results = names.map((name) => {
    const all = runs.get(name).sort((x, y) => x.seconds - y.seconds);
    const median = all[Math.floor(all.length / 2)];
    return { ...median, peakRssMB: Math.max(...all.map((r) => r.peakRssMB)) };
  });
  const baseline = results.find((r) => r.name === 'baseline');
  console.log(
    `\nQwen2.5-0.5B shapes, ${shape.layers} layers, bf16, base + 1 model, device ${opts.device}, median of ${opts.repeat}`,
  );
  console.log('case              seconds    MB/s (input)   ratio to baseline   peak RSS');
  for (const r of results) {
    const mbps = r.inputBytes / 1e6 / r.seconds;
    const ratio = baseline ? (baseline.seconds / r.seconds).toFixed(2) : '-';
    console.log(
      `${r.name.padEnd(16)} ${r.seconds.toFixed(2).padStart(8)} ${mbps.toFixed(0).padStart(14)} ${ratio.padStart(19)} ${`${r.peakRssMB.toFixed(0)} MB`.padStart(10)}`,
    );
  }
}
