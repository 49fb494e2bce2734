/**
 * `l2s-merge eval MODEL_DIR... --questions FILE.jsonl [--max-new-tokens N] [--system TEXT]
 *  [--reference MODEL_DIR] [--device auto|cpu|gpu] [--json]`
 *
 * Asks every model every question (greedy, through its chat template with the system prompt), grades
 * the extracted final answers and prints the paper's table (src/eval/score.ts): accuracy, mean tokens
 * and the length change relative to the reference model (the System 2 model; default the first one).
 * Models run one after the other, each unloaded before the next is loaded.
 */
import { parseGsm8kAnswer } from '../eval/gsm8k';
import { type EvalQuestion, PAPER_SYSTEM_PROMPT } from '../eval/questions';
import { type EvalResult, formatEvalTable, scoreResponse, summarize } from '../eval/score';
import { generate } from '../model/generate';
import type { ModelRunner } from '../model/runner';
import { GREEDY } from '../model/sampling';
import { UsageError } from './errors';
import { chatMessages, type OpenedModel, openModel, runnerFor } from './generate';
import { HUB_USAGE } from './hub-options';
import { readInputFile, runModelCommand } from './model-command';
import {
  cliModelLocator,
  type ModelCommandOptions,
  modelCommandOptions,
  parseModelCommandArgs,
} from './model-options';

/** The evaluation prompt of Wu et al. 2025 (and of Qwen2.5-Math / DeepSeek-R1's evaluations). */
export const DEFAULT_EVAL_MAX_NEW_TOKENS = 1024;

export const EVAL_USAGE = `usage: l2s-merge eval MODEL_DIR... --questions FILE.jsonl [options]

Ask each model every question (greedy decoding) and print accuracy and mean generated tokens per model,
with the length change relative to the reference model (the System 2 model).

options:
  --questions FILE.jsonl  one {"question": "...", "answer": "..."} per line (required)
  --max-new-tokens N      token budget per answer (default ${DEFAULT_EVAL_MAX_NEW_TOKENS})
  --system TEXT           the system prompt (default the paper's: "${PAPER_SYSTEM_PROMPT}"); '' for none
  --reference MODEL_DIR   the model lengths are compared with (default the first MODEL_DIR)
  --device auto|cpu|gpu   where the models run (default auto)
  --json                  print {"results": [...], "table": [...]}: every graded response and the table
  --quiet                 no per-question progress on stderr
${HUB_USAGE}  -h, --help              this help

A MODEL_DIR may also be a hub id (org/name or org/name@revision), downloaded into the Hugging Face cache.
`;

/** A questions file that is not one {"question","answer"} object per line; names the file and line. */
export class QuestionsFileError extends Error {
  override name = 'QuestionsFileError';
}

export function parseQuestionsJsonl(text: string, file: string): EvalQuestion[] {
  const questions: EvalQuestion[] = [];
  const lines = text.split(/\r?\n/);
  for (const [i, line] of lines.entries()) {
    if (line.trim() === '') continue;
    const where = `${file}:${i + 1}`;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (e) {
      throw new QuestionsFileError(`${where}: not valid JSON (${(e as Error).message})`);
    }
    const r = row as { question?: unknown; answer?: unknown };
    if (
      typeof row !== 'object' ||
      row === null ||
      typeof r.question !== 'string' ||
      r.question.trim() === ''
    ) {
      throw new QuestionsFileError(
        `${where}: expected {"question": "...", "answer": "..."} with a non-empty question`,
      );
    }
    let answer: string;
    if (typeof r.answer === 'number' && Number.isFinite(r.answer)) answer = String(r.answer);
    else if (typeof r.answer === 'string' && r.answer.trim() !== '') {
      // GSM8K's own answers end in "#### N"; take N as the gold answer.
      answer = r.answer.includes('####') ? parseGsm8kAnswer(r.answer, where) : r.answer.trim();
    } else throw new QuestionsFileError(`${where}: "answer" must be a non-empty string or a number`);
    questions.push({ id: `line-${i + 1}`, question: r.question, answer });
  }
  if (questions.length === 0) throw new QuestionsFileError(`${file}: no questions in the file`);
  return questions;
}

interface EvalArgs extends ModelCommandOptions {
  models: string[];
  questions: string;
  system: string;
  reference: string;
  quiet: boolean;
}

function parseEvalArgs(argv: string[]): EvalArgs | 'help' {
  const parsed = parseModelCommandArgs(argv, {
    questions: { type: 'string' },
    reference: { type: 'string' },
    quiet: { type: 'boolean' },
  });
  if (parsed === 'help') return 'help';
  const { values: v, positionals: models } = parsed;
  if (models.length === 0) throw new UsageError('expected at least one MODEL_DIR');
  if (new Set(models).size !== models.length) throw new UsageError('a MODEL_DIR is listed twice');
  if (v.questions === undefined) throw new UsageError('--questions FILE.jsonl is required');
  const reference = (v.reference as string | undefined) ?? models[0];
  if (!models.includes(reference)) {
    throw new UsageError(`--reference ${reference} is not one of the MODEL_DIRs (${models.join(', ')})`);
  }
  const args = modelCommandOptions(v, { maxNewTokens: DEFAULT_EVAL_MAX_NEW_TOKENS }, () => ({
    models,
    questions: v.questions as string,
    reference,
    quiet: Boolean(v.quiet),
  }));
  return { ...args, system: args.system ?? PAPER_SYSTEM_PROMPT };
}

export function evalMain(argv: string[]): Promise<number> {
  return runModelCommand('eval', EVAL_USAGE, parseEvalArgs, argv, async (args, { signal, onEnd }) => {
    const log = (line: string) => {
      if (!args.quiet) process.stderr.write(`l2s-merge: ${line}\n`);
    };
    let model: OpenedModel | undefined;
    let runner: ModelRunner | undefined;
    onEnd(async () => {
      runner?.dispose();
      await model?.close();
    });
    const questions = parseQuestionsJsonl(await readInputFile(args.questions, 'questions'), args.questions);
    // Each result with the model's whole response, for --json.
    const results: Array<EvalResult & { text: string }> = [];
    const locator = await cliModelLocator(args.hubFlags, signal, log, args.quiet);
    for (const dir of args.models) {
      model = await openModel(dir, locator);
      const prompts = questions.map((q) =>
        model?.tokenizer.encodeChat(chatMessages(q.question, args.system), { addGenerationPrompt: true }),
      ) as number[][];
      const longest = Math.max(...prompts.map((p) => p.length));
      runner = await runnerFor(model, args.device, longest + args.maxNewTokens, log);
      for (const [i, q] of questions.entries()) {
        const out = await generate(runner, model.tokenizer, prompts[i], {
          maxNewTokens: args.maxNewTokens,
          sampling: GREEDY,
          signal,
        });
        if (out.finishReason === 'abort') {
          const error = new Error('cancelled');
          error.name = 'AbortError';
          throw error;
        }
        const scored = scoreResponse(dir, q, out.text, out.tokenIds.length, out.finishReason);
        results.push({ ...scored, text: out.text });
        log(
          `${dir} ${i + 1}/${questions.length}: ${scored.correct ? 'correct' : 'wrong'} (answer ${scored.predicted ?? 'none'}, gold ${q.answer}, ${out.tokenIds.length} tokens)`,
        );
      }
      runner.dispose();
      runner = undefined;
      await model.close();
      model = undefined;
    }
    const table = summarize(results, args.reference);
    if (args.json) process.stdout.write(`${JSON.stringify({ results, table })}\n`);
    else process.stdout.write(`${formatEvalTable(table, args.reference)}\n`);
    return 0;
  });
}
