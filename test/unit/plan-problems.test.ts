/**
 * The header-only validation before every merge: every missing tensor, shape mismatch and dtype
 * conflict of every model is reported at once, naming model, file and tensor, before any tensor
 * data is read.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ModelFiles } from '../../src/engine/io';
import { prepareMerge } from '../../src/engine/merge';
import type { ByteSource } from '../../src/formats/byte-source';
import { bytesByteSource } from '../../src/formats/byte-source';
import { MAX_LISTED_PROBLEMS, PlanError } from '../../src/plan/plan';
import { parseRecipe } from '../../src/recipe';
import { dataStart, editModel, type ModelEdits } from '../fixtures/edit-model';

const FIXTURES = join(import.meta.dirname, '../fixtures/qwen2-tiny-l2s');

async function folderFiles(name: string): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for (const f of await readdir(join(FIXTURES, name))) {
    if (f !== 'reference.json') files.set(f, new Uint8Array(await readFile(join(FIXTURES, name, f))));
  }
  return files;
}

/** Models from memory that record every read past a safetensors file's header. */
function resolver(models: Record<string, Map<string, Uint8Array>>, dataReads: string[]) {
  return async (ref: string): Promise<ModelFiles> => {
    const files = models[ref];
    if (!files) throw new Error(`no model ${ref}`);
    return {
      name: ref,
      files: () => [...files.keys()],
      async open(file): Promise<ByteSource> {
        const bytes = files.get(file)!;
        const inner = bytesByteSource(bytes, `${ref}/${file}`);
        const headerEnd = file.endsWith('.safetensors') ? dataStart(bytes) : Number.POSITIVE_INFINITY;
        return {
          ...inner,
          async read(offset, length) {
            if (offset + length > headerEnd) dataReads.push(`${ref}/${file}@${offset}`);
            return inner.read(offset, length);
          },
        };
      },
    };
  };
}

const RECIPE = parseRecipe(
  `merge_method: ties
base_model: system1
models:
  - model: broken-a
    parameters: { weight: 1.0, density: 0.5 }
  - model: broken-b
    parameters: { weight: 1.0, density: 0.5 }
dtype: bfloat16
`,
  'r.yml',
);

async function planError(edits: {
  a: ModelEdits;
  b: ModelEdits;
}): Promise<{ error: PlanError; dataReads: string[] }> {
  const system2 = await folderFiles('system2');
  const models = {
    system1: await folderFiles('system1'),
    'broken-a': await editModel(system2, edits.a),
    'broken-b': await editModel(system2, edits.b),
  };
  const dataReads: string[] = [];
  const error = await prepareMerge(RECIPE, resolver(models, dataReads)).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(PlanError);
  return { error: error as PlanError, dataReads };
}

describe('header-only validation', () => {
  it('lists every missing tensor and shape mismatch of every model, reading headers only', async () => {
    const { error, dataReads } = await planError({
      a: {
        drop: ['model.layers.1.mlp.up_proj.weight'],
        reshape: { 'model.layers.2.self_attn.o_proj.weight': [128, 64] },
      },
      b: { drop: ['model.layers.3.self_attn.q_proj.bias', 'model.norm.weight'] },
    });
    expect(error.problems).toEqual([
      'broken-a: tensor model.layers.1.mlp.up_proj.weight is missing from model-00001-of-00002.safetensors and model-00002-of-00002.safetensors',
      'tensor model.layers.2.self_attn.o_proj.weight: broken-a/model-00001-of-00002.safetensors has shape [128, 64] but system1 has [128, 128]',
      'broken-b: tensor model.layers.3.self_attn.q_proj.bias is missing from model-00001-of-00002.safetensors and model-00002-of-00002.safetensors',
      'broken-b: tensor model.norm.weight is missing from model-00001-of-00002.safetensors and model-00002-of-00002.safetensors',
    ]);
    expect(error.message).toBe(
      "4 problems in the models' safetensors headers (found before any tensor data was read):\n" +
        error.problems.map((p) => `- ${p}`).join('\n'),
    );
    expect(dataReads).toEqual([]);
  });

  it('keeps a single problem as its own one-line message', async () => {
    const { error } = await planError({ a: { drop: ['model.layers.0.input_layernorm.weight'] }, b: {} });
    expect(error.problems).toHaveLength(1);
    expect(error.message).toBe(error.problems[0]);
  });

  it(`caps the list at ${MAX_LISTED_PROBLEMS} and counts the rest`, async () => {
    const system2 = await folderFiles('system2');
    const everyLayerNorm = [0, 1, 2, 3].flatMap((l) => [
      `model.layers.${l}.input_layernorm.weight`,
      `model.layers.${l}.post_attention_layernorm.weight`,
      `model.layers.${l}.self_attn.q_proj.bias`,
      `model.layers.${l}.self_attn.k_proj.bias`,
      `model.layers.${l}.self_attn.v_proj.bias`,
      `model.layers.${l}.self_attn.q_proj.weight`,
    ]);
    const reshape = Object.fromEntries(everyLayerNorm.map((n) => [n, [3]]));
    expect(system2.size).toBeGreaterThan(0);
    const { error } = await planError({ a: { reshape }, b: { reshape } });
    expect(error.problems).toHaveLength(48);
    const lines = error.message.split('\n');
    expect(lines[0]).toBe(
      "48 problems in the models' safetensors headers (found before any tensor data was read):",
    );
    expect(lines).toHaveLength(1 + MAX_LISTED_PROBLEMS + 1);
    expect(lines.at(-1)).toBe(`- and ${48 - MAX_LISTED_PROBLEMS} more`);
  });
});
