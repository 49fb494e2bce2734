/** Writing a recipe back as mergekit YAML (the output's mergekit_config.yml and the app's YAML view). */

import { Document, isScalar, visit } from 'yaml';
import { torchDTypeName } from '../formats/dtype';
import { aimBlockValue } from './aim';
import { parseHubModelRef } from './model-ref';
import type { MergeRecipe, ParameterBlock, ParameterSetting } from './recipe';

/**
 * A model reference as mergekit reads it back: a plain string (`org/name@revision` included), or
 * `{model: {path: ...}}` when the string form would be split into model+LoRA or path@revision.
 */
function modelRefValue(ref: string): unknown {
  // A hub id with its revision reads back as the same `org/name@revision`.
  if (!ref.includes('+') && parseHubModelRef(ref)?.revision !== undefined) return ref;
  return ref.includes('+') || ref.includes('@') ? { model: { path: ref } } : ref;
}

function settingValue(setting: ParameterSetting): unknown {
  if (typeof setting === 'number' || typeof setting === 'boolean') return setting;
  return setting.map((entry) => {
    if (typeof entry === 'number') return entry;
    return entry.filter === undefined ? { value: entry.value } : { filter: entry.filter, value: entry.value };
  });
}

function blockValue(block: ParameterBlock): Record<string, unknown> {
  return Object.fromEntries(Object.entries(block).map(([name, setting]) => [name, settingValue(setting)]));
}

/**
 * mergekit YAML for `recipe`, which parseRecipe reads back to an equal recipe. Keys come in the
 * order of mergekit's MergeConfiguration fields; gradients are written in flow style as mergekit's
 * dumper does.
 */
export function recipeToYaml(recipe: MergeRecipe): string {
  const out: Record<string, unknown> = {
    models: recipe.models.map((entry) =>
      Object.keys(entry.parameters).length === 0
        ? { model: modelRefValue(entry.model) }
        : { model: modelRefValue(entry.model), parameters: blockValue(entry.parameters) },
    ),
    merge_method: recipe.mergeMethod,
  };
  if (recipe.baseModel !== undefined) out.base_model = modelRefValue(recipe.baseModel);
  if (recipe.dtype !== undefined) out.dtype = torchDTypeName(recipe.dtype);
  if (recipe.tokenizerSource !== undefined) {
    out.tokenizer_source = recipe.tokenizerSource === 'base' ? 'base' : modelRefValue(recipe.tokenizerSource);
  }
  if (recipe.outDtype !== undefined) out.out_dtype = torchDTypeName(recipe.outDtype);
  if (Object.keys(recipe.parameters).length > 0) out.parameters = blockValue(recipe.parameters);
  if (recipe.aim !== undefined) out.aim = aimBlockValue(recipe.aim);

  // YAML 1.1 quotes strings PyYAML would read as booleans (`yes`, `on`).
  const doc = new Document(out, { version: '1.1' });
  visit(doc, {
    Seq(_, seq) {
      if (seq.items.every((item) => isScalar(item) && typeof item.value === 'number')) seq.flow = true;
    },
  });
  return doc.toString({ lineWidth: 0, flowCollectionPadding: false });
}
