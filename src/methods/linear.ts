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
 * an error that names the fix instead.
 */
import { readBoolean, readNumber } from './params';
import { type MergeInputs, type MergeMethod, MergeMethodError, type ParamSpec } from './types';

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
    const { tensors } = inputs;
    if (tensors.length === 0) throw new MergeMethodError('linear needs at least one model');
    const normalize = readBoolean(this.name, inputs.params, this.globalParams, 'normalize');
    const weights = tensors.map((t) =>
      fround(readNumber(this.name, t.params, this.modelParams, 'weight', t.model)),
    );
    const n = tensors[0].values.length;
    for (const t of tensors) {
      if (t.values.length !== n) {
        throw new MergeMethodError(
          `linear: model "${t.model}" has ${t.values.length} elements where "${tensors[0].model}" has ${n}`,
        );
      }
    }
    let divisor = weights[0];
    for (let m = 1; m < weights.length; m++) divisor = fround(divisor + weights[m]);
    if (normalize && divisor === 0) {
      throw new MergeMethodError(
        'linear: the model weights sum to 0, so normalizing divides by zero; ' +
          'change the weights or set normalize: false',
      );
    }
    const out = new Float32Array(n);
    const first = tensors[0].values;
    for (let i = 0; i < n; i++) {
      let sum = fround(weights[0] * first[i]);
      for (let m = 1; m < tensors.length; m++) sum = fround(sum + fround(weights[m] * tensors[m].values[i]));
      out[i] = normalize ? sum / divisor : sum;
    }
    return out;
  }
}
