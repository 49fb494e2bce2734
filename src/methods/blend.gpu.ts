/**
 * The output pass slerp and model_stock share on the GPU: per segment of `segment` elements,
 * out = round(c_avg * mean(others)) + round(c_base * base), with each segment's coefficient pair
 * computed on the host from reduced statistics. Kernel: shaders/blend.wgsl.
 */
import { type GpuMergeJob, table } from '../gpu/job';
import { KERNELS } from '../gpu/kernels';

const WORKGROUP = 256;
const NEG_ZERO = -0;

export function blendOnGpu(
  job: GpuMergeJob,
  baseRow: number,
  others: readonly number[],
  coefficients: Float32Array,
  segment: number,
): Promise<void> {
  const othersTable = new Uint32Array(others);
  return job.stack!.visit('blend', (batch, tile) => {
    const out = batch.scratch(tile.count * 4, 'blend.out');
    batch.dispatch({
      kernel: KERNELS.blend,
      overrides: { WORKGROUP_SIZE: WORKGROUP },
      bindings: [
        table(8, (u, f) => {
          u.set([tile.count, tile.stride, baseRow, others.length, tile.start, Math.max(segment, 1)]);
          f[6] = NEG_ZERO;
        }),
        batch.upload(othersTable, 'blend.others'),
        batch.upload(coefficients, 'blend.coefficients'),
        tile.buffer,
        out,
      ],
      workgroups: Math.ceil(tile.count / WORKGROUP),
    });
    return job.emit(batch, tile, out);
  });
}
