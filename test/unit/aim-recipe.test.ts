import { describe, expect, it } from 'vitest';
import { getMethod } from '../../src/methods';
import { parseRecipe, RecipeError, recipeToYaml, validateRecipe } from '../../src/recipe';

const HEAD = `merge_method: ties
base_model: Qwen/Qwen2.5-Math-7B
models:
  - model: deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
    parameters: {weight: 1.0, density: 0.2}
parameters: {lambda: 1.0}
dtype: bfloat16
`;

function fails(aim: string, message: RegExp, head = HEAD) {
  const run = () => {
    const recipe = parseRecipe(`${head}${aim}`, 'r.yml');
    validateRecipe(recipe, getMethod(recipe.mergeMethod));
  };
  expect(run).toThrow(RecipeError);
  expect(run).toThrow(message);
}

describe('the aim: recipe block', () => {
  it('fills the defaults: omega 0.4, built-in calibration, 100 samples, 512-token blocks, seed 42', () => {
    const r = parseRecipe(`${HEAD}aim: {}\n`);
    expect(r.aim).toEqual({
      omega: 0.4,
      calibration: { source: { kind: 'builtin' }, samples: 100, blockSize: 512, seed: 42 },
    });
  });

  it('reads the paper setting (s1K from the hub) and round-trips through YAML', () => {
    const text = `${HEAD}aim:
  omega: 0.4
  calibration:
    source: hub
    dataset: simplescaling/s1K
    field: [question, solution]
    samples: 100
    seed: 7
    sha256: ${'3f'.repeat(32)}
`;
    const r = parseRecipe(text);
    expect(r.aim).toEqual({
      omega: 0.4,
      calibration: {
        source: {
          kind: 'hub',
          dataset: 'simplescaling/s1K',
          config: 'default',
          split: 'train',
          field: ['question', 'solution'],
        },
        samples: 100,
        blockSize: 512,
        seed: 7,
        sha256: '3f'.repeat(32),
      },
    });
    const yaml = recipeToYaml(r);
    expect(yaml).toMatch(/aim:\n {2}omega: 0.4\n {2}calibration:\n {4}source: hub\n/);
    expect(parseRecipe(yaml)).toEqual(r);
  });

  it('round-trips file sources, a single field, saved statistics and a digit-only hash', () => {
    for (const aim of [
      'aim: {omega: 0.25, calibration: {source: file, path: calib.txt, block_size: 128}}\n',
      'aim: {omega: 0, calibration: {source: file, path: data/c.jsonl, field: text, samples: 5}}\n',
      'aim: {omega: 1, statistics: ../out/aim_statistics.safetensors}\n',
      `aim: {calibration: {sha256: "${'1'.repeat(64)}"}}\n`,
    ]) {
      const r = parseRecipe(`${HEAD}${aim}`);
      const again = parseRecipe(recipeToYaml(r));
      expect(again).toEqual(r);
      expect(recipeToYaml(again)).toBe(recipeToYaml(r));
    }
    const single = parseRecipe(`${HEAD}aim: {calibration: {source: file, path: c.jsonl, field: text}}\n`);
    expect(single.aim?.calibration.source).toEqual({ kind: 'file', path: 'c.jsonl', field: ['text'] });
  });

  it('refuses malformed blocks by name, with the file and line', () => {
    fails('aim: 0.4\n', /r.yml:8: aim: aim must be a mapping like \{omega: 0.4\}, not 0.4/);
    fails('aim: {omega: 1.5}\n', /aim.omega: must be a number from 0 to 1/);
    fails('aim: {omega: "0.4"}\n', /aim.omega: must be a number from 0 to 1 .*not the string "0.4"/);
    fails('aim: {omgea: 0.4}\n', /aim.omgea: unknown key omgea; accepted: omega, calibration, statistics/);
    fails('aim: {calibration: {source: web}}\n', /aim.calibration.source: must be builtin, file or hub/);
    fails(
      'aim: {calibration: {source: hub, field: q}}\n',
      /aim.calibration.dataset: dataset .* must be a non-empty string/,
    );
    fails(
      'aim: {calibration: {source: hub, dataset: a/b}}\n',
      /aim.calibration.field: a hub calibration set needs field/,
    );
    fails('aim: {calibration: {source: file}}\n', /aim.calibration.path: path .* must be a non-empty string/);
    fails(
      'aim: {calibration: {source: file, path: c.jsonl}}\n',
      /aim.calibration.field: a .jsonl calibration file needs field/,
    );
    fails(
      'aim: {calibration: {source: file, path: c.txt, field: q}}\n',
      /field applies to .jsonl files only/,
    );
    fails(
      'aim: {calibration: {source: builtin, dataset: a/b}}\n',
      /aim.calibration.dataset: unknown key dataset; accepted: source, samples, block_size, seed, sha256/,
    );
    fails('aim: {calibration: {samples: 0}}\n', /aim.calibration.samples: must be an integer from 1/);
    fails('aim: {calibration: {block_size: 12.5}}\n', /aim.calibration.block_size: must be an integer/);
    fails(
      'aim: {calibration: {seed: -1}}\n',
      /aim.calibration.seed: must be an integer from 0 to 4294967295/,
    );
    fails('aim: {calibration: {sha256: abc}}\n', /aim.calibration.sha256: must be 64 hex digits/);
    fails(
      'aim: {calibration: {source: hub, dataset: a/b, field: []}}\n',
      /field must be a column name or a non-empty list/,
    );
  });

  it('needs a base model (linear takes one optionally)', () => {
    fails(
      'aim: {}\n',
      /r.yml:7: aim: AIM needs base_model: the model \(System 1\) whose activations are measured/,
      'merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n  - model: b\n    parameters: {weight: 1}\n',
    );
    const withBase = parseRecipe(
      'merge_method: linear\nbase_model: a\nmodels:\n  - model: a\n    parameters: {weight: 1}\n  - model: b\n    parameters: {weight: 1}\naim: {}\n',
    );
    expect(() => validateRecipe(withBase, getMethod('linear'))).not.toThrow();
  });
});
