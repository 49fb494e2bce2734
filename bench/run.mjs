// npm run bench: merge throughput and peak memory on synthetic models with Qwen2.5-0.5B's tensor shapes
// (8 layers by default: 2 x 0.5 GB of bf16).
//
// Each case runs in its own process (so peak RSS is its own) on the same files:
//   floor            the I/O floor: every input tensor read a chunk of rows at a time with positioned
//                    reads into reused buffers (the next chunk read while this one is written), and an
//                    output of the merge's size written through the same shard writer; no math
//   task_arithmetic  the real merge (CLI engine), CPU backend; --kernels ts for the TypeScript reference
//   ties             the real merge, CPU backend
//   slerp, della     the real merge, CPU backend (slerp reads its inputs three times: two statistics
//                    passes and the output)
//   model_stock      the real merge of the base and two models (a third synthetic model), CPU backend;
//                    its ratio is against floor3, the floor of its three inputs
//   NAME@N           case NAME on N kernel threads (default --threads 2; @1: the kernels on the main thread)
//   lowrank_task_arithmetic  rank-64 task arithmetic (not in the default list; bench/rsvd.mjs runs it)
// Cases are interleaved round by round. Each row gives the best and the median of its rounds, and
// the floor's time over the case's (best over best, median over median): 1.00 is the I/O floor.
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { cpuSecondsSince, peakRssMB, QWEN25_05B, runCaseProcess, writeSyntheticModel } from './lib.mjs';

const api = await import('../dist/cli/index.js');

// v2: generated a slice of 2^24 values at a time (bench/lib.mjs).
const GEN_VERSION = 'v2';

const { values: opts } = parseArgs({
  options: {
    case: { type: 'string' },
    device: { type: 'string', default: 'cpu' },
    dir: { type: 'string', default: '.tmp/bench' },
    layers: { type: 'string', default: '8' },
    cases: { type: 'string', default: 'floor,task_arithmetic,ties' },
    repeat: { type: 'string', default: '5' },
    kernels: { type: 'string', default: 'auto' },
    threads: { type: 'string', default: '2' },
  },
});
const shape = { ...QWEN25_05B, layers: Number(opts.layers) };
const root = resolve(opts.dir, `qwen25-05b-${shape.layers}l-${GEN_VERSION}`);

const RECIPES = {
  task_arithmetic:
    'merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: reasoner\n    parameters: {weight: 0.7}\ndtype: bfloat16\n',
  ties: 'merge_method: ties\nbase_model: base\nmodels:\n  - model: reasoner\n    parameters: {weight: 1.0, density: 0.2}\nparameters: {lambda: 1.0}\ndtype: bfloat16\n',
  slerp:
    'merge_method: slerp\nbase_model: base\nmodels:\n  - model: reasoner\nparameters: {t: 0.4}\ndtype: bfloat16\n',
  della:
    'merge_method: della\nbase_model: base\nmodels:\n  - model: reasoner\n    parameters: {weight: 1.0, density: 0.4, epsilon: 0.1}\nparameters: {lambda: 1.0}\ndtype: bfloat16\n',
  model_stock:
    'merge_method: model_stock\nbase_model: base\nmodels:\n  - model: reasoner\n  - model: instruct\ndtype: bfloat16\n',
  // Rank 64 on every 2-D tensor but the embeddings (full rank there: plain task arithmetic).
  lowrank_task_arithmetic:
    'merge_method: lowrank_task_arithmetic\nbase_model: base\nmodels:\n  - model: reasoner\n    parameters: {weight: 0.7}\nparameters:\n  rank:\n    - {filter: embed_tokens, value: 896}\n    - {value: 64}\ndtype: bfloat16\n',
};

/**
 * The I/O floor: the merge's reads and writes and nothing else. Every tensor is read a chunk of rows
 * (as many as the engine's chunks) at a time, each input with its own positioned read into one of
 * two reused buffers, the next chunk read while this one is written; the output chunk written is
 * the first input's bytes (or zeros where the output's size differs).
 */
async function ioFloor(recipe, resolver, output) {
  const { plan } = await api.prepareMerge(recipe, resolver);
  const writer = new api.ShardWriter(plan.layout, (f) => output.createFile(f));
  let inputBytes = 0;
  const buffers = [0, 1].map(() => []);
  const buffer = (set, i, length) => {
    if (!buffers[set][i] || buffers[set][i].byteLength < length) buffers[set][i] = new Uint8Array(length);
    return buffers[set][i].subarray(0, length);
  };
  let zeros = new Uint8Array(0);
  for (const t of plan.tensors) {
    const rowLen =
      t.shape.length >= 2 ? t.shape.slice(1).reduce((a, b) => a * b, 1) : t.shape.reduce((a, b) => a * b, 1);
    const rows = rowLen === 0 ? 0 : t.shape.reduce((a, b) => a * b, 1) / rowLen;
    const rowsPerChunk = Math.max(1, Math.floor(api.STREAM_ELEMENTS / Math.max(1, rowLen)));
    const outRowBytes = rowLen * api.DTYPE_BYTES[t.outDtype];
    const read = async (r0, r1, set) =>
      Promise.all(
        t.inputs.map(async (input, i) => {
          const rowBytes =
            (input.submatrix ? input.tensor.shape[1] : rowLen) * api.DTYPE_BYTES[input.tensor.dtype];
          const target = buffer(set, i, (r1 - r0) * rowBytes);
          const source = plan.models[input.modelIndex].index.sources.get(input.tensor.file);
          await api.readInto(source, input.tensor.offset + r0 * rowBytes, target);
          inputBytes += target.byteLength;
          return target;
        }),
      );
    writer.beginTensor(t.name);
    let writing = Promise.resolve();
    let pending = rows > 0 ? read(0, Math.min(rows, rowsPerChunk), 0) : undefined;
    for (let r0 = 0, k = 0; r0 < rows; r0 += rowsPerChunk, k++) {
      const chunk = await pending;
      const r1 = Math.min(rows, r0 + rowsPerChunk);
      await writing;
      if (r1 < rows) pending = read(r1, Math.min(rows, r1 + rowsPerChunk), (k + 1) % 2);
      const outBytes = (r1 - r0) * outRowBytes;
      if (chunk[0].byteLength === outBytes) {
        writing = writer.writeTensorPart(chunk[0]);
      } else {
        if (zeros.byteLength < outBytes) zeros = new Uint8Array(outBytes);
        writing = writer.writeTensorPart(zeros.subarray(0, outBytes));
      }
    }
    await writing;
    await writer.endTensor();
  }
  await writer.finish();
  await output.commit();
  return inputBytes;
}

async function runCase(caseName, device) {
  const [name, threadsText] = caseName.split('@');
  const threadCount = Number(threadsText ?? opts.threads);
  const out = join(root, `out-${name}`);
  await rm(out, { recursive: true, force: true });
  const floor = name === 'floor' || name === 'floor3';
  const recipe = api.parseRecipe(
    RECIPES[name === 'floor' ? 'task_arithmetic' : name === 'floor3' ? 'model_stock' : name],
    'bench',
  );
  const resolver = api.folderResolver(root);
  const output = await api.outputDir(out, { force: true });
  const started = performance.now();
  const cpuStarted = process.cpuUsage();
  let inputBytes = 0;
  if (floor) {
    inputBytes = await ioFloor(recipe, resolver, output);
  } else {
    let backend = api.cpuBackend;
    if (device === 'gpu') {
      backend = (await api.selectBackend('gpu', recipe.mergeMethod, () => {})).backend;
    }
    const cpuThreads =
      device === 'cpu' && threadCount > 1 ? api.NodeCpuThreads.start(threadCount) : undefined;
    await api.runMerge({
      recipe,
      resolveModel: resolver,
      output,
      backend,
      cpuKernels: opts.kernels,
      cpuThreads,
      onProgress: (p) => {
        inputBytes = p.inputBytesDone;
      },
    });
    await cpuThreads?.close();
  }
  const seconds = (performance.now() - started) / 1000;
  // CPU time of the process (every thread: the reads' thread pool too): steadier than wall time
  // on a machine shared with other work.
  const cpuSeconds = cpuSecondsSince(cpuStarted);
  await resolver.closeAll();
  await rm(out, { recursive: true, force: true });
  return {
    name: caseName,
    device,
    seconds,
    cpuSeconds,
    inputBytes,
    peakRssMB: peakRssMB(),
  };
}

if (opts.case) {
  const r = await runCase(opts.case, opts.device);
  process.stdout.write(`${JSON.stringify(r)}\n`);
} else {
  if (!existsSync(join(root, 'reasoner', 'model.safetensors'))) {
    process.stderr.write(`bench: generating synthetic Qwen2.5-0.5B-shaped models in ${root}\n`);
    await writeSyntheticModel(api, join(root, 'base'), { shape, tied: true });
    await writeSyntheticModel(api, join(root, 'reasoner'), { shape, tied: true, seed: 0x1234, delta: true });
  }
  const threeInputs = opts.cases.split(',').some((n) => n === 'floor3' || n.split('@')[0] === 'model_stock');
  if (threeInputs && !existsSync(join(root, 'instruct', 'model.safetensors'))) {
    process.stderr.write(`bench: generating a third synthetic model in ${root}\n`);
    await writeSyntheticModel(api, join(root, 'instruct'), { shape, tied: true, seed: 0x9e37, delta: true });
  }
  // Cases are interleaved round by round and each reports its median time, so that a slow moment
  // of the machine (page cache, another process) does not land on one case only.
  const names = opts.cases.split(',');
  const runs = new Map(names.map((n) => [n, []]));
  for (let round = 0; round < Number(opts.repeat); round++) {
    for (const name of names) {
      const row = runCaseProcess('bench/run.mjs', name, [
        '--device',
        opts.device,
        '--dir',
        opts.dir,
        '--layers',
        opts.layers,
        '--kernels',
        opts.kernels,
        '--threads',
        opts.threads,
      ]);
      runs.get(name).push(row);
    }
  }
  const summary = (name) => {
    const all = runs.get(name).sort((x, y) => x.seconds - y.seconds);
    return {
      name,
      best: all[0].seconds,
      median: all[Math.floor((all.length - 1) / 2)].seconds,
      cpuBest: Math.min(...all.map((r) => r.cpuSeconds)),
      inputBytes: all[0].inputBytes,
      peakRssMB: Math.max(...all.map((r) => r.peakRssMB)),
    };
  };
  const results = names.map(summary);
  const floorOf = (r) =>
    results.find((f) => f.name === (r.name.split('@')[0] === 'model_stock' ? 'floor3' : 'floor'));
  console.log(
    `\nQwen2.5-0.5B shapes, ${shape.layers} layers, bf16, base + 1 model (model_stock, floor3: base + 2; ${(results[0].inputBytes / 1e9).toFixed(2)} GB read), ` +
      `device ${opts.device}, kernels ${opts.kernels}, threads ${opts.threads} (NAME@N: N), ${opts.repeat} interleaved rounds, ` +
      `load average ${os.loadavg()[0].toFixed(1)} on ${os.availableParallelism()} cores`,
  );
  console.log(
    'case              best s  median s   GB/s (best)   floor/case best  floor/case median   CPU s (best)   peak RSS',
  );
  for (const r of results) {
    const gbps = r.inputBytes / 1e9 / r.best;
    const floor = floorOf(r);
    const ratio = (a, b) => (floor ? (a / b).toFixed(2) : '-');
    console.log(
      `${r.name.padEnd(16)} ${r.best.toFixed(2).padStart(7)} ${r.median.toFixed(2).padStart(9)} ${gbps.toFixed(2).padStart(13)} ` +
        `${ratio(floor?.best, r.best).padStart(16)} ${ratio(floor?.median, r.median).padStart(18)} ` +
        `${r.cpuBest.toFixed(2).padStart(14)} ${`${r.peakRssMB.toFixed(0)} MB`.padStart(10)}`,
    );
  }
}
