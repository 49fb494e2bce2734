/**
 * The runtime worker's model session on the fixture pair (CPU reference): greedy tokens equal
 * transformers' reference, a stop answered from the token callback or an abort ends the generation
 * within one token, and loading a second model frees the first.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ModelFiles } from '../../src/engine/io';
import { modelFolder } from '../../src/node/model-folder';
import { ModelSession, NoModelLoadedError, type StreamedToken } from '../../src/worker/model-session';

const FIXTURES = resolve(import.meta.dirname, '../fixtures/qwen2-tiny-l2s');

interface ReferencePrompt {
  messages: { role: string; content: string }[];
  prompt_ids: number[];
  generated_ids: number[];
  generated_text: string;
  finish_reason: string;
}

function reference(model: string): { max_new_tokens: number; prompts: ReferencePrompt[] } {
  return JSON.parse(readFileSync(join(FIXTURES, model, 'reference.json'), 'utf8'));
}

const opened: Array<{ close(): Promise<void> }> = [];
async function folder(model: string): Promise<ModelFiles> {
  const files = await modelFolder(join(FIXTURES, model), model);
  opened.push(files);
  return files;
}

afterEach(async () => {
  await Promise.all(opened.splice(0).map((f) => f.close()));
});

describe('ModelSession', () => {
  it('generates the reference greedy tokens of both models, streaming the text', async () => {
    const session = new ModelSession();
    for (const model of ['system1', 'system2']) {
      const ref = reference(model);
      const info = await session.load(await folder(model), { device: 'cpu' });
      expect(info).toMatchObject({ name: model, backend: 'cpu', architecture: 'qwen2', numLayers: 4 });
      expect(info.hasChatTemplate).toBe(true);
      for (const prompt of ref.prompts.slice(0, 2)) {
        const streamed: StreamedToken[] = [];
        const outcome = await session.generate(
          { prompt: { messages: prompt.messages }, maxNewTokens: ref.max_new_tokens },
          { onToken: (t) => void streamed.push(t) },
        );
        expect(outcome.promptTokenIds).toEqual(prompt.prompt_ids);
        expect(outcome.tokenIds).toEqual(prompt.generated_ids);
        expect(outcome.text).toBe(prompt.generated_text);
        expect(outcome.finishReason).toBe(prompt.finish_reason);
        expect(streamed.map((t) => t.token)).toEqual(prompt.generated_ids);
        expect(streamed.map((t) => t.text).join('')).toBe(prompt.generated_text);
        expect(outcome.timings.generatedTokens).toBe(prompt.generated_ids.length);
        expect(outcome.tokensPerSecond).toBeGreaterThan(0);
        expect(outcome.totalMs).toBeGreaterThan(0);
      }
    }
    session.unload();
    expect(session.loaded).toBeUndefined();
  });

  it('stops before the next token when the token callback answers false', async () => {
    const session = new ModelSession();
    await session.load(await folder('system2'), { device: 'cpu' });
    const ref = reference('system2').prompts[0];
    const seen: number[] = [];
    const outcome = await session.generate(
      { prompt: { messages: ref.messages }, maxNewTokens: 48 },
      {
        onToken: async (t) => {
          seen.push(t.token);
          // Answer after a macrotask, as a comlink reply from the page would.
          await new Promise((r) => setTimeout(r, 1));
          return t.index < 4;
        },
      },
    );
    expect(outcome.finishReason).toBe('abort');
    expect(outcome.tokenIds).toEqual(ref.generated_ids.slice(0, 5));
    expect(seen).toEqual(outcome.tokenIds);
    expect(outcome.timings.generatedTokens).toBe(5);
    expect(outcome.timings.decodeMs).toBeGreaterThan(0);
    expect(ref.generated_text.startsWith(outcome.text)).toBe(true);
    expect(outcome.text.length).toBeGreaterThan(0);
  });

  it('stops within one token of an abort (the worker cancel message)', async () => {
    const session = new ModelSession();
    await session.load(await folder('system2'), { device: 'cpu' });
    const ref = reference('system2').prompts[1];
    const controller = new AbortController();
    let abortedAt = -1;
    const outcome = await session.generate(
      { prompt: { messages: ref.messages }, maxNewTokens: 48 },
      {
        signal: controller.signal,
        onToken: (t) => {
          if (t.index === 6) {
            // The cancel arrives as a message while the worker waits on the page's answer.
            setTimeout(() => controller.abort(), 0);
            abortedAt = t.index;
          }
          return new Promise((r) => setTimeout(() => r(true), 5));
        },
      },
    );
    expect(abortedAt).toBe(6);
    expect(outcome.finishReason).toBe('abort');
    // Token 6 was streamed when the cancel came; nothing after it was computed.
    expect(outcome.tokenIds.length).toBe(abortedAt + 1);
    expect(outcome.timings.generatedTokens).toBe(abortedAt + 1);
    expect(outcome.tokenIds).toEqual(ref.generated_ids.slice(0, outcome.tokenIds.length));
  });

  it('refuses to generate with nothing loaded, and to load while generating', async () => {
    const session = new ModelSession();
    await expect(session.generate({ prompt: { raw: 'hi' }, maxNewTokens: 1 })).rejects.toBeInstanceOf(
      NoModelLoadedError,
    );
    await session.load(await folder('system1'), { device: 'cpu' });
    const other = await folder('system2');
    let loadError: unknown;
    await session.generate(
      { prompt: { raw: '<|user|>\nHi\n<|assistant|>\n' }, maxNewTokens: 3 },
      {
        onToken: async () => {
          loadError ??= await session.load(other, { device: 'cpu' }).catch((e) => e);
        },
      },
    );
    expect(String(loadError)).toMatch(/a generation is under way/);
    expect(session.loaded?.name).toBe('system1');
  });

  it('tokenizes a raw prompt without the template', async () => {
    const session = new ModelSession();
    await session.load(await folder('system1'), { device: 'cpu' });
    const ref = reference('system1').prompts[0];
    // The reference prompt text is the template's rendering: raw, it gives the same ids.
    expect(session.promptIds({ raw: (ref as unknown as { prompt_text: string }).prompt_text })).toEqual(
      ref.prompt_ids,
    );
  });

  it("renders the paper's system message through the model's own chat template", async () => {
    const session = new ModelSession();
    await session.load(await folder('system1'), { device: 'cpu' });
    const system = 'Please reason step by step, and put your final answer within \\boxed{}.';
    const question = 'How many?';
    // The fixture's template: <|role|>\ncontent\n per message, then <|assistant|>\n.
    expect(
      session.promptIds({
        messages: [
          { role: 'system', content: system },
          { role: 'user', content: question },
        ],
      }),
    ).toEqual(session.promptIds({ raw: `<|system|>\n${system}\n<|user|>\n${question}\n<|assistant|>\n` }));
    // <|system|> is one special token (id 1), not its characters.
    expect(session.promptIds({ messages: [{ role: 'system', content: system }] })[0]).toBe(1);
  });

  it('frees the previous model when the next is loaded', async () => {
    const session = new ModelSession();
    await session.load(await folder('system1'), { device: 'cpu' });
    const first = (session as unknown as { runner: { dispose(): void } }).runner;
    let disposed = 0;
    const dispose = first.dispose.bind(first);
    first.dispose = () => {
      disposed++;
      dispose();
    };
    await session.load(await folder('system2'), { device: 'cpu' });
    expect(disposed).toBe(1);
    expect(session.loaded?.name).toBe('system2');
  });

  it('says when the GPU was asked for and cannot be had', async () => {
    const session = new ModelSession();
    await expect(
      session.load(await folder('system1'), { device: 'gpu', gpu: async () => undefined }),
    ).rejects.toMatchObject({ name: 'RunnerUnavailableError' });
    const notices: string[] = [];
    const info = await session.load(await folder('system1'), {
      device: 'auto',
      gpu: async () => undefined,
      notice: (line) => notices.push(line),
    });
    expect(info.backend).toBe('cpu');
    expect(notices.join('\n')).toMatch(/running system1 on the CPU: /);
  });
});
