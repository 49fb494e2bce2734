/**
 * mergekit's `linear`: a weighted average of the input tensors (model soups).
 *
 * In f32, over every input in input order (the base model too, when the recipe names one: mergekit adds
 * it to the inputs and then needs a weight for it), sums starting from the first input:
 *   w_m = fround(weight_m)
 *   sum[i] = sum_m fround(w_m * x_m[i])
 *   normalize (default true): out[i] = fround(sum[i] / divisor), divisor = sum_m w_m (one scalar)
 *   otherwise out[i] = sum[i].
 * mergekit has no guard on the divisor and would write Inf/NaN when the weights sum to 0; here that is
 * an error that names the fix instead. Element-wise, so a chunk of rows needs no statistics pass.
 */

import type { GpuMergeJob } from '../gpu/job';
import { chunkLength, chunkRowLength, mergeAsOneChunk, specOf } from './chunks';
import { linearOnGpu } from './linear.gpu';
import { elementCount, readBoolean, readNumber } from './params';
import {
  type MergeInputs,
  type MergeMethod,
  MergeMethodError,
  type ParamSpec,
  type StreamingMerge,
  type TensorChunk,
  type TensorMergeSpec,
} from './types';

const fround = Math.fround;

export class LinearMerge implements MergeMethod {
  readonly name = 'linear';
  readonly summary = 'Weighted average of the models.';
  readonly baseModel = 'optional' as const;
  readonly taskVector = false;
  readonly globalParams: readonly ParamSpec[] = [
    {
      name: 'normalize',
      type: 'boolean',
      default: true,
      doc: 'Divide by the sum of the weights, so the weights need not sum to 1.',
    },
  ];
  readonly modelParams: readonly ParamSpec[] = [
    { name: 'weight', type: 'number', required: true, doc: "This model's share of the average." },
  ];

  merge(inputs: MergeInputs): Float32Array {
    return mergeAsOneChunk(this.name, this.stream(specOf(inputs)), inputs);
  }

  gpu(job: GpuMergeJob): Promise<void> {
    return linearOnGpu(this, job);
  }

  stream(spec: TensorMergeSpec): StreamingMerge {
    const { tensors } = spec;
    if (tensors.length === 0) throw new MergeMethodError('linear needs at least one model');
    const normalize = readBoolean(this.name, spec.params, this.globalParams, 'normalize');
    const weights = Float64Array.from(tensors, (t) =>
      fround(readNumber(this.name, t.params, this.modelParams, 'weight', t.model)),
    );
    let divisor = weights[0];
    for (let m = 1; m < weights.length; m++) divisor = fround(divisor + weights[m]);
    if (normalize && divisor === 0) {
      throw new MergeMethodError(
        'linear: the model weights sum to 0, so normalizing divides by zero; ' +
          'change the weights or set normalize: false',
      );
    }
    const rowLength = chunkRowLength(spec.shape);
    const total = elementCount(spec.shape);
    return {
      passes: 0,
      accumulate: () => {},
      produce: (chunk: TensorChunk, out: Float32Array) => {
        const n = chunkLength(this.name, spec, chunk, rowLength, total);
        const models = chunk.values.length;
        // out accumulates sum_m fround(w_m * x_m[i]); every store rounds to f32.
        for (let m = 0; m < models - 1; m++) {
          const x = chunk.values[m];
          const w = weights[m];
          if (m === 0) for (let i = 0; i < n; i++) out[i] = w * x[i];
          else for (let i = 0; i < n; i++) out[i] = out[i] + fround(w * x[i]);
        }
        const x = chunk.values[models - 1];
        const w = weights[models - 1];
        const first = models === 1;
        for (let i = 0; i < n; i++) {
          const term = fround(w * x[i]);
          const sum = first ? term : fround(out[i] + term);
          out[i] = normalize ? sum / divisor : sum;
        }
      },
    };
  }
}
