/**
 * The CPU reference forward pass, the tokenizer and the chat template against transformers' own
 * outputs for the fixture pair (test/fixtures/qwen2-tiny-l2s/*\/reference.json, see its README).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate } from '../../src/model/generate';
import { type CpuReferenceRunner, createCpuRunner } from '../../src/model/reference';
import { GREEDY } from '../../src/model/sampling';
import { ModelTokenizer } from '../../src/model/tokenizer';
import { openModelWeights } from '../../src/model/weights';
import { modelFolder } from '../../src/node/model-folder';

const FIXTURE_DIR = 'test/fixtures/qwen2-tiny-l2s';

interface ReferencePrompt {
  messages: Array<{ role: string; content: string }>;
  prompt_text: string;
  prompt_ids: number[];
  generated_ids: number[];
  generated_text: string;
  finish_reason: string;
  top_logprobs: Array<{ position: number; chosen_id: number; top_ids: number[]; top_logprobs: number[] }>;
  last_prompt_position_logits?: number[];
}

interface Reference {
  max_new_tokens: number;
  topk: number;
  prompts: ReferencePrompt[];
}

function readReference(system: string): Reference {
  return JSON.parse(readFileSync(join(FIXTURE_DIR, system, 'reference.json'), 'utf8')) as Reference;
}

/** Largest |a - b| over two equally long lists. */
function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

for (const system of ['system1', 'system2']) {
  describe(`${system} against transformers`, () => {
    const reference = readReference(system);
    let folder: Awaited<ReturnType<typeof modelFolder>>;
    let tokenizer: ModelTokenizer;
    let runner: CpuReferenceRunner;

    beforeAll(async () => {
      folder = await modelFolder(join(FIXTURE_DIR, system));
      tokenizer = await ModelTokenizer.load(folder);
      runner = await createCpuRunner(await openModelWeights(folder), { maxContext: 256 });
    });
    afterAll(async () => {
      runner.dispose();
      await folder.close();
    });

    it('renders every prompt with the chat template exactly as transformers', () => {
      for (const p of reference.prompts) {
        expect(tokenizer.renderChat(p.messages, { addGenerationPrompt: true })).toBe(p.prompt_text);
      }
    });

    it('tokenizes every rendered prompt to the reference ids', () => {
      for (const p of reference.prompts) {
        expect(tokenizer.encode(p.prompt_text, { addSpecialTokens: false })).toEqual(p.prompt_ids);
        expect(tokenizer.encodeChat(p.messages, { addGenerationPrompt: true })).toEqual(p.prompt_ids);
      }
    });

    it('generates the reference greedy tokens and text, with top-5 log-probabilities within 1e-4', async () => {
      let worst = 0;
      for (const p of reference.prompts) {
        const result = await generate(runner, tokenizer, p.prompt_ids, {
          maxNewTokens: reference.max_new_tokens,
          sampling: { ...GREEDY, topLogprobs: reference.topk },
        });
        expect(result.tokenIds).toEqual(p.generated_ids);
        expect(result.text).toBe(p.generated_text);
        expect(result.finishReason).toBe(p.finish_reason);
        const logprobs = result.topLogprobs ?? [];
        for (const [i, top] of p.top_logprobs.entries()) {
          expect(top.position).toBe(p.prompt_ids.length + i);
          expect(logprobs[i].map(([id]) => id)).toEqual(top.top_ids);
          const d = maxAbsDiff(
            logprobs[i].map(([, lp]) => lp),
            top.top_logprobs,
          );
          worst = Math.max(worst, d);
        }
      }
      expect(worst).toBeLessThan(1e-4);
    });

    it("matches the full logits of prompt 0's last position within 1e-4", async () => {
      const p = reference.prompts[0];
      const expected = p.last_prompt_position_logits;
      expect(expected).toBeDefined();
      runner.reset();
      await runner.prefill(p.prompt_ids, GREEDY);
      const logits = await runner.lastLogits();
      expect(logits.length).toBe(expected?.length);
      expect(maxAbsDiff(logits, expected ?? [])).toBeLessThan(1e-4);
    });

    it('gives the same logits from the KV cache as from recomputing the whole sequence', async () => {
      const p = reference.prompts[1];
      const sequence = [...p.prompt_ids, ...p.generated_ids.slice(0, 12)];
      runner.reset();
      await runner.prefill(sequence.slice(0, p.prompt_ids.length), GREEDY);
      for (let n = p.prompt_ids.length + 1; n <= sequence.length; n++) {
        await runner.decode(sequence[n - 1], GREEDY);
        const cached = await runner.lastLogits();
        runner.reset();
        await runner.prefill(sequence.slice(0, n), GREEDY);
        expect(maxAbsDiff(cached, await runner.lastLogits())).toBeLessThan(1e-5);
        expect(runner.length).toBe(n);
      }
    });
  });
}

describe('streaming decode', () => {
  it('never splits a UTF-8 character and adds up to the whole text', async () => {
    const folder = await modelFolder(join(FIXTURE_DIR, 'system1'));
    try {
      const tokenizer = await ModelTokenizer.load(folder);
      // Multi-byte characters become several byte-level tokens in this small vocabulary.
      const text = 'Prix: 3€ — naïve café 🙂 done.';
      const ids = tokenizer.encode(text, { addSpecialTokens: false });
      expect(ids.length).toBeGreaterThan([...text].length - 10);
      expect(tokenizer.decode(ids)).toBe(text);
      const streamer = tokenizer.streamingDecoder();
      const pieces = ids.map((id) => streamer.push(id));
      for (const piece of pieces) expect(piece).not.toContain('\uFFFD');
      // Some token completes no character (the first bytes of € or 🙂).
      expect(pieces.some((piece) => piece === '')).toBe(true);
      expect(pieces.join('') + streamer.flush()).toBe(text);
    } finally {
      await folder.close();
    }
  });

  it('flushes an incomplete character at the end as U+FFFD, as transformers decodes it', async () => {
    const folder = await modelFolder(join(FIXTURE_DIR, 'system1'));
    try {
      const tokenizer = await ModelTokenizer.load(folder);
      const ids = tokenizer.encode('a🙂', { addSpecialTokens: false });
      const streamer = tokenizer.streamingDecoder();
      const pieces = ids.slice(0, -1).map((id) => streamer.push(id));
      expect(pieces.join('')).toBe('a');
      expect(streamer.flush()).toContain('\uFFFD');
    } finally {
      await folder.close();
    }
  });
});
