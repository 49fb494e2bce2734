/**
 * `l2s-merge generate` and `l2s-merge eval` run as the installed binary (bin/l2s-merge.mjs on the
 * built bundle), checked against transformers' reference outputs of the fixture pair.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EvalResult, scoreResponse } from '../../src/eval/score';
import { nodeGpu } from '../../src/node/webgpu';

const run = promisify(execFile);
const gpu = await nodeGpu().catch(() => null);
const adapter = gpu ? await gpu.requestAdapter() : null;
const FIXTURE_DIR = 'test/fixtures/qwen2-tiny-l2s';

interface ReferencePrompt {
  messages: Array<{ role: string; content: string }>;
  prompt_text: string;
  prompt_ids: number[];
  generated_ids: number[];
  generated_text: string;
  top_logprobs: Array<{ top_ids: number[]; top_logprobs: number[] }>;
}

const reference = (system: string) =>
  JSON.parse(readFileSync(join(FIXTURE_DIR, system, 'reference.json'), 'utf8')) as {
    max_new_tokens: number;
    prompts: ReferencePrompt[];
  };

/** Runs the binary; resolves with the exit code and both streams, whatever the exit code. */
async function l2s(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['bin/l2s-merge.mjs', ...args], {
      maxBuffer: 64 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: err.code ?? -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

let tmp: string;

beforeAll(async () => {
  // The bundle npm test builds first; built here when absent or older than these subcommands.
  const bundle = 'dist/cli/main.js';
  if (!existsSync(bundle) || !readFileSync(bundle, 'utf8').includes('l2s-merge generate MODEL_DIR')) {
    await run('npx', ['vite', 'build', '--config', 'vite.cli.config.ts', '--logLevel', 'warn']);
  }
  tmp = await mkdtemp(join(tmpdir(), 'l2s-model-cli-'));
}, 120_000);

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('l2s-merge generate', () => {
  for (const [system, index] of [
    ['system2', 0],
    ['system1', 4],
  ] as const) {
    it(`--json on ${system} equals transformers' reference (prompt ${index})`, async () => {
      const ref = reference(system);
      const p = ref.prompts[index];
      const { code, stdout, stderr } = await l2s(
        'generate',
        join(FIXTURE_DIR, system),
        '--prompt',
        p.messages[0].content,
        '--max-new-tokens',
        String(ref.max_new_tokens),
        '--device',
        'cpu',
        '--json',
      );
      expect(stderr).toBe('');
      expect(code).toBe(0);
      const out = JSON.parse(stdout) as {
        prompt_token_ids: number[];
        token_ids: number[];
        text: string;
        top_logprobs: Array<Array<[number, number]>>;
      };
      expect(Object.keys(out)).toEqual(['prompt_token_ids', 'token_ids', 'text', 'top_logprobs']);
      expect(out.prompt_token_ids).toEqual(p.prompt_ids);
      expect(out.token_ids).toEqual(p.generated_ids);
      expect(out.text).toBe(p.generated_text);
      expect(out.top_logprobs.length).toBe(p.generated_ids.length);
      for (const [i, top] of p.top_logprobs.entries()) {
        expect(out.top_logprobs[i].length).toBe(5);
        expect(out.top_logprobs[i].map(([id]) => id)).toEqual(top.top_ids);
        for (const [j, [, lp]] of out.top_logprobs[i].entries()) {
          expect(Math.abs(lp - top.top_logprobs[j])).toBeLessThan(1e-4);
        }
      }
    }, 60_000);
  }

  it.skipIf(!adapter)(
    '--device gpu runs the GPU runner: the reference tokens, log-probabilities within 2e-3',
    async () => {
      const ref = reference('system2');
      const p = ref.prompts[3];
      const { code, stdout, stderr } = await l2s(
        'generate',
        join(FIXTURE_DIR, 'system2'),
        '--prompt',
        p.messages[0].content,
        '--max-new-tokens',
        '16',
        '--device',
        'gpu',
        '--json',
      );
      expect(code).toBe(0);
      expect(stderr).toContain(`l2s-merge: running ${join(FIXTURE_DIR, 'system2')} on the GPU\n`);
      const out = JSON.parse(stdout) as { token_ids: number[]; top_logprobs: Array<Array<[number, number]>> };
      expect(out.token_ids).toEqual(p.generated_ids.slice(0, 16));
      for (const [i, top] of p.top_logprobs.entries()) {
        expect(out.top_logprobs[i].map(([id]) => id)).toEqual(top.top_ids);
        for (const [j, [, lp]] of out.top_logprobs[i].entries()) {
          expect(Math.abs(lp - top.top_logprobs[j])).toBeLessThan(2e-3);
        }
      }
    },
    180_000,
  );

  it('streams the text to stdout and reports timings on stderr; --raw and --prompt-file give the same prompt', async () => {
    const p = reference('system1').prompts[1];
    const plain = await l2s(
      'generate',
      join(FIXTURE_DIR, 'system1'),
      '--prompt',
      p.messages[0].content,
      '--device',
      'cpu',
    );
    expect(plain.code).toBe(0);
    expect(plain.stdout).toBe(`${p.generated_text}\n`);
    expect(plain.stderr).toMatch(
      new RegExp(
        `^l2s-merge: ${p.generated_ids.length} tokens \\(eos\\); prefill ${p.prompt_ids.length} tokens in \\d+ ms, decode [\\d.]+ tokens/s on the CPU\n$`,
      ),
    );
    const file = join(tmp, 'prompt.txt');
    await writeFile(file, p.prompt_text);
    const raw = await l2s(
      'generate',
      join(FIXTURE_DIR, 'system1'),
      '--prompt-file',
      file,
      '--raw',
      '--device',
      'cpu',
      '--json',
    );
    expect(raw.code).toBe(0);
    expect(JSON.parse(raw.stdout).prompt_token_ids).toEqual(p.prompt_ids);
    expect(JSON.parse(raw.stdout).text).toBe(p.generated_text);
  }, 60_000);

  it('samples reproducibly with --seed', async () => {
    const args = [
      'generate',
      join(FIXTURE_DIR, 'system2'),
      '--prompt',
      'How many?',
      '--max-new-tokens',
      '24',
    ];
    const sample = async (seed: string) =>
      JSON.parse(
        (
          await l2s(
            ...args,
            '--temperature',
            '3',
            '--top-p',
            '0.95',
            '--seed',
            seed,
            '--device',
            'cpu',
            '--json',
          )
        ).stdout,
      ).token_ids as number[];
    const first = await sample('3');
    expect(first.length).toBeGreaterThan(0);
    expect(await sample('3')).toEqual(first);
    expect(await sample('4')).not.toEqual(first);
  }, 60_000);

  it('fails with one line naming the file: a missing folder, an unsupported config, a bad flag', async () => {
    const missing = await l2s('generate', join(tmp, 'nope'), '--prompt', 'x', '--device', 'cpu');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe(
      `l2s-merge generate: ModelNotFoundError: ${join(tmp, 'nope')}: no such model folder\n`,
    );

    const gelu = join(tmp, 'gelu');
    await mkdir(gelu);
    for (const f of await readdir(join(FIXTURE_DIR, 'system1')))
      await copyFile(join(FIXTURE_DIR, 'system1', f), join(gelu, f));
    const config = JSON.parse(readFileSync(join(gelu, 'config.json'), 'utf8'));
    await writeFile(
      join(gelu, 'config.json'),
      JSON.stringify({ ...config, hidden_act: 'gelu_pytorch_tanh' }),
    );
    const unsupported = await l2s('generate', gelu, '--prompt', 'x', '--device', 'cpu');
    expect(unsupported.code).toBe(1);
    expect(unsupported.stderr).toBe(
      `l2s-merge generate: UnsupportedModelError: ${gelu}/config.json: hidden_act: "gelu_pytorch_tanh" is not supported (only "silu")\n`,
    );

    const flag = await l2s('generate', join(FIXTURE_DIR, 'system1'), '--prompt', 'x', '--top-p', '2');
    expect(flag.code).toBe(2);
    expect(flag.stderr.split('\n')[0]).toBe('l2s-merge generate: --top-p must be in (0, 1], got 2');
    const noPrompt = await l2s(
      'generate',
      join(FIXTURE_DIR, 'system1'),
      '--prompt-file',
      join(tmp, 'none.txt'),
    );
    expect(noPrompt.code).toBe(1);
    expect(noPrompt.stderr).toBe(
      `l2s-merge generate: InputFileError: ${join(tmp, 'none.txt')}: cannot read the prompt (no such file or folder (ENOENT))\n`,
    );
    const both = await l2s('generate', join(FIXTURE_DIR, 'system1'));
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(
      /^l2s-merge generate: give exactly one of --prompt TEXT and --prompt-file FILE\n/,
    );
  }, 60_000);
});

describe('l2s-merge eval', () => {
  it('grades both models on a questions file and prints the table (and --json the results)', async () => {
    const golds = ['24', '46', '37'];
    const questions = join(tmp, 'questions.jsonl');
    const prompts = reference('system1').prompts.slice(0, 3);
    await writeFile(
      questions,
      `${prompts.map((p, i) => JSON.stringify({ question: p.messages[0].content, answer: golds[i] })).join('\n')}\n`,
    );
    const s1 = join(FIXTURE_DIR, 'system1');
    const s2 = join(FIXTURE_DIR, 'system2');
    const args = [
      'eval',
      s2,
      s1,
      '--questions',
      questions,
      '--system',
      '',
      '--max-new-tokens',
      '48',
      '--device',
      'cpu',
    ];
    const json = await l2s(...args, '--json', '--quiet');
    expect(json.stderr).toBe('');
    expect(json.code).toBe(0);
    const { results, table } = JSON.parse(json.stdout) as {
      results: Array<EvalResult & { text: string }>;
      table: Array<{ model: string; accuracy: number; meanTokens: number; lengthChange?: number }>;
    };
    // What the extraction makes of transformers' own texts is what eval must report.
    const expected: Array<EvalResult & { text: string }> = [];
    for (const [dir, system] of [
      [s2, 'system2'],
      [s1, 'system1'],
    ]) {
      for (const [i, p] of reference(system).prompts.slice(0, 3).entries()) {
        expected.push({
          ...scoreResponse(
            dir,
            { id: `line-${i + 1}`, question: p.messages[0].content, answer: golds[i] },
            p.generated_text,
            p.generated_ids.length,
            p.generated_ids.at(-1) === 0 ? 'eos' : 'length',
          ),
          text: p.generated_text,
        });
      }
    }
    expect(results).toEqual(expected);
    expect(table.map((r) => r.model)).toEqual([s2, s1]);
    const mean = (system: string) =>
      reference(system)
        .prompts.slice(0, 3)
        .reduce((s, p) => s + p.generated_ids.length, 0) / 3;
    expect(table[0].meanTokens).toBeCloseTo(mean('system2'), 10);
    expect(table[1].lengthChange).toBeCloseTo(mean('system1') / mean('system2') - 1, 10);
    // System 1 answers "23" to 34 - 10: one of three wrong.
    expect(table[1].accuracy).toBeCloseTo(2 / 3, 10);

    const text = await l2s(...args, '--quiet');
    expect(text.code).toBe(0);
    const lines = text.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^model\s+accuracy\s+correct\s+mean tokens\s+length vs /);
    expect(lines[3]).toContain('66.7%');
    expect(lines[3]).toContain('2/3');
  }, 120_000);

  it('names the file and line of a bad questions file, and a questions file it cannot read', async () => {
    const bad = join(tmp, 'bad.jsonl');
    await writeFile(bad, '{"question": "one?", "answer": "1"}\n{"question": "two?"}\n');
    const out = await l2s('eval', join(FIXTURE_DIR, 'system1'), '--questions', bad, '--device', 'cpu');
    expect(out.code).toBe(1);
    expect(out.stderr).toBe(
      `l2s-merge eval: QuestionsFileError: ${bad}:2: "answer" must be a non-empty string or a number\n`,
    );
    const none = join(tmp, 'none.jsonl');
    const unread = await l2s('eval', join(FIXTURE_DIR, 'system1'), '--questions', none, '--device', 'cpu');
    expect(unread.code).toBe(1);
    expect(unread.stderr).toBe(
      `l2s-merge eval: InputFileError: ${none}: cannot read the questions (no such file or folder (ENOENT))\n`,
    );
  }, 60_000);
});
