// npm run bench (after bench/run.mjs): the randomized SVD on the GPU against the TS reference, and
// what the SVD family costs in a whole merge.
//
// 1. One 1536 x 8960 task vector (Qwen2.5-1.5B's MLP shape) at rank 64, oversample 10, 2 power
//    iterations: the TS `rsvd` (CPU) and `rsvdGpu`, each timed in this process with uploads and
//    readbacks included; the GPU twice (the first run compiles the pipelines). The ratio is CPU time
//    over warm GPU time, and both factorizations' reconstruction errors are printed so that the
//    speed is not bought with accuracy.
// 2. Whole-model cost: lowrank_task_arithmetic (rank 64 on every 2-D tensor but the embeddings,
//    which a rank filter keeps at full rank, i.e. plain task arithmetic) against task_arithmetic on
//    bench/run.mjs's synthetic Qwen2.5-0.5B-shaped models, each case in its own process, per device.
//
// Options: --devices cpu,gpu (part 2), --layers 2 (part 2's model depth), --dir .tmp/bench,
// --only rsvd|model (one part). Unknown options (those meant for bench/run.mjs) are ignored.
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';

const api = await import('../dist/cli/index.js');

const { values: opts } = parseArgs({
  strict: false,
  options: {
    devices: { type: 'string', default: 'cpu,gpu' },
    layers: { type: 'string', default: '2' },
    dir: { type: 'string', default: '.tmp/bench' },
    only: { type: 'string' },
  },
});

const [M, N, RANK, SIGNAL] = [1536, 8960, 64, 96];

/** xorshift32 values in [-0.5, 0.5). */
function noise(count, seed) {
  const out = new Float32Array(count);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x / 4294967296 - 0.5;
  }
  return out;
}

/** A task vector with a decaying spectrum: L R (rank 96, column j of L scaled by 0.95^j) + noise. */
function taskVector() {
  const left = noise(M * SIGNAL, 1);
  for (let i = 0; i < M; i++) for (let j = 0; j < SIGNAL; j++) left[i * SIGNAL + j] *= 0.95 ** j;
  const a = api.matmul(left, noise(SIGNAL * N, 2), M, SIGNAL, N);
  const small = noise(M * N, 3);
  for (let i = 0; i < a.length; i++) a[i] = 0.01 * a[i] + 1e-4 * small[i];
  return a;
}

function relativeError(f, a) {
  const approx = api.lowRankProduct(f);
  let num = 0;
  for (let i = 0; i < a.length; i++) num += (approx[i] - a[i]) ** 2;
  return Math.sqrt(num / api.frobeniusNormSquared(a));
}

async function timed(fn) {
  const t0 = performance.now();
  const value = await fn();
  return { value, seconds: (performance.now() - t0) / 1000 };
}

async function gpuContext() {
  try {
    return await api.GpuContext.create({ gpu: await api.nodeGpu(), label: 'bench' });
  } catch (e) {
    console.log(`GPU unavailable: ${e.message}`);
    return undefined;
  }
}

const ctx = await gpuContext();
if (opts.only !== 'model') {
  const a = taskVector();
  const key = { seed: 1, name: 'model.layers.0.mlp.down_proj.weight' };
  const cpu = await timed(() => api.rsvd(a, M, N, RANK, key));
  console.log(
    `\nRandomized SVD of a ${M}x${N} task vector at rank ${RANK} (oversample 10, 2 power iterations)`,
  );
  console.log('run              seconds   rel. error (rank 64)');
  console.log(
    `CPU (TS)      ${cpu.seconds.toFixed(2).padStart(10)}   ${relativeError(cpu.value, a).toExponential(4)}`,
  );
  if (ctx) {
    const info = ctx.adapterInfo;
    const cold = await timed(() => api.rsvdGpu(ctx, a, M, N, RANK, key));
    const warm = await timed(() => api.rsvdGpu(ctx, a, M, N, RANK, key));
    let sigma = 0;
    for (let i = 0; i < RANK; i++)
      sigma = Math.max(sigma, Math.abs(warm.value.S[i] - cpu.value.S[i]) / cpu.value.S[0]);
    console.log(
      `GPU (cold)    ${cold.seconds.toFixed(2).padStart(10)}   ${relativeError(cold.value, a).toExponential(4)}`,
    );
    console.log(
      `GPU (warm)    ${warm.seconds.toFixed(2).padStart(10)}   ${relativeError(warm.value, a).toExponential(4)}`,
    );
    console.log(
      `CPU / GPU (warm) time ratio: ${(cpu.seconds / warm.seconds).toFixed(2)} on ${[info?.vendor, info?.architecture || info?.device].filter(Boolean).join(' ') || 'an unnamed adapter'}; ` +
        `largest singular value difference ${sigma.toExponential(2)} of sigma_1`,
    );
  }
}
ctx?.destroy();

if (opts.only !== 'rsvd') {
  const layers = String(opts.layers);
  const common = ['--layers', layers, '--dir', String(opts.dir)];
  // Generates the synthetic models when missing (and prints the I/O floor).
  const prepare = spawnSync(
    process.execPath,
    ['--expose-gc', 'bench/run.mjs', '--cases', 'floor', ...common],
    {
      stdio: 'inherit',
    },
  );
  if (prepare.status !== 0) throw new Error(`bench/run.mjs failed (exit ${prepare.status})`);
  const rows = [];
  for (const device of String(opts.devices).split(',')) {
    if (device === 'gpu' && !ctx) continue; // said so above
    const seconds = {};
    for (const name of ['task_arithmetic', 'lowrank_task_arithmetic']) {
      const child = spawnSync(
        process.execPath,
        ['--expose-gc', 'bench/run.mjs', '--case', name, '--device', device, ...common],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
      );
      if (child.status !== 0)
        throw new Error(`bench case ${name} on ${device} failed (exit ${child.status})`);
      seconds[name] = JSON.parse(child.stdout.trim().split('\n').at(-1)).seconds;
    }
    rows.push({ device, ...seconds });
  }
  console.log(`\nWhole merge, Qwen2.5-0.5B shapes, ${layers} layers, bf16, base + 1 model`);
  console.log('device   task_arithmetic s   lowrank_task_arithmetic s   lowrank / task_arithmetic');
  for (const r of rows) {
    console.log(
      `${r.device.padEnd(8)} ${r.task_arithmetic.toFixed(2).padStart(17)} ${r.lowrank_task_arithmetic.toFixed(2).padStart(27)} ${(r.lowrank_task_arithmetic / r.task_arithmetic).toFixed(2).padStart(27)}`,
    );
  }
}
