// npm run bench, AIM rows: tokens/s of AIM's calibration pass (the base model's prefill with the
// per-channel |x| statistics of every module input) on a synthetic Qwen2.5-1.5B-shaped model (random
// bf16 weights, real tensor shapes, fewer layers so a small machine finishes), each against the plain
// prefill of the same runner on the same blocks in the same run (ratio = statistics pass / plain).
// GPU rows on Node's WebGPU (Dawn) where an adapter exists; the CPU reference always. On a software
// adapter (SwiftShader) the GPU figures say nothing about GPU speed.
//
// Options: --layers N (default 2 of 28), --vocab N (default 151936), --block N (tokens per block,
// default 128), --blocks N (default 2), --devices gpu,cpu.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { QWEN25_15B, writeSyntheticModel } from './lib.mjs';

const api = await import('../dist/cli/index.js');

const { values } = parseArgs({
  options: {
    layers: { type: 'string', default: process.env.L2S_BENCH_AIM_LAYERS ?? '2' },
    vocab: { type: 'string', default: '151936' },
    block: { type: 'string', default: '128' },
    blocks: { type: 'string', default: '2' },
    devices: { type: 'string', default: 'gpu,cpu' },
  },
});
const positive = (name) => {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`bench/aim.mjs: --${name} must be a whole number >= 1`);
  return n;
};
const shape = { ...QWEN25_15B, layers: positive('layers'), vocabSize: positive('vocab') };
const blockSize = positive('block');
const blockCount = positive('blocks');

const dir = await mkdtemp(join(tmpdir(), 'l2s-bench-aim-'));
try {
  // Norms around 1, so activations keep realistic magnitudes through the layers.
  await writeSyntheticModel(api, dir, { shape, tied: true, normsAtOne: true });
  const files = await api.modelFolder(dir, 'synthetic-1.5b');
  const weights = await api.openModelWeights(files);
  let x = 12345;
  const blocks = Array.from({ length: blockCount }, () =>
    Int32Array.from({ length: blockSize }, () => {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      return x % shape.vocabSize;
    }),
  );
  const calibration = {
    blocks,
    blockSize,
    samplesUsed: 0,
    totalTokens: blockSize * blockCount,
    textSha256: '0'.repeat(64),
  };
  const greedy = { temperature: 0, topP: 1, seed: 0 };
  const rows = [];
  for (const device of values.devices.split(',')) {
    let ctx;
    let runner;
    let sinkOf;
    if (device === 'gpu') {
      const gpu = await api.nodeGpu().catch(() => undefined);
      const adapter = gpu ? await gpu.requestAdapter() : undefined;
      if (!adapter) {
        console.error('bench/aim: no WebGPU adapter for Node; GPU row skipped');
        continue;
      }
      ctx = await api.GpuContext.create({ gpu, label: 'bench-aim' });
      runner = await api.createGpuRunner(weights, { context: ctx, maxContext: blockSize });
      sinkOf = () => new api.GpuActivationStatistics(ctx);
    } else {
      runner = await api.createCpuRunner(weights, { maxContext: blockSize });
      sinkOf = () => api.cpuStatisticsSink();
    }
    console.error(`bench/aim: ${device}: model loaded`);
    // Warm-up (pipelines, page cache), then plain prefill and the statistics pass, interleaved.
    await runner.prefill(Array.from(blocks[0].subarray(0, 8)), greedy);
    runner.reset();
    let plainMs = 0;
    let statsMs = 0;
    for (const block of blocks) {
      let t = performance.now();
      runner.reset();
      await runner.prefill(Array.from(block), greedy);
      plainMs += performance.now() - t;
      const sink = sinkOf();
      t = performance.now();
      await api.runStatisticsPass(runner, { ...calibration, blocks: [block] }, sink);
      statsMs += performance.now() - t;
      sink.dispose?.();
    }
    const tokens = blockSize * blockCount;
    console.error(
      `bench/aim: ${device}: plain ${plainMs.toFixed(0)} ms, calibration ${statsMs.toFixed(0)} ms for ${tokens} tokens`,
    );
    rows.push({
      device,
      plain: (tokens / plainMs) * 1000,
      stats: (tokens / statsMs) * 1000,
      ratio: plainMs / statsMs,
    });
    runner.dispose();
    ctx?.destroy();
  }
  console.log(
    `\nAIM calibration, synthetic Qwen2.5-1.5B shapes, ${shape.layers} of 28 layers, vocab ${shape.vocabSize}, ` +
      `${blockCount} blocks of ${blockSize} tokens\n`,
  );
  console.log(
    '| device | plain prefill tokens/s | calibration tokens/s | ratio (plain time / calibration time) |',
  );
  console.log('|---|---|---|---|');
  for (const r of rows)
    console.log(`| ${r.device} | ${r.plain.toFixed(1)} | ${r.stats.toFixed(1)} | ${r.ratio.toFixed(2)} |`);
  await files.close();
} finally {
  await rm(dir, { recursive: true, force: true });
}
