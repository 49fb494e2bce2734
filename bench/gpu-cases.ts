/**
 * The GPU test cases (test/browser/harness: kernels, merge methods, randomized SVD and its
 * streaming, AIM, the model runtime's kernels) on Node's WebGPU, without vitest: built into
 * dist/gpu-cases/run.js by bench/gpu-cases.vite.config.ts so that a machine with a GPU needs only
 * that bundle and the `webgpu` package (bench/gpu-device.sh). Prints one row per case and the
 * adapter; exits 1 when a case fails.
 *   node dist/gpu-cases/run.js [--only TEXT]
 */
import { GpuContext } from '../src/gpu/device';
import { nodeGpu } from '../src/node/webgpu';
import { AIM_GPU_CASES } from '../test/browser/harness/aim-gpu-cases';
import { GPU_CASES } from '../test/browser/harness/gpu-cases';
import { RSVD_CASES } from '../test/browser/harness/gpu-rsvd-cases';
import { MODEL_KERNEL_CASES } from '../test/browser/harness/model-gpu-cases';

const onlyAt = process.argv.indexOf('--only');
const only = onlyAt >= 0 ? process.argv[onlyAt + 1] : undefined;
const groups = [
  ['kernels and methods', GPU_CASES],
  ['randomized SVD', RSVD_CASES],
  ['AIM', AIM_GPU_CASES],
  ['model runtime', MODEL_KERNEL_CASES],
] as const;

const gpu = await nodeGpu();
const adapter = gpu ? await gpu.requestAdapter({ powerPreference: 'high-performance' }) : null;
if (!gpu || !adapter) {
  console.error('gpu-cases: no WebGPU adapter for Node (is the Vulkan driver found?)');
  process.exit(2);
}
const info = adapter.info;
console.log(
  `adapter: ${[info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ')}`,
);
console.log('| group | case | result | ms | note |');
console.log('|---|---|---|---|---|');
let failed = 0;
let total = 0;
for (const [group, cases] of groups) {
  for (const c of cases) {
    if (only && !c.name.includes(only)) continue;
    total++;
    const started = performance.now();
    let ctx: GpuContext | undefined;
    let result = 'ok';
    let note = '';
    try {
      ctx = await GpuContext.create({ gpu, label: 'gpu-cases', ...c.options });
      const out = await c.run(ctx);
      if (typeof out === 'string') note = out;
    } catch (e) {
      failed++;
      result = 'FAIL';
      note = (e as Error).message;
    } finally {
      ctx?.destroy();
    }
    const ms = (performance.now() - started).toFixed(0);
    console.log(
      `| ${group} | ${c.name} | ${result} | ${ms} | ${note.replaceAll('|', '/').replaceAll('\n', ' ')} |`,
    );
  }
}
console.log(`\n${total - failed} of ${total} GPU cases passed`);
process.exit(failed > 0 ? 1 : 0);
