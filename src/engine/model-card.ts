/** The README.md written beside the merged weights: what was merged, how, and how to load it. */
import type { MergeMethod } from '../methods/types';
import type { MergePlan } from '../plan/plan';
import { recipeToYaml } from '../recipe';
import type { MergeRecipe } from '../recipe/recipe';

export function modelCard(recipe: MergeRecipe, method: MergeMethod, plan: MergePlan): string {
  const base = plan.baseIndex >= 0 ? plan.models[plan.baseIndex].reference : undefined;
  const others = plan.models.filter((_, i) => i !== plan.baseIndex).map((m) => m.reference);
  const lines = [
    '---',
    'library_name: transformers',
    'tags:',
    '- merge',
    '- l2s-merge',
    '---',
    '',
    '# Merged model',
    '',
    `Merged with l2s-merge using the \`${method.name}\` method: ${method.summary}`,
    '',
  ];
  if (base) lines.push(`Base model: \`${base}\``, '');
  lines.push('Models merged:', '', ...others.map((m) => `- \`${m}\``), '');
  lines.push(
    `${plan.tensors.length} tensors in ${plan.layout.shards.length} safetensors file(s).` +
      (plan.untiesHead ? ' The output has its own `lm_head.weight` (`tie_word_embeddings: false`).' : ''),
    '',
    '## Recipe',
    '',
    'The mergekit-compatible recipe (also in `mergekit_config.yml`):',
    '',
    '```yaml',
    recipeToYaml(recipe).trimEnd(),
    '```',
    '',
    '## Use',
    '',
    '```python',
    'from transformers import AutoModelForCausalLM, AutoTokenizer',
    'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder", torch_dtype="auto")',
    'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
    '```',
    '',
  );
  return lines.join('\n');
}
