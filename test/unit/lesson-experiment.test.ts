import { describe, expect, it } from 'vitest';
import {
  comparisonCsv,
  comparisonRows,
  estimateExperiment,
  experimentRecipe,
  gpuVerdict,
} from '../../src/lesson/experiment';
import { TABLE_1_5B, TABLE_7B } from '../../src/lesson/paper-results';
import { parseRecipe } from '../../src/recipe';
import { type HubModelPlan, largestTensorBytes, modelShape } from '../../src/store/hub-plan';

/** Qwen2.5-1.5B's shape, as its config.json gives it. */
const QWEN_1_5B = {
  architectures: ['Qwen2ForCausalLM'],
  hidden_size: 1536,
  intermediate_size: 8960,
  num_hidden_layers: 28,
  vocab_size: 151936,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
};

function plan(repo: string, weightBytes: number, extra = 10_000_000): HubModelPlan {
  return {
    repo,
    revision: 'main',
    files: [
      { name: 'config.json', size: 1000 },
      { name: 'model.safetensors', size: weightBytes },
    ],
    bytes: weightBytes + extra,
    weightBytes,
    config: modelShape(QWEN_1_5B, repo),
  };
}

describe('the paper experiment', () => {
  it('merges with the paper TIES preset over the two repos', () => {
    const recipe = parseRecipe(experimentRecipe(), 'experiment');
    expect(recipe.mergeMethod).toBe('ties');
    expect(recipe.baseModel).toBe('Qwen/Qwen2.5-Math-1.5B');
    expect(recipe.models.map((m) => m.model)).toEqual(['deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B']);
    expect(recipe.models[0].parameters).toMatchObject({ weight: 1, density: 0.2 });
    expect(recipe.parameters).toMatchObject({ lambda: 1 });
  });

  it('estimates downloads, storage and time, counting what the library has as done', () => {
    const plans = { system1: plan('a/s1', 3.09e9), system2: plan('a/s2', 3.55e9) };
    const none = estimateExperiment(plans, { system1: false, system2: false });
    expect(none.downloadBytes).toBe(3.09e9 + 3.55e9 + 2e7);
    expect(none.outputBytes).toBe(3.55e9);
    expect(none.storageBytes).toBe(none.downloadBytes + 3.55e9);
    expect(none.downloadSeconds).toBeCloseTo(none.downloadBytes / 25e6, 6);
    const half = estimateExperiment(plans, { system1: true, system2: false });
    expect(half.downloadBytes).toBe(3.55e9 + 1e7);
  });

  it('says before downloading whether the GPU holds the largest tensor', () => {
    const p = plan('deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B', 3.55e9);
    expect(largestTensorBytes(p.config)).toBe(151936 * 1536 * 2);
    const small = gpuVerdict(
      {
        available: true,
        description: 'laptop',
        maxBufferSize: 256 * 2 ** 20,
        maxStorageBufferBindingSize: 128 * 2 ** 20,
      },
      p,
    );
    expect(small.fits).toBe(false);
    expect(small.message).toContain('allows buffers of at most 134 MB');
    expect(small.message).toContain('single tensors of 467 MB');
    const big = gpuVerdict(
      { available: true, maxBufferSize: 2 ** 31, maxStorageBufferBindingSize: 2 ** 31 },
      p,
    );
    expect(big.fits).toBe(true);
    const none = gpuVerdict({ available: false }, p);
    expect(none.fits).toBe(false);
    expect(none.message).toContain('no WebGPU adapter');
  });

  it('refuses a config without the sizes it needs, naming the key', () => {
    expect(() => modelShape({ ...QWEN_1_5B, hidden_size: 'big' }, 'x/y')).toThrow(
      'x/y/config.json: \'hidden_size\' is "big", not a positive integer',
    );
  });

  it('puts the user rows beside the paper Table 2 and writes CSV', () => {
    const names = {
      system1: 'Qwen/Qwen2.5-Math-1.5B',
      system2: 'deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B',
      merged: 'out-1',
    };
    const rows = comparisonRows(
      [
        { model: names.system2, questions: 30, accuracy: 0.8, meanTokens: 1500 },
        { model: 'out-1', questions: 30, accuracy: 0.7666666, meanTokens: 300, lengthChange: -0.8 },
      ],
      names,
    );
    expect(rows.map((r) => r.role)).toEqual(['System 2', 'Merged (TIES)', 'System 1']);
    expect(rows[0].paper).toEqual({ gsm8k: 76.8, tokens: 2744 });
    expect(rows[1].paper).toEqual({ gsm8k: 75.9, tokens: 394 });
    expect(rows[2].yours).toBeUndefined();
    const csv = comparisonCsv(rows).trim().split('\n');
    expect(csv[0]).toBe(
      'role,model,questions,accuracy_percent,mean_tokens,length_change_percent,paper_gsm8k_percent,paper_mean_tokens',
    );
    expect(csv[1]).toBe('System 2,deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B,30,80,1500,,76.8,2744');
    expect(csv[2]).toBe('Merged (TIES),out-1,30,76.6667,300,-80,75.9,394');
    expect(csv[3]).toBe('System 1,Qwen/Qwen2.5-Math-1.5B,,,,,,');
  });

  it('holds the paper tables as PAPER.md gives them', () => {
    expect(TABLE_7B.find((r) => r.model === 'AIM-TIES')).toMatchObject({
      average: 55.0,
      lengthChange: -0.553,
    });
    expect(TABLE_7B.find((r) => r.model === 'TIES')?.scores).toEqual([90.6, 81.8, 38.2, 43.0, 41.9, 33.3]);
    expect(TABLE_1_5B.find((r) => r.model === 'Average')).toMatchObject({ gsm8k: 26.6, tokens: null });
    // Each 7B average is the mean of its six scores, to the table's rounding.
    for (const row of TABLE_7B) {
      const mean = row.scores.reduce((a, b) => a + b, 0) / 6;
      expect(Math.abs(mean - row.average)).toBeLessThanOrEqual(0.06);
    }
  });
});
