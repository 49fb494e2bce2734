/**
 * `slerp` on the GPU (slerp.ts is the reference): the norms and the unit-vector dot product are
 * blocked sums over the tiles (src/gpu/reduce.ts, f32-reduce.ts's order), the coefficients come
 * from `slerpCoefficients` on the host, then one blend pass writes the output.
 * Kernels: shaders/block-sum.wgsl, shaders/blend.wgsl.
 */
import type { GpuMergeJob } from '../gpu/job';
import { rowSums } from '../gpu/reduce';
import { blendOnGpu } from './blend.gpu';
import { readNumber } from './params';
import { SLERP_NORM_EPSILON, slerpCoefficients } from './slerp';
import { type MergeMethod, MergeMethodError } from './types';

const fround = Math.fround;

export async function slerpOnGpu(method: MergeMethod, job: GpuMergeJob): Promise<void> {
  const { inputs } = job;
  const { tensors, baseIndex } = inputs;
  if (tensors.length === 1) {
    await job.load();
    await job.copyRow(0);
    return;
  }
  if (tensors.length !== 2) {
    throw new MergeMethodError(
      `slerp merges exactly two models (the base and one other), got ${tensors.length}`,
    );
  }
  if (baseIndex !== 0 && baseIndex !== 1) {
    throw new MergeMethodError('slerp needs a base_model, which must be one of the two models');
  }
  const t = readNumber(method.name, inputs.params, method.globalParams, 't');
  const other = 1 - baseIndex;
  if (tensors[other].elements !== tensors[baseIndex].elements) {
    throw new MergeMethodError(
      `slerp: model "${tensors[other].model}" has ${tensors[other].elements} elements where the base has ${tensors[baseIndex].elements}`,
    );
  }
  const stack = await job.load();
  const squares = await rowSums(
    job.ctx,
    stack,
    [
      { term: 'square', row: baseIndex },
      { term: 'square', row: other },
    ],
    stack.count,
    job.statisticsBytes,
  );
  const na = fround(Math.sqrt(squares[0]));
  const nb = fround(Math.sqrt(squares[1]));
  const [dot] = await rowSums(
    job.ctx,
    stack,
    [
      {
        term: 'dot',
        row: baseIndex,
        rowB: other,
        divA: na > SLERP_NORM_EPSILON ? na : undefined,
        divB: nb > SLERP_NORM_EPSILON ? nb : undefined,
      },
    ],
    stack.count,
    job.statisticsBytes,
  );
  const { s0, s1 } = slerpCoefficients(dot, t);
  await blendOnGpu(job, baseIndex, [other], new Float32Array([s1, s0]), job.count);
}
