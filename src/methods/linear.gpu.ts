/**
 * `linear` on the GPU (linear.ts is the reference): one weighted-sum dispatch per tile, the same f32
 * products and sums in the same model order. Kernel: shaders/weighted-sum.wgsl.
 */
import type { CommandBatch } from '../gpu/commands';
import { type GpuMergeJob, table } from '../gpu/job';
import { KERNELS } from '../gpu/kernels';
import { readBoolean, readNumber } from './params';
import { type MergeMethod, MergeMethodError } from './types';

const fround = Math.fround;
const WORKGROUP = 256;
const NEG_ZERO = -0;

export async function linearOnGpu(method: MergeMethod, job: GpuMergeJob): Promise<void> {
  const { inputs } = job;
  const { tensors } = inputs;
  const name = method.name;
  if (tensors.length === 0) throw new MergeMethodError('linear needs at least one model');
  const normalize = readBoolean(name, inputs.params, method.globalParams, 'normalize');
  const weights = tensors.map((t) =>
    fround(readNumber(name, t.params, method.modelParams, 'weight', t.model)),
  );
  for (const t of tensors) {
    if (t.elements !== job.count) {
      throw new MergeMethodError(
        `linear: model "${t.model}" has ${t.elements} elements where "${tensors[0].model}" has ${job.count}`,
      );
    }
  }
  let divisor = weights[0];
  for (let m = 1; m < weights.length; m++) divisor = fround(divisor + weights[m]);
  if (normalize && divisor === 0) {
    throw new MergeMethodError(
      'linear: the model weights sum to 0, so normalizing divides by zero; change the weights or set normalize: false',
    );
  }
  const stack = await job.load();
  const terms = table(tensors.length * 2, (u, f) => {
    weights.forEach((w, m) => {
      u[m * 2] = m;
      f[m * 2 + 1] = w;
    });
  });
  await stack.visit('linear', (batch: CommandBatch, tile) => {
    const out = batch.scratch(tile.count * 4, 'linear.out');
    batch.dispatch({
      kernel: KERNELS.weightedSum,
      overrides: { WORKGROUP_SIZE: WORKGROUP },
      bindings: [
        table(8, (u, f) => {
          u.set([tile.count, tile.stride, tensors.length, normalize ? 1 : 0]);
          f[4] = divisor;
          f[5] = NEG_ZERO;
        }),
        batch.upload(terms, 'linear.terms'),
        tile.buffer,
        out,
      ],
      workgroups: Math.ceil(tile.count / WORKGROUP),
    });
    return job.emit(batch, tile, out);
  });
}
