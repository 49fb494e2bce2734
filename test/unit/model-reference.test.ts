/**
 * The CPU reference forward pass, the tokenizer and the chat template against transformers' own
 * outputs for the fixture pair (test/fixtures/qwen2-tiny-l2s/*\/reference.json, see its README).
 */
import { readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelFiles } from '../../src/engine/io';
import { bytesByteSource } from '../../src/formats/byte-source';
import { generate } from '../../src/model/generate';
import { createRunner, RunnerUnavailableError } from '../../src/model/index';
import { type CpuReferenceRunner, createCpuRunner } from '../../src/model/reference';
import { GREEDY } from '../../src/model/sampling';
import { ChatTemplateError, ModelTokenizer } from '../../src/model/tokenizer';
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
  describe(`${system} against transformers`, { timeout: 60_000 }, () => {
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

describe('streaming decode', { timeout: 60_000 }, () => {
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

/** The fixture's files in memory, with some replaced or added. */
async function fixtureWith(system: string, changes: Record<string, string | undefined>): Promise<ModelFiles> {
  const dir = join(FIXTURE_DIR, system);
  const files = new Map<string, Uint8Array>();
  for (const f of await readdir(dir)) files.set(f, new Uint8Array(await readFile(join(dir, f))));
  for (const [f, text] of Object.entries(changes)) {
    if (text === undefined) files.delete(f);
    else files.set(f, new TextEncoder().encode(text));
  }
  return {
    name: `mem-${system}`,
    files: () => [...files.keys()],
    async open(file) {
      const bytes = files.get(file);
      if (!bytes) throw new Error(`no ${file}`);
      return bytesByteSource(bytes, `mem-${system}/${file}`);
    },
  };
}

describe('chat template sources', { timeout: 60_000 }, () => {
  const tokenizerConfig = () =>
    JSON.parse(readFileSync(join(FIXTURE_DIR, 'system1', 'tokenizer_config.json'), 'utf8')) as Record<
      string,
      unknown
    >;
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hi' },
  ];

  it('prefers chat_template.jinja and passes the special tokens as strings', async () => {
    const files = await fixtureWith('system1', {
      'chat_template.jinja':
        '{{ eos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}',
    });
    const tokenizer = await ModelTokenizer.load(files);
    expect(tokenizer.renderChat(messages, { addGenerationPrompt: true })).toBe(
      '<|endoftext|>[system]Be brief.\n[user]Hi\n<|assistant|>',
    );
    expect(tokenizer.renderChat(messages)).toBe('<|endoftext|>[system]Be brief.\n[user]Hi\n');
    // The rendered special tokens are tokens, not their characters.
    expect(tokenizer.encodeChat(messages, { addGenerationPrompt: true })[0]).toBe(0);
    expect(tokenizer.encodeChat(messages, { addGenerationPrompt: true }).at(-1)).toBe(3);
  });

  it('takes the "default" of a list of named templates, with bos_token from an AddedToken object', async () => {
    const config = {
      ...tokenizerConfig(),
      bos_token: { content: '<|system|>', special: true },
      chat_template: [
        { name: 'tool_use', template: 'TOOLS' },
        { name: 'default', template: '{{ bos_token }}{{ messages[0].content }}' },
      ],
    };
    const tokenizer = await ModelTokenizer.load(
      await fixtureWith('system1', { 'tokenizer_config.json': JSON.stringify(config) }),
    );
    expect(tokenizer.renderChat(messages)).toBe('<|system|>Be brief.');
  });

  it('says so when the model has no chat template', async () => {
    const config = { ...tokenizerConfig() };
    delete config.chat_template;
    const tokenizer = await ModelTokenizer.load(
      await fixtureWith('system1', { 'tokenizer_config.json': JSON.stringify(config) }),
    );
    expect(() => tokenizer.renderChat(messages)).toThrow(ChatTemplateError);
    expect(() => tokenizer.renderChat(messages)).toThrow(
      /mem-system1\/tokenizer_config\.json: the model has no chat_template/,
    );
    await expect(
      ModelTokenizer.load(await fixtureWith('system1', { 'tokenizer.json': undefined })),
    ).rejects.toThrow(/mem-system1\/tokenizer\.json: not found/);
  });
});

describe('generate', { timeout: 60_000 }, () => {
  it('stops within one token of an abort and streams pieces that add up to the text', async () => {
    const files = await fixtureWith('system2', {});
    const runner = await createCpuRunner(await openModelWeights(files), { maxContext: 128 });
    const tokenizer = await ModelTokenizer.load(files);
    const p = readReference('system2').prompts[0];
    const controller = new AbortController();
    const pieces: string[] = [];
    const result = await generate(runner, tokenizer, p.prompt_ids, {
      maxNewTokens: 40,
      sampling: GREEDY,
      signal: controller.signal,
      onToken: (event) => {
        pieces.push(event.text);
        if (event.index === 9) controller.abort();
      },
    });
    expect(result.finishReason).toBe('abort');
    expect(result.tokenIds).toEqual(p.generated_ids.slice(0, 10));
    expect(pieces.join('')).toBe(result.text);
    expect(result.text).toBe(tokenizer.decode(p.generated_ids.slice(0, 10)));
    expect(result.timings.promptTokens).toBe(p.prompt_ids.length);
    expect(result.timings.generatedTokens).toBe(10);
    expect(result.timings.decodeTokensPerSecond).toBeGreaterThan(0);
  });

  it('awaits a promise from onToken, so an abort during it stops before the next token', async () => {
    const files = await fixtureWith('system2', {});
    const runner = await createCpuRunner(await openModelWeights(files), { maxContext: 128 });
    const tokenizer = await ModelTokenizer.load(files);
    const p = readReference('system2').prompts[1];
    const controller = new AbortController();
    const result = await generate(runner, tokenizer, p.prompt_ids, {
      maxNewTokens: 40,
      sampling: GREEDY,
      signal: controller.signal,
      onToken: async (event) => {
        await new Promise((resolve) => setTimeout(resolve, 1));
        if (event.index === 3) controller.abort();
      },
    });
    expect(result.finishReason).toBe('abort');
    expect(result.tokenIds).toEqual(p.generated_ids.slice(0, 4));
    expect(runner.length).toBe(p.prompt_ids.length + 3);
  });

  it('createRunner: auto falls back to the CPU with a notice, gpu refuses without WebGPU', async () => {
    const weights = await openModelWeights(await fixtureWith('system1', {}));
    const notices: string[] = [];
    const runner = await createRunner(weights, 'auto', {
      gpu: async () => undefined,
      maxContext: 64,
      notice: (line) => notices.push(line),
    });
    expect(runner.backend).toBe('cpu');
    expect(runner.maxContext).toBe(64);
    expect(notices).toEqual([
      'running mem-system1 on the CPU: WebGPU is not available here (navigator.gpu is missing)',
    ]);
    await expect(createRunner(weights, 'gpu', { gpu: async () => undefined })).rejects.toThrow(
      RunnerUnavailableError,
    );
    expect((await createRunner(weights, 'cpu')).backend).toBe('cpu');
  });
});
