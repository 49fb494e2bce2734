/**
 * The runtime on a model merged by the project: the fixture pair merged with TIES through the engine.
 * There is no transformers reference for the merge, so: the KV-cached decode equals a full recompute
 * of the sequence, the merge and its generation are deterministic, and the runner reads the merged
 * weights (its logits differ from both parents').
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpuBackend, runMerge } from '../../src/engine/merge';
import { generate } from '../../src/model/generate';
import { type CpuReferenceRunner, createCpuRunner } from '../../src/model/reference';
import { GREEDY } from '../../src/model/sampling';
import { ModelTokenizer } from '../../src/model/tokenizer';
import { openModelWeights } from '../../src/model/weights';
import { folderResolver, modelFolder } from '../../src/node/model-folder';
import { outputDir } from '../../src/node/output-dir';
import { parseRecipe } from '../../src/recipe';

const FIXTURE_DIR = resolve('test/fixtures/qwen2-tiny-l2s');
const RECIPE = `merge_method: ties
base_model: system1
models:
  - model: system2
    parameters: {weight: 1.0, density: 0.5}
parameters: {lambda: 1.0}
dtype: bfloat16
`;

const reference = JSON.parse(readFileSync(join(FIXTURE_DIR, 'system1', 'reference.json'), 'utf8')) as {
  prompts: Array<{
    messages: Array<{ role: string; content: string }>;
    prompt_text: string;
    prompt_ids: number[];
  }>;
};

let tmp: string;

async function mergeInto(name: string): Promise<string> {
  const out = join(tmp, name);
  const resolver = folderResolver(FIXTURE_DIR);
  try {
    await runMerge({
      recipe: parseRecipe(RECIPE, join(FIXTURE_DIR, 'ties.yml')),
      resolveModel: resolver,
      output: await outputDir(out),
      backend: cpuBackend,
    });
  } finally {
    await resolver.closeAll();
  }
  return out;
}

async function openRunner(dir: string) {
  const folder = await modelFolder(dir);
  const runner = await createCpuRunner(await openModelWeights(folder), { maxContext: 128 });
  const tokenizer = await ModelTokenizer.load(folder);
  return { folder, runner, tokenizer };
}

describe('a TIES merge of the fixture pair', { timeout: 60_000 }, () => {
  let merged: string;
  let again: string;
  let model: Awaited<ReturnType<typeof openRunner>>;

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'l2s-model-merged-'));
    merged = await mergeInto('merged');
    again = await mergeInto('merged-again');
    model = await openRunner(merged);
  }, 180_000);
  afterAll(async () => {
    model?.runner.dispose();
    await model?.folder.close();
    await rm(tmp, { recursive: true, force: true });
  });

  it('is the same bytes when merged twice', async () => {
    const files = (await readdir(merged)).filter((f) => f.endsWith('.safetensors') || f.endsWith('.json'));
    expect(files).toContain('config.json');
    for (const f of files) {
      const [a, b] = [await readFile(join(again, f)), await readFile(join(merged, f))];
      expect(a.equals(b), f).toBe(true);
    }
  });

  it("tokenizes and renders prompts as the base model's reference", () => {
    for (const p of reference.prompts) {
      expect(model.tokenizer.renderChat(p.messages, { addGenerationPrompt: true })).toBe(p.prompt_text);
      expect(model.tokenizer.encodeChat(p.messages, { addGenerationPrompt: true })).toEqual(p.prompt_ids);
    }
  });

  it('gives the same logits from the KV cache as from recomputing the whole sequence', async () => {
    const { runner, tokenizer } = model;
    const prompt = reference.prompts[2].prompt_ids;
    const result = await generate(runner, tokenizer, prompt, { maxNewTokens: 24, sampling: GREEDY });
    expect(result.tokenIds.length).toBeGreaterThan(4);
    const sequence = [...prompt, ...result.tokenIds];
    const fresh = await openRunner(merged);
    try {
      runner.reset();
      await runner.prefill(prompt, GREEDY);
      let worst = 0;
      for (let n = prompt.length; n < sequence.length; n++) {
        if (n > prompt.length) await runner.decode(sequence[n - 1], GREEDY);
        const cached = await runner.lastLogits();
        const full = await recompute(fresh.runner, sequence.slice(0, n));
        for (let i = 0; i < cached.length; i++) worst = Math.max(worst, Math.abs(cached[i] - full[i]));
        // The greedy token at each step is the argmax of these logits.
        expect(argmaxOf(full)).toBe(sequence[n]);
      }
      expect(worst).toBeLessThan(1e-5);
    } finally {
      fresh.runner.dispose();
      await fresh.folder.close();
    }
  });

  it('generates the same tokens and log-probabilities from both merges', async () => {
    const other = await openRunner(again);
    try {
      for (const p of reference.prompts.slice(0, 3)) {
        const options = { maxNewTokens: 32, sampling: { ...GREEDY, topLogprobs: 5 } };
        const a = await generate(model.runner, model.tokenizer, p.prompt_ids, options);
        const b = await generate(other.runner, other.tokenizer, p.prompt_ids, options);
        expect(b.tokenIds).toEqual(a.tokenIds);
        expect(b.topLogprobs).toEqual(a.topLogprobs);
        expect(b.text).toBe(a.text);
      }
    } finally {
      other.runner.dispose();
      await other.folder.close();
    }
  });

  it("runs the merged weights: its logits differ from both parents'", async () => {
    const prompt = reference.prompts[0].prompt_ids;
    const logitsOf = async (runner: CpuReferenceRunner) => {
      runner.reset();
      await runner.prefill(prompt, GREEDY);
      return runner.lastLogits();
    };
    const mergedLogits = await logitsOf(model.runner);
    for (const parent of ['system1', 'system2']) {
      const p = await openRunner(join(FIXTURE_DIR, parent));
      try {
        const parentLogits = await logitsOf(p.runner);
        let diff = 0;
        for (let i = 0; i < parentLogits.length; i++)
          diff = Math.max(diff, Math.abs(parentLogits[i] - mergedLogits[i]));
        expect(diff).toBeGreaterThan(0.05);
      } finally {
        p.runner.dispose();
        await p.folder.close();
      }
    }
  });
});

async function recompute(runner: CpuReferenceRunner, ids: number[]): Promise<Float32Array> {
  runner.reset();
  await runner.prefill(ids, GREEDY);
  return runner.lastLogits();
}

function argmaxOf(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}
