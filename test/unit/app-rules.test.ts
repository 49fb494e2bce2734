/** The page's rules that need no browser: recipe checks and software-adapter detection. */
import { describe, expect, it } from 'vitest';
import { softwareAdapterReason } from '../../src/gpu/select-backend';
import { checkRecipe } from '../../src/ui/recipe-check';

const LIBRARY = ['base', 'other'];
const TIES = (density: string) =>
  `merge_method: ties\nbase_model: base\nmodels:\n  - model: other\n    parameters: {weight: 1.0, density: ${density}}\n`;

describe('checkRecipe', () => {
  it('passes a recipe the engine would run', () => {
    const check = checkRecipe(TIES('0.2'), LIBRARY);
    expect(check.error).toBeUndefined();
    expect(check.parseError).toBeUndefined();
    expect(check.recipe?.mergeMethod).toBe('ties');
  });
  it('flags densities and t outside [0, 1], naming the place and line', () => {
    expect(checkRecipe(TIES('1.7'), LIBRARY).error).toBe(
      'recipe:5: models[0].parameters.density: density 1.7 is outside [0, 1] (the share of the task vector kept)',
    );
    expect(checkRecipe(TIES('-0.1'), LIBRARY).error).toContain('density -0.1 is outside [0, 1]');
    expect(checkRecipe(TIES('[0.1, 1.5]'), LIBRARY).error).toContain('density[1]: density 1.5');
    expect(checkRecipe(TIES('[{filter: mlp, value: 2}, {value: 0.5}]'), LIBRARY).error).toContain(
      'density[0].value: density 2 is outside',
    );
    const slerp = 'merge_method: slerp\nbase_model: base\nmodels:\n  - model: other\nparameters: {t: 1.01}\n';
    expect(checkRecipe(slerp, LIBRARY).error).toContain('parameters.t: t 1.01 is outside [0, 1]');
    expect(checkRecipe(slerp.replace('1.01', '1'), LIBRARY).error).toBeUndefined();
  });
  it('reports YAML errors apart, and missing models with the hub ids among them', () => {
    expect(checkRecipe('merge_method: ties\nmodels: [', LIBRARY).parseError).toMatch(/^recipe/);
    const check = checkRecipe(TIES('0.2').replace('model: other', 'model: org/model-x'), LIBRARY);
    expect(check.error).toBe('not in the library yet: org/model-x');
    expect(check.missingHubIds).toEqual(['org/model-x']);
    // mergekit's revision syntax names a hub repo too; a path with an `@` in it does not.
    const pinned = checkRecipe(
      TIES('0.2')
        .replace('model: other', 'model: org/model-x@v1.0')
        .replace('base_model: base', 'base_model: ./a@b/c'),
      LIBRARY,
    );
    expect(pinned.missingHubIds).toEqual(['org/model-x@v1.0']);
  });
  it('prefers the validator: a missing required parameter comes before a missing model', () => {
    const check = checkRecipe(
      'merge_method: slerp\nbase_model: base\nmodels:\n  - model: nowhere\n',
      LIBRARY,
    );
    expect(check.error).toContain('needs parameter t');
  });
});

function adapter(info: Partial<GPUAdapterInfo> & { isFallbackAdapter?: boolean }): GPUAdapter {
  return { info } as unknown as GPUAdapter;
}

describe('softwareAdapterReason', () => {
  it('names SwiftShader, llvmpipe and WARP, and any adapter flagged as a fallback', () => {
    expect(softwareAdapterReason(adapter({ vendor: 'google', architecture: 'swiftshader' }))).toContain(
      'software renderer (swiftshader)',
    );
    expect(
      softwareAdapterReason(adapter({ vendor: 'mesa', device: 'llvmpipe (LLVM 15.0.6, 256 bits)' })),
    ).toContain('llvmpipe');
    expect(
      softwareAdapterReason(adapter({ vendor: 'microsoft', description: 'Microsoft Basic Render Driver' })),
    ).toBeDefined();
    expect(
      softwareAdapterReason(adapter({ vendor: 'x', architecture: 'y', isFallbackAdapter: true })),
    ).toContain('x y');
  });
  it('leaves hardware GPUs alone', () => {
    expect(softwareAdapterReason(adapter({ vendor: 'nvidia', architecture: 'hopper' }))).toBeUndefined();
    expect(softwareAdapterReason(adapter({ vendor: 'apple', architecture: 'metal-3' }))).toBeUndefined();
  });
});
