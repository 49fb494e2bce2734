import { describe, expect, it } from 'vitest';
import { compareDefaults } from '../../src/ui/compare-defaults';

const PAPER_TIES = `merge_method: ties
base_model: Qwen/Qwen2.5-Math-7B
models:
  - model: deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
    parameters: {weight: 1.0, density: 0.2}
parameters: {lambda: 1.0}
dtype: bfloat16
`;

const DEMO = `merge_method: ties
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-instruct
    parameters: {weight: 0.5, density: 0.5}
  - model: tiny-qwen-system2
    parameters: {weight: 1.0, density: 0.2}
parameters: {lambda: 1.0}
`;

describe('compareDefaults', () => {
  it('takes the base as System 1 and the merged model as System 2', () => {
    expect(
      compareDefaults(PAPER_TIES, ['Qwen/Qwen2.5-Math-7B', 'deepseek-ai/DeepSeek-R1-Distill-Qwen-7B']),
    ).toEqual({ system1: 'Qwen/Qwen2.5-Math-7B', system2: 'deepseek-ai/DeepSeek-R1-Distill-Qwen-7B' });
  });

  it('picks the most heavily weighted of several merged models', () => {
    const all = ['tiny-qwen-system1', 'tiny-qwen-instruct', 'tiny-qwen-system2'];
    expect(compareDefaults(DEMO, all)).toEqual({
      system1: 'tiny-qwen-system1',
      system2: 'tiny-qwen-system2',
    });
    // Only models in the library count.
    expect(compareDefaults(DEMO, ['tiny-qwen-instruct'])).toEqual({
      system1: undefined,
      system2: 'tiny-qwen-instruct',
    });
  });

  it('offers nothing for a recipe that does not parse', () => {
    expect(compareDefaults('merge_method: [', ['a'])).toEqual({});
    expect(compareDefaults('', ['a'])).toEqual({});
  });
});
