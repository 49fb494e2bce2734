import { describe, expect, it } from 'vitest';
import type { MergeMethod, ParamSpec } from '../../src/methods/types';
import {
  isHubRepoId,
  type MergeRecipe,
  mergeInputModels,
  parseHubModelRef,
  parseRecipe,
  RecipeError,
  recipeToYaml,
  referencedModels,
  resolveParams,
  resolveSetting,
  tensorPosition,
  validateRecipe,
} from '../../src/recipe';

// Method descriptions with mergekit's parameter lists (generalized_task_arithmetic.py, linear.py,
// slerp.py). The recipe code reads only these fields; merge() is never called here.
const noMerge = (): Float32Array => {
  throw new Error('not called by recipe tests');
};
const num = (name: string, extra: Partial<ParamSpec> = {}): ParamSpec => ({
  name,
  type: 'number',
  doc: name,
  ...extra,
});
const bool = (name: string, def: boolean): ParamSpec => ({ name, type: 'boolean', default: def, doc: name });

function taskVectorMethod(name: string, normalize: boolean): MergeMethod {
  return {
    name,
    summary: name,
    baseModel: 'required',
    globalParams: [
      bool('int8_mask', false),
      bool('normalize', normalize),
      bool('rescale', false),
      num('lambda', { default: 1 }),
    ],
    modelParams: [num('weight', { required: true }), num('density', { default: 1 })],
    taskVector: true,
    merge: noMerge,
  };
}
const TASK_ARITHMETIC = taskVectorMethod('task_arithmetic', false);
const TIES = taskVectorMethod('ties', true);
const DARE_TIES = taskVectorMethod('dare_ties', true);
const LINEAR: MergeMethod = {
  name: 'linear',
  summary: 'linear',
  baseModel: 'unused',
  globalParams: [bool('normalize', true)],
  modelParams: [num('weight', { required: true })],
  taskVector: false,
  merge: noMerge,
};
const SLERP: MergeMethod = {
  name: 'slerp',
  summary: 'slerp',
  baseModel: 'required',
  globalParams: [num('t', { required: true })],
  modelParams: [],
  taskVector: false,
  merge: noMerge,
};

const BASE = 'Qwen/Qwen2.5-Math-7B';
const R1 = 'deepseek-ai/DeepSeek-R1-Distill-Qwen-7B';

/** The RecipeError `fn` throws. */
function recipeErrorOf(fn: () => unknown): RecipeError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(RecipeError);
    expect((e as Error).name).toBe('RecipeError');
    return e as RecipeError;
  }
  throw new Error('expected a RecipeError');
}

describe('the paper recipes', () => {
  it('task arithmetic, alpha 0.7: weight 0.7 against the base', () => {
    const recipe = parseRecipe(
      `merge_method: task_arithmetic
base_model: ${BASE}
models:
  - model: ${R1}
    parameters:
      weight: 0.7
dtype: bfloat16
`,
      'ta.yml',
    );
    expect(recipe).toStrictEqual({
      mergeMethod: 'task_arithmetic',
      baseModel: BASE,
      models: [{ model: R1, parameters: { weight: 0.7 } }],
      parameters: {},
      dtype: 'BF16',
    });
    validateRecipe(recipe, TASK_ARITHMETIC);
    const { global, perModel } = resolveParams(
      recipe,
      TASK_ARITHMETIC,
      'model.layers.3.mlp.up_proj.weight',
      28,
    );
    expect(global).toEqual({ int8_mask: false, normalize: false, rescale: false, lambda: 1 });
    expect([...perModel.keys()]).toEqual([R1, BASE]);
    expect(perModel.get(R1)).toEqual({ weight: 0.7, density: 1 });
    // mergekit does not ask the base model for its required weight.
    expect(perModel.get(BASE)).toEqual({ density: 1 });
  });

  it('TIES, k 0.8 and alpha 1.0: density 0.2 and lambda 1.0 (the PAPER.md recipe)', () => {
    const recipe = parseRecipe(`merge_method: ties
base_model: Qwen/Qwen2.5-Math-7B
models:
  - model: deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
    parameters: {weight: 1.0, density: 0.2}
parameters: {lambda: 1.0}
dtype: bfloat16
`);
    expect(recipe).toStrictEqual({
      mergeMethod: 'ties',
      baseModel: BASE,
      models: [{ model: R1, parameters: { weight: 1, density: 0.2 } }],
      parameters: { lambda: 1 },
      dtype: 'BF16',
    });
    validateRecipe(recipe, TIES);
    const { global, perModel } = resolveParams(recipe, TIES, 'model.embed_tokens.weight', 28);
    expect(global).toEqual({ int8_mask: false, normalize: true, rescale: false, lambda: 1 });
    expect(perModel.get(R1)).toEqual({ weight: 1, density: 0.2 });
  });

  it('DARE-TIES, drop p 0.3: density 0.7', () => {
    const recipe = parseRecipe(`merge_method: dare_ties
base_model: ${BASE}
models:
  - model: ${BASE}
  - model: ${R1}
    parameters:
      weight: 1.0
      density: 0.7
parameters:
  normalize: true
  int8_mask: true
dtype: bfloat16
out_dtype: float16
`);
    expect(recipe.models).toEqual([
      { model: BASE, parameters: {} },
      { model: R1, parameters: { weight: 1, density: 0.7 } },
    ]);
    expect(recipe.outDtype).toBe('F16');
    validateRecipe(recipe, DARE_TIES);
    const { global, perModel } = resolveParams(recipe, DARE_TIES, 'lm_head.weight', 28);
    expect(global).toEqual({ int8_mask: true, normalize: true, rescale: false, lambda: 1 });
    // The base is listed, so it is not added again; its order is the recipe's.
    expect([...perModel.keys()]).toEqual([BASE, R1]);
    expect(perModel.get(R1)).toEqual({ weight: 1, density: 0.7 });
  });
});

describe('gradients and layer positions', () => {
  const NUM_LAYERS = 4;
  const names = [0, 1, 2, 3].map((i) => `model.layers.${i}.self_attn.q_proj.weight`);

  it('places layer i of n at t = i / (n - 1), and every other tensor at t = 0 (mergekit plan.py)', () => {
    expect(names.map((n) => tensorPosition(n, NUM_LAYERS))).toEqual([0, 1 / 3, 2 / 3, 1]);
    expect(tensorPosition('model.embed_tokens.weight', NUM_LAYERS)).toBe(0);
    expect(tensorPosition('model.norm.weight', NUM_LAYERS)).toBe(0);
    expect(tensorPosition('lm_head.weight', NUM_LAYERS)).toBe(0);
    expect(tensorPosition('model.layers.0.mlp.up_proj.weight', 1)).toBe(1);
    expect(() => tensorPosition('model.layers.4.mlp.up_proj.weight', NUM_LAYERS)).toThrow(
      /layer 4.*4 layers/,
    );
  });

  it('interpolates [0, 1] to the values mergekit gives, bit for bit', () => {
    const recipe = parseRecipe(`merge_method: slerp
base_model: a/base
models: [{model: a/base}, {model: a/other}]
parameters:
  t: [0, 1]
`);
    validateRecipe(recipe, SLERP);
    const t = (name: string) => resolveParams(recipe, SLERP, name, NUM_LAYERS).global.t;
    // Python: evaluate_setting("...", [0, 1], i / 3) for i in 0..3.
    expect(names.map(t)).toEqual([0, 0.3333333333333333, 0.6666666666666666, 1]);
    expect(t('model.embed_tokens.weight')).toBe(0);
    expect(t('model.norm.weight')).toBe(0);
    expect(t('lm_head.weight')).toBe(0);
  });

  it('interpolates between the evenly spaced points of longer gradients', () => {
    // Python: evaluate_setting(name, [1, 3, 2], i / 3) and [0.2, 0.9].
    const at = (setting: number[]) =>
      names.map((n) => resolveSetting(setting, n, tensorPosition(n, NUM_LAYERS)));
    expect(at([1, 3, 2])).toEqual([1, 2.3333333333333335, 2.6666666666666665, 2]);
    expect(at([0.2, 0.9])).toEqual([0.2, 0.43333333333333335, 0.6666666666666666, 0.9]);
    expect(resolveSetting([5], 'x', 0.7)).toBe(5);
  });
});

describe('filters', () => {
  const recipe = parseRecipe(`merge_method: slerp
base_model: a/base
models:
  - model: a/base
  - model: a/other
parameters:
  t:
    - filter: self_attn
      value: 0.5
    - filter: mlp
      value: 1
    - value: 0
`);
  const t = (name: string) => resolveParams(recipe, SLERP, name, 4).global.t;

  it('takes the first condition whose filter is in the tensor name', () => {
    expect(recipe.parameters.t).toEqual([
      { filter: 'self_attn', value: 0.5 },
      { filter: 'mlp', value: 1 },
      { value: 0 },
    ]);
    expect(t('model.layers.2.self_attn.k_proj.weight')).toBe(0.5);
    expect(t('model.layers.2.mlp.down_proj.weight')).toBe(1);
    expect(t('model.layers.2.input_layernorm.weight')).toBe(0);
    expect(t('model.embed_tokens.weight')).toBe(0);
  });

  it('matches every tensor with `*`, evaluates gradient values, and gives undefined when none matches', () => {
    const setting = [
      { filter: 'mlp', value: [0, 1] },
      { filter: '*', value: 7 },
    ];
    expect(resolveSetting(setting, 'model.layers.1.mlp.gate_proj.weight', 1 / 3)).toBe(0.3333333333333333);
    expect(resolveSetting(setting, 'lm_head.weight', 0)).toBe(7);
    expect(resolveSetting([{ filter: 'mlp', value: 1 }], 'lm_head.weight', 0)).toBeUndefined();
  });
});

describe('parameter resolution', () => {
  it('fills defaults, and falls back from a model to the top-level block as mergekit does', () => {
    const recipe = parseRecipe(`merge_method: ties
base_model: o/base
models:
  - model: o/a
    parameters:
      density: [{filter: mlp, value: 0.3}]
  - model: o/b
    parameters:
      weight: 0.25
parameters:
  weight: 0.5
  density: 0.9
`);
    validateRecipe(recipe, TIES);
    const attn = resolveParams(recipe, TIES, 'model.layers.0.self_attn.o_proj.weight', 2);
    expect(attn.global).toEqual({ int8_mask: false, normalize: true, rescale: false, lambda: 1 });
    // o/a's density condition does not match attention tensors: the top-level value applies.
    expect(attn.perModel.get('o/a')).toEqual({ weight: 0.5, density: 0.9 });
    expect(attn.perModel.get('o/b')).toEqual({ weight: 0.25, density: 0.9 });
    expect(attn.perModel.get('o/base')).toEqual({ weight: 0.5, density: 0.9 });
    const mlp = resolveParams(recipe, TIES, 'model.layers.0.mlp.up_proj.weight', 2);
    expect(mlp.perModel.get('o/a')).toEqual({ weight: 0.5, density: 0.3 });
  });

  it('reads numbers as booleans by their truth, as mergekit does, and keeps booleans as written', () => {
    const recipe = parseRecipe(`merge_method: ties
base_model: o/base
models: [{model: o/a, parameters: {weight: 1}}]
parameters: {normalize: 0.0, rescale: yes, int8_mask: [0, 1]}
`);
    validateRecipe(recipe, TIES);
    expect(recipe.parameters).toEqual({ normalize: 0, rescale: true, int8_mask: [0, 1] });
    const layer = (i: number) =>
      resolveParams(recipe, TIES, `model.layers.${i}.mlp.up_proj.weight`, 3).global;
    expect(layer(0)).toMatchObject({ normalize: false, rescale: true, int8_mask: false });
    expect(layer(1)).toMatchObject({ int8_mask: true });
  });

  it('names the parameter, model and tensor when a required value is missing for a tensor', () => {
    const recipe = parseRecipe(
      `merge_method: ties
base_model: o/base
models:
  - model: o/a
    parameters:
      weight: [{filter: mlp, value: 1}]
`,
      'cond.yml',
    );
    validateRecipe(recipe, TIES);
    expect(resolveParams(recipe, TIES, 'model.layers.0.mlp.up_proj.weight', 2).perModel.get('o/a')).toEqual({
      weight: 1,
      density: 1,
    });
    const err = recipeErrorOf(() => resolveParams(recipe, TIES, 'model.layers.0.self_attn.q_proj.weight', 2));
    expect(err.message).toBe(
      'cond.yml:4: models[0]: ties needs parameter weight of model o/a for tensor ' +
        'model.layers.0.self_attn.q_proj.weight (no condition of models[0].parameters.weight matches this tensor)',
    );
  });

  it('type-checks resolved values against the method', () => {
    const recipe: MergeRecipe = {
      mergeMethod: 'ties',
      baseModel: 'o/base',
      models: [{ model: 'o/a', parameters: { weight: [{ filter: 'mlp', value: true }, { value: 1 }] } }],
      parameters: {},
    };
    expect(resolveParams(recipe, TIES, 'model.norm.weight', 2).perModel.get('o/a')).toMatchObject({
      weight: 1,
    });
    const err = recipeErrorOf(() =>
      resolveParams(recipe, TIES, 'model.layers.1.mlp.up_proj.weight', 2, 'r.yml'),
    );
    expect(err.message).toBe(
      'r.yml: models[0].parameters.weight: parameter weight must be a number, not true, for tensor model.layers.1.mlp.up_proj.weight',
    );
  });
});

describe('accepted forms', () => {
  it('reads mergekit model reference mappings, torch dtype names, quoted numbers and boolean gradients', () => {
    const recipe = parseRecipe(`name: l2s
merge_method: ties
base_model: {model: {path: ./models/base, revision: null}, lora: null}
models:
  - model: {model: ./models/r1}
    parameters: {weight: "0.5", density: [true, false]}
dtype: torch.float32
tokenizer_source: base
chat_template: null
slices: null
`);
    expect(recipe).toStrictEqual({
      mergeMethod: 'ties',
      baseModel: './models/base',
      models: [{ model: './models/r1', parameters: { weight: 0.5, density: [1, 0] } }],
      parameters: {},
      dtype: 'F32',
      tokenizerSource: 'base',
    });
  });

  it('takes a model path with @ whole in the mapping form', () => {
    const recipe = parseRecipe(`merge_method: linear
models:
  - model: {model: {path: "./runs/a@2"}}
    parameters: {weight: 1}
`);
    expect(recipe.models[0].model).toBe('./runs/a@2');
  });

  it('reads hub revisions as mergekit writes them, org/name@revision or {path, revision}', () => {
    const recipe = parseRecipe(`merge_method: task_arithmetic
base_model: o/base@main
models:
  - model: {model: {path: o/r1, revision: 0123456789abcdef0123456789abcdef01234567}}
    parameters: {weight: 1}
  - model: {model: {path: o/r2, revision: null}}
    parameters: {weight: 1}
`);
    expect(recipe.baseModel).toBe('o/base@main');
    expect(recipe.models.map((m) => m.model)).toEqual([
      'o/r1@0123456789abcdef0123456789abcdef01234567',
      'o/r2',
    ]);
    expect(parseHubModelRef('o/base@v1.0')).toEqual({ repo: 'o/base', revision: 'v1.0' });
    expect(parseHubModelRef('o/base')).toEqual({ repo: 'o/base' });
    expect(parseHubModelRef('./runs/a@2')).toBeUndefined();
    expect(parseHubModelRef('o/base@')).toBeUndefined();
    // Written back as the same string, which mergekit splits at the @ again.
    expect(recipeToYaml(recipe)).toContain('base_model: o/base@main\n');
    expect(recipeToYaml(recipe)).toContain('- model: o/r1@0123456789abcdef0123456789abcdef01234567\n');
  });
});

describe('refusals', () => {
  const head = 'merge_method: ties\nbase_model: o/base\n';
  const oneModel = 'models:\n  - model: o/a\n    parameters: {weight: 1}\n';
  const cases: [string, string, string][] = [
    [
      'tokenizer_source: union',
      `${head}${oneModel}tokenizer_source: union\n`,
      'r.yml:6: tokenizer_source: tokenizer_source: union (a merged vocabulary) is not supported; use base',
    ],
    [
      'tokenizer_source: another model',
      `${head}${oneModel}tokenizer_source: o/a\n`,
      'r.yml:6: tokenizer_source: tokenizer_source: "o/a" needs embeddings remapped to that vocabulary, which l2s-merge does not do; use tokenizer_source: base (or leave it out)',
    ],
    [
      'tokenizer block',
      `${head}${oneModel}tokenizer:\n  source: base\n`,
      'r.yml:7: tokenizer: the tokenizer: block (vocabulary merging, added tokens) is not supported; use tokenizer_source: base',
    ],
    [
      'chat_template',
      `${head}${oneModel}chat_template: chatml\n`,
      "r.yml:6: chat_template: chat_template is not supported; remove it to keep the tokenizer source's template",
    ],
    [
      'model+lora',
      `${head}models:\n  - model: o/a+o/lora\n`,
      'r.yml:4: models[0].model: LoRA adapters are not supported ("o/a+o/lora" reads as model+adapter); merge the adapter into its model first and refer to the result',
    ],
    [
      'lora mapping',
      `${head}models:\n  - model: {model: {path: o/a}, lora: {path: o/l}}\n`,
      'r.yml:4: models[0].model.lora: LoRA adapters are not supported; merge the adapter into its model first',
    ],
    [
      'override_architecture',
      `${head}models:\n  - model: {model: o/a, override_architecture: X}\n`,
      "r.yml:4: models[0].model.override_architecture: override_architecture is not supported; the architecture comes from the model's config.json",
    ],
    [
      'two @',
      `merge_method: ties\nbase_model: o/base@main@v2\n${oneModel}`,
      'r.yml:2: base_model: "o/base@main@v2" has more than one @; write path@revision with one @',
    ],
    [
      'nothing after @',
      `merge_method: ties\nbase_model: o/base@\n${oneModel}`,
      'r.yml:2: base_model: "o/base@" names no revision after the @',
    ],
    [
      'a revision with a path holding @',
      `merge_method: ties\nbase_model: {model: {path: ./a@2, revision: v1}}\n${oneModel}`,
      'r.yml:2: base_model.model.revision: a revision cannot be given for a path or revision that contains @ ("./a@2", "v1")',
    ],
    [
      'slices',
      `${head}slices:\n  - sources: []\n`,
      'r.yml:4: slices: slices (layer ranges, per-module merges) are not supported; list whole models under models:',
    ],
    [
      'modules',
      `${head}modules: {text: {}}\n`,
      'r.yml:3: modules: modules (layer ranges, per-module merges) are not supported; list whole models under models:',
    ],
    [
      'unknown top-level key',
      `${head}${oneModel}seed: 3\n`,
      'r.yml:6: seed: unknown key seed; accepted: merge_method, base_model, models, parameters, dtype, out_dtype, tokenizer_source, name, aim',
    ],
    [
      'layer_range in a model entry',
      `${head}models:\n  - model: o/a\n    layer_range: [0, 4]\n`,
      'r.yml:5: models[0].layer_range: unknown key in a model entry (layer ranges belong to slices, which are not supported); accepted: model, parameters',
    ],
    [
      'a bare model string',
      `${head}models:\n  - o/a\n`,
      'r.yml:4: models[0]: each entry must be a mapping like - model: org/name',
    ],
    [
      'a lone condition',
      `${head}${oneModel}parameters:\n  lambda: {filter: mlp, value: 1}\n`,
      'r.yml:7: parameters.lambda: a {filter, value} condition must be written as a list item (- filter: ... value: ...)',
    ],
    [
      'an unknown condition key',
      `${head}${oneModel}parameters:\n  lambda: [{filters: mlp, value: 1}]\n`,
      'r.yml:7: parameters.lambda[0].filters: unknown key in a condition; a condition has only filter and value',
    ],
    [
      'a nested condition',
      `${head}${oneModel}parameters:\n  lambda: [{value: [{value: 1}]}]\n`,
      'r.yml:7: parameters.lambda[0].value: a condition value must be a number or a list of numbers; conditions do not nest',
    ],
    [
      'a filter that is not a string',
      `${head}${oneModel}parameters:\n  lambda: [{filter: 3, value: 1}]\n`,
      'r.yml:7: parameters.lambda[0].filter: a filter must be a string (part of a tensor name), not 3',
    ],
    [
      'a condition without value',
      `${head}${oneModel}parameters:\n  lambda: [{filter: mlp}]\n`,
      'r.yml:7: parameters.lambda[0]: a condition needs a value',
    ],
    [
      'an empty list',
      `${head}${oneModel}parameters:\n  lambda: []\n`,
      'r.yml:7: parameters.lambda: an empty list has no value; write a number, a list of numbers (a gradient over the layers) or a list of {filter, value} conditions',
    ],
    [
      'a mixed list',
      `${head}${oneModel}parameters:\n  lambda: [1, {value: 2}]\n`,
      'r.yml:7: parameters.lambda: a list must hold only numbers (a gradient) or only {filter, value} conditions',
    ],
    [
      'a string value',
      `${head}${oneModel}parameters:\n  lambda: high\n`,
      'r.yml:7: parameters.lambda: must be a number, a list of numbers (a gradient over the layers) or a list of {filter, value} conditions; got the string "high"',
    ],
    [
      'a missing value',
      `${head}${oneModel}parameters:\n  lambda:\n`,
      'r.yml:7: parameters.lambda: parameter lambda has no value',
    ],
    [
      'a non-finite value',
      `${head}${oneModel}parameters:\n  lambda: .nan\n`,
      'r.yml:7: parameters.lambda: must be a finite number, not NaN',
    ],
    [
      'an integer dtype',
      `${head}${oneModel}dtype: int64\n`,
      'r.yml:6: dtype: unsupported dtype "int64"; use bfloat16, float16 or float32',
    ],
    [
      'a model listed twice',
      `${head}models:\n  - model: o/a\n  - model: o/a\n`,
      'r.yml:5: models[1].model: model o/a is listed more than once',
    ],
    [
      'no merge_method',
      `base_model: o/base\n${oneModel}`,
      'r.yml:1: merge_method is missing (e.g. merge_method: ties)',
    ],
    ['no models', head, 'r.yml:1: models is missing: list the models to merge as - model: ...'],
    [
      'an empty models list',
      `${head}models: []\n`,
      'r.yml:3: models: models must be a list with at least one `- model: ...` entry',
    ],
    ['an empty document', '# nothing\n', 'r.yml: is empty; a recipe needs merge_method and models'],
    ['a list document', '- a\n', 'r.yml:1: must be a mapping of recipe keys, not a list'],
    [
      'a duplicate key',
      `${head}merge_method: linear\n${oneModel}`,
      'r.yml:3: a key appears twice in the same mapping',
    ],
    [
      'two documents',
      `${head}${oneModel}---\n${head}`,
      'r.yml:6: holds more than one YAML document; a recipe is a single document',
    ],
  ];

  it.each(cases)('refuses %s', (_, text, message) => {
    expect(recipeErrorOf(() => parseRecipe(text, 'r.yml')).message).toBe(message);
  });

  it('reports YAML syntax errors with their line', () => {
    const err = recipeErrorOf(() => parseRecipe('merge_method: ties\nmodels:\n  - model: [o/a\n', 'bad.yml'));
    expect(err.source).toBe('bad.yml');
    expect(err.line).toBeGreaterThanOrEqual(3);
    expect(err.message).toMatch(/^bad\.yml:\d+: invalid YAML: /);
  });

  it('carries the source, path and line as fields', () => {
    const err = recipeErrorOf(() =>
      parseRecipe(`${head}models:\n  - model: o/a\n    parameters:\n      weight: x\n`, 'f.yml'),
    );
    expect([err.source, err.path, err.line]).toEqual(['f.yml', 'models[0].parameters.weight', 6]);
  });
});

describe('validateRecipe', () => {
  const check = (text: string, method: MergeMethod) =>
    recipeErrorOf(() => validateRecipe(parseRecipe(text, 'v.yml'), method)).message;

  it('refuses parameters the method does not take, or in the wrong block', () => {
    expect(
      check(
        'merge_method: ties\nbase_model: o/b\nmodels: [{model: o/a, parameters: {weight: 1, densty: 0.2}}]\n',
        TIES,
      ),
    ).toBe(
      'v.yml:3: models[0].parameters.densty: unknown parameter densty; ties takes int8_mask, normalize, rescale, lambda under parameters:, and weight, density per model',
    );
    expect(
      check(
        'merge_method: ties\nbase_model: o/b\nmodels: [{model: o/a, parameters: {weight: 1, lambda: 2}}]\n',
        TIES,
      ),
    ).toBe(
      'v.yml:3: models[0].parameters.lambda: lambda is a global parameter of ties; move it to the top-level parameters:',
    );
    expect(
      check(
        'merge_method: ties\nbase_model: o/b\nmodels: [{model: o/a}]\nparameters: {weight: 1, gamma: 0.1}\n',
        TIES,
      ),
    ).toMatch(/^v\.yml:4: parameters\.gamma: unknown parameter gamma; /);
  });

  it('refuses booleans where numbers are expected', () => {
    expect(
      check(
        'merge_method: ties\nbase_model: o/b\nmodels:\n  - model: o/a\n    parameters:\n      weight: [{filter: mlp, value: true}, {value: 1}]\n',
        TIES,
      ),
    ).toBe('v.yml:6: models[0].parameters.weight[0].value: weight must be a number, not true');
  });

  it('requires required parameters of every model but the base, from its block or the top-level one', () => {
    expect(
      check('merge_method: ties\nbase_model: o/b\nmodels:\n  - model: o/b\n  - model: o/a\n', TIES),
    ).toBe(
      'v.yml:5: models[1]: ties needs parameter weight (weight) for model o/a, in its parameters: or the top-level parameters:',
    );
    validateRecipe(
      parseRecipe(
        'merge_method: ties\nbase_model: o/b\nmodels: [{model: o/b}, {model: o/a}]\nparameters: {weight: 1}\n',
      ),
      TIES,
    );
    expect(check('merge_method: slerp\nbase_model: o/b\nmodels: [{model: o/b}, {model: o/a}]\n', SLERP)).toBe(
      'v.yml:1: slerp needs parameter t (t) under parameters:',
    );
  });

  it('checks base_model against the method', () => {
    expect(check('merge_method: ties\nmodels: [{model: o/a, parameters: {weight: 1}}]\n', TIES)).toBe(
      'v.yml:1: ties needs base_model: the model the task vectors are taken against',
    );
    expect(
      check(
        'merge_method: linear\nbase_model: o/b\nmodels: [{model: o/a, parameters: {weight: 1}}]\n',
        LINEAR,
      ),
    ).toBe('v.yml:2: base_model: linear does not use base_model; list that model under models: instead');
    expect(check('merge_method: linear\nmodels: [{model: o/a, parameters: {weight: 1}}]\n', TIES)).toBe(
      'v.yml:1: merge_method: is linear, but the recipe is being checked against ties',
    );
  });

  it('requires exactly two models, the base among them, for slerp', () => {
    expect(
      check(
        'merge_method: slerp\nbase_model: o/b\nmodels: [{model: o/a}, {model: o/c}]\nparameters: {t: 0.5}\n',
        SLERP,
      ),
    ).toBe(
      'v.yml:3: models: slerp interpolates exactly two models, one of them base_model; this recipe has 3',
    );
    // The base is added to the inputs when not listed: two models in all.
    validateRecipe(
      parseRecipe('merge_method: slerp\nbase_model: o/b\nmodels: [{model: o/a}]\nparameters: {t: 0.5}\n'),
      SLERP,
    );
  });

  it('names the source given for a recipe built in code', () => {
    const recipe: MergeRecipe = { mergeMethod: 'ties', models: [], parameters: {} };
    expect(recipeErrorOf(() => validateRecipe(recipe, TIES, 'ui')).message).toBe(
      'ui: ties needs base_model: the model the task vectors are taken against',
    );
  });
});

describe('recipeToYaml', () => {
  it('writes mergekit YAML in mergekit key order, gradients in flow style', () => {
    const recipe: MergeRecipe = {
      mergeMethod: 'ties',
      baseModel: BASE,
      models: [
        { model: R1, parameters: { weight: 1, density: [0.2, 0.5] } },
        { model: './local@v2', parameters: {} },
      ],
      parameters: { lambda: 1, normalize: false, t: [{ filter: 'mlp', value: 0.5 }, { value: [0, 1] }] },
      dtype: 'BF16',
      outDtype: 'F16',
      tokenizerSource: 'base',
    };
    const text = recipeToYaml(recipe);
    expect(text).toBe(`models:
  - model: deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
    parameters:
      weight: 1
      density: [0.2, 0.5]
  - model:
      model:
        path: ./local@v2
merge_method: ties
base_model: Qwen/Qwen2.5-Math-7B
dtype: bfloat16
tokenizer_source: base
out_dtype: float16
parameters:
  lambda: 1
  normalize: false
  t:
    - filter: mlp
      value: 0.5
    - value: [0, 1]
`);
    expect(parseRecipe(text)).toStrictEqual(recipe);
  });

  it('round-trips parsed recipes, quoting names YAML 1.1 reads as booleans', () => {
    const texts = [
      `merge_method: dare_ties\nbase_model: ${BASE}\nmodels:\n  - model: ${R1}\n    parameters: {weight: 1.0, density: 0.7}\nparameters: {lambda: 1.0, normalize: yes}\ndtype: bf16\n`,
      'merge_method: linear\nmodels:\n  - model: "yes"\n    parameters: {weight: [0.1, 0.2, 0.3]}\n  - model: {model: {path: "a+b"}}\n    parameters: {weight: 0.5}\n',
      'merge_method: slerp\nbase_model: o/b\nmodels: [{model: o/a}]\nparameters: {t: [{filter: self_attn, value: [0, 0.5, 1]}, {filter: "*", value: 0.5}]}\ntokenizer_source: base\n',
    ];
    for (const text of texts) {
      const recipe = parseRecipe(text);
      expect(parseRecipe(recipeToYaml(recipe))).toStrictEqual(recipe);
    }
    expect(recipeToYaml(parseRecipe(texts[1]))).toContain('- model: "yes"');
  });
});

describe('model references', () => {
  it('tells hub repo ids from local paths', () => {
    for (const id of [BASE, R1, 'a/b', 'org_1/model.v2-gguf', 'x/y_']) expect(isHubRepoId(id), id).toBe(true);
    for (const path of [
      './a/b',
      '/a/b',
      'a/b/c',
      'model',
      '../x',
      'a/',
      '/b',
      'a/-b',
      'a/b.',
      'a--b/c',
      'a/b..c',
      'a/b.git',
      'a b/c',
      `a/${'x'.repeat(97)}`,
      'C:\\m',
    ]) {
      expect(isHubRepoId(path), path).toBe(false);
    }
    expect(isHubRepoId(`a/${'x'.repeat(96)}`)).toBe(true);
  });

  it('lists models base first and de-duplicated, and merge inputs in mergekit order', () => {
    const recipe = parseRecipe(`merge_method: ties
base_model: o/base
models:
  - model: o/a
  - model: o/base
  - model: o/c
`);
    expect(referencedModels(recipe)).toEqual(['o/base', 'o/a', 'o/c']);
    expect(mergeInputModels(recipe)).toEqual(['o/a', 'o/base', 'o/c']);
    const unlisted = parseRecipe('merge_method: ties\nbase_model: o/base\nmodels: [{model: o/a}]\n');
    expect(referencedModels(unlisted)).toEqual(['o/base', 'o/a']);
    expect(mergeInputModels(unlisted)).toEqual(['o/a', 'o/base']);
  });
});
