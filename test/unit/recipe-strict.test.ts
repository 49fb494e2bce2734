/** Recipes that are hostile or ambiguous: reserved keys, unknown tags, one model spelt twice, size. */
import { describe, expect, it } from 'vitest';
import { MAX_LIST_ENTRIES, normalizeModelRef, parseRecipe, RecipeError } from '../../src/recipe';

const HEAD = 'merge_method: task_arithmetic\nbase_model: base\n';

function messageOf(text: string): string {
  try {
    parseRecipe(text, 'r.yml');
  } catch (e) {
    expect(e).toBeInstanceOf(RecipeError);
    return (e as Error).message;
  }
  throw new Error('the recipe was accepted');
}

describe('reserved keys', () => {
  it('refuses __proto__, constructor and prototype anywhere, naming the line', () => {
    expect(messageOf(`${HEAD}models:\n  - model: a\n    parameters: {weight: 1, __proto__: 0.5}\n`)).toBe(
      'r.yml:5: models[0].parameters.__proto__: the key __proto__ is not allowed in a recipe',
    );
    expect(messageOf(`${HEAD}models:\n  - model: a\n    parameters:\n      constructor: 1\n`)).toBe(
      'r.yml:6: models[0].parameters.constructor: the key constructor is not allowed in a recipe',
    );
    expect(messageOf(`${HEAD}__proto__: {x: 1}\nmodels:\n  - model: a\n`)).toBe(
      'r.yml:3: __proto__: the key __proto__ is not allowed in a recipe',
    );
    expect(
      messageOf(`${HEAD}models:\n  - model: a\nparameters: {lambda: [{filter: x, prototype: 1}]}\n`),
    ).toMatch(/parameters\.lambda\[0\]\.prototype: the key prototype is not allowed/);
  });
});

describe('YAML tags', () => {
  it('refuses tags outside the core types and accepts the core ones', () => {
    expect(messageOf(`${HEAD}models:\n  - model: !!python/object:os.system a\n`)).toBe(
      'r.yml:4: models[0].model: the YAML tag !!python/object:os.system is not allowed in a recipe',
    );
    expect(messageOf(`${HEAD}models:\n  - model: !custom a\n`)).toContain(
      'the YAML tag !custom is not allowed',
    );
    expect(
      messageOf(`${HEAD}models:\n  - model: a\n    parameters: {weight: !!binary aGVsbG8=}\n`),
    ).toContain('the YAML tag !!binary is not allowed');
    expect(messageOf(`${HEAD}models: !!set {a: null}\n`)).toContain('the YAML tag !!set is not allowed');
    const ok = parseRecipe(`${HEAD}models: !!seq\n  - model: !!str a\n    parameters: {weight: !!float 1}\n`);
    expect(ok.models).toEqual([{ model: 'a', parameters: { weight: 1 } }]);
  });
});

describe('one model written two ways', () => {
  it('compares references after path normalisation', () => {
    for (const [a, b] of [
      ['x', 'x/'],
      ['./x', 'x'],
      ['models/x', 'models/../models/x/'],
      ['/abs/x', '/abs//x'],
    ]) {
      expect(messageOf(`${HEAD}models:\n  - model: ${a}\n  - model: ${b}\n`)).toBe(
        `r.yml:5: models[1].model: model ${b} is listed more than once (models[0] names it as ${a})`,
      );
    }
    expect(messageOf(`${HEAD}models:\n  - model: x\n  - model: x\n`)).toBe(
      'r.yml:5: models[1].model: model x is listed more than once',
    );
    expect(
      messageOf('merge_method: ties\nbase_model: ./base/\nmodels:\n  - model: base\n  - model: r\n'),
    ).toBe(
      'r.yml:2: base_model: ./base/ names the same model as models[0] (base); write it the same way in both places',
    );
    // Different folders stay different; hub ids are untouched.
    expect(
      parseRecipe(`${HEAD}models:\n  - model: x\n  - model: ../x\n  - model: org/x\n`).models,
    ).toHaveLength(3);
  });

  it('normalises paths without touching hub ids', () => {
    expect(normalizeModelRef('Qwen/Qwen2.5-Math-7B')).toBe('Qwen/Qwen2.5-Math-7B');
    expect(normalizeModelRef('./a/./b//')).toBe('a/b');
    expect(normalizeModelRef('../a/../../b')).toBe('../../b');
    expect(normalizeModelRef('/a/../../b')).toBe('/b');
    expect(normalizeModelRef('./')).toBe('.');
  });
});

describe('size limits', () => {
  it('refuses over 10000 list entries, in flow or block lists, before parsing them', () => {
    const flow = `${HEAD}models:\n  - model: a\n    parameters: {weight: [${Array(MAX_LIST_ENTRIES + 1)
      .fill('0.5')
      .join(', ')}]}\n`;
    expect(messageOf(flow)).toBe('r.yml: has more than 10000 list entries, over the limit for a recipe');
    const block = `${HEAD}models:\n  - model: a\n    parameters:\n      weight:\n${'        - 0.5\n'.repeat(MAX_LIST_ENTRIES + 1)}`;
    expect(messageOf(block)).toBe('r.yml: has more than 10000 list entries, over the limit for a recipe');
    // Commas inside quoted scalars are not entries.
    const quoted = `${HEAD}models:\n  - model: "${','.repeat(MAX_LIST_ENTRIES * 2)}"\n`;
    expect(parseRecipe(quoted).models).toHaveLength(1);
  });

  it('refuses deep nesting at once (the YAML parser would run out of memory)', () => {
    const deep = `${HEAD}models:\n  - model: a\n    parameters: {weight: ${'['.repeat(200_000)}${']'.repeat(200_000)}}\n`;
    expect(messageOf(deep)).toBe('r.yml: nests [ and { deeper than 32 levels');
    // Block nesting, which the text scan does not see, is caught on the parsed document.
    let nested = 'parameters:\n';
    for (let i = 1; i <= 40; i++) nested += `${'  '.repeat(i)}k${i}:\n`;
    nested += `${'  '.repeat(41)}v: 1\n`;
    expect(messageOf(`${HEAD}models:\n  - model: a\n${nested}`)).toMatch(
      /^r\.yml:\d+: parameters\.k1\.k2\..*: nests deeper than 32 levels$/,
    );
  });

  it('refuses a text over 1,000,000 characters', () => {
    expect(messageOf(`${HEAD}models:\n  - model: a\n# ${'x'.repeat(1_000_000)}\n`)).toMatch(
      /^r\.yml: is 1000\d+ characters, over the 1000000-character limit for a recipe$/,
    );
  });
});
