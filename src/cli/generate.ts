/**
 * `l2s-merge generate MODEL_DIR [--prompt TEXT | --prompt-file F] [--raw] [--system TEXT]
 *  [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S] [--device auto|cpu|gpu] [--json]`
 *
 * The prompt is rendered through the model's chat template (one user message, after the optional
 * system message, with the generation prompt) unless --raw, which tokenizes it as it is. The text
 * streams to stdout; --json prints one object instead: {prompt_token_ids, token_ids, text,
 * top_logprobs} with, per generated token, the 5 most likely [id, natural-log prob] from the f32 logits.
 */
import type { DeviceChoice } from '../gpu/select-backend';
import { type GenerateResult, generate } from '../model/generate';
import { createRunner } from '../model/index';
import type { ModelRunner, SamplingOptions } from '../model/runner';
import { type ChatMessage, ModelTokenizer } from '../model/tokenizer';
import { type ModelWeights, openModelWeights } from '../model/weights';
import { type ModelLocator, modelFolder } from '../node/model-folder';
import { nodeGpu } from '../node/webgpu';
import { UsageError } from './errors';
import { HUB_USAGE } from './hub-options';
import { readInputFile, runModelCommand } from './model-command';
import {
  cliModelLocator,
  type FlagValues,
  type ModelCommandOptions,
  modelCommandOptions,
  parseModelCommandArgs,
} from './model-options';

export const GENERATE_USAGE = `usage: l2s-merge generate MODEL_DIR (--prompt TEXT | --prompt-file FILE) [options]

Run a model folder (config.json, safetensors, tokenizer.json) on a prompt and print what it generates.
MODEL_DIR may also be a hub id (org/name or org/name@revision), downloaded into the Hugging Face cache.

options:
  --prompt TEXT          the user message (rendered through the model's chat template)
  --prompt-file FILE     the same, read from a UTF-8 file
  --raw                  tokenize the prompt as it is, without the chat template
  --system TEXT          a system message before the prompt (chat template only)
  --max-new-tokens N     generate at most N tokens (default 256); stops earlier at an eos token
  --temperature T        0 = greedy (default); otherwise sample from softmax(logits / T)
  --top-p P              nucleus sampling mass in (0, 1] (default 1)
  --seed S               seed of the sampler, 0 to 4294967295 (default 0); same seed, same tokens
  --device auto|cpu|gpu  where the model runs (default auto: the GPU when WebGPU has an adapter)
  --json                 print one JSON object: prompt_token_ids, token_ids, text, top_logprobs
${HUB_USAGE}  -h, --help             this help
`;

/** Top log-probabilities per generated token in --json. */
export const JSON_TOP_LOGPROBS = 5;
export const DEFAULT_MAX_NEW_TOKENS = 256;

function parseSampling(v: FlagValues): SamplingOptions {
  const number = (flag: string, fallback: number) => {
    const text = v[flag] as string | undefined;
    if (text === undefined) return fallback;
    const n = Number(text);
    if (text.trim() === '' || !Number.isFinite(n))
      throw new UsageError(`--${flag} must be a number, got ${text}`);
    return n;
  };
  const temperature = number('temperature', 0);
  if (temperature < 0) throw new UsageError(`--temperature must be >= 0, got ${temperature}`);
  const topP = number('top-p', 1);
  if (!(topP > 0 && topP <= 1)) throw new UsageError(`--top-p must be in (0, 1], got ${topP}`);
  const seedText = (v.seed as string | undefined) ?? '0';
  if (!/^\d+$/.test(seedText) || Number(seedText) > 0xffffffff) {
    throw new UsageError(`--seed must be an integer from 0 to 4294967295, got ${seedText}`);
  }
  return { temperature, topP, seed: Number(seedText) };
}

/** A model folder opened for generation; `close` releases its files and the runner. */
export interface OpenedModel {
  name: string;
  weights: ModelWeights;
  tokenizer: ModelTokenizer;
  close(): Promise<void>;
}

/** Opens a model folder, or, through `locator`, any model reference (a hub id included). */
export async function openModel(reference: string, locator?: ModelLocator): Promise<OpenedModel> {
  const found = locator ? await locator.locate(reference) : { dir: reference, root: reference };
  const files = await modelFolder(found.dir, reference, found.root);
  try {
    const weights = await openModelWeights(files);
    const tokenizer = await ModelTokenizer.load(files);
    return { name: reference, weights, tokenizer, close: () => files.close() };
  } catch (e) {
    await files.close();
    throw e;
  }
}

/** The runner for a model with a context of `context` tokens, on the device asked for. */
export function runnerFor(
  model: OpenedModel,
  device: DeviceChoice,
  context: number,
  notice: (line: string) => void,
): Promise<ModelRunner> {
  const maxContext = Math.min(context, model.weights.config.maxPositionEmbeddings);
  if (context > maxContext) {
    throw new UsageError(
      `${model.weights.config.configFile}: the prompt and --max-new-tokens need ${context} positions; the model has ${maxContext} (max_position_embeddings)`,
    );
  }
  return createRunner(model.weights, device, { gpu: () => nodeGpu(), maxContext, notice });
}

export function chatMessages(prompt: string, system: string | undefined): ChatMessage[] {
  const messages: ChatMessage[] = [];
  if (system !== undefined && system !== '') messages.push({ role: 'system', content: system });
  messages.push({ role: 'user', content: prompt });
  return messages;
}

interface GenerateArgs extends ModelCommandOptions {
  modelDir: string;
  prompt?: string;
  promptFile?: string;
  raw: boolean;
  sampling: SamplingOptions;
}

function parseGenerateArgs(argv: string[]): GenerateArgs | 'help' {
  const parsed = parseModelCommandArgs(argv, {
    prompt: { type: 'string' },
    'prompt-file': { type: 'string' },
    raw: { type: 'boolean' },
    temperature: { type: 'string' },
    'top-p': { type: 'string' },
    seed: { type: 'string' },
  });
  if (parsed === 'help') return 'help';
  const { values: v, positionals } = parsed;
  if (positionals.length !== 1) {
    throw new UsageError(`expected one MODEL_DIR, got ${positionals.length} argument(s)`);
  }
  const prompt = v.prompt as string | undefined;
  const promptFile = v['prompt-file'] as string | undefined;
  if ((prompt === undefined) === (promptFile === undefined)) {
    throw new UsageError('give exactly one of --prompt TEXT and --prompt-file FILE');
  }
  if (v.raw && v.system !== undefined) throw new UsageError('--system needs the chat template; drop --raw');
  return modelCommandOptions(v, { maxNewTokens: DEFAULT_MAX_NEW_TOKENS }, () => ({
    modelDir: positionals[0],
    prompt,
    promptFile,
    raw: Boolean(v.raw),
    sampling: parseSampling(v),
  }));
}

/** --json's object; ids and log-probabilities exactly as generated. */
export function generationJson(promptIds: readonly number[], result: GenerateResult): string {
  return JSON.stringify({
    prompt_token_ids: promptIds,
    token_ids: result.tokenIds,
    text: result.text,
    top_logprobs: result.topLogprobs ?? [],
  });
}

export function generateMain(argv: string[]): Promise<number> {
  return runModelCommand(
    'generate',
    GENERATE_USAGE,
    parseGenerateArgs,
    argv,
    async (args, { signal, onEnd }) => {
      const { stdout, stderr } = process;
      let model: OpenedModel | undefined;
      let runner: ModelRunner | undefined;
      onEnd(async () => {
        runner?.dispose();
        await model?.close();
      });
      const prompt =
        args.promptFile !== undefined ? await readInputFile(args.promptFile, 'prompt') : args.prompt;
      const say = (line: string) => stderr.write(`l2s-merge: ${line}\n`);
      model = await openModel(args.modelDir, await cliModelLocator(args.hubFlags, signal, say));
      const tokenizer = model.tokenizer;
      const promptIds = args.raw
        ? tokenizer.encode(prompt ?? '')
        : tokenizer.encodeChat(chatMessages(prompt ?? '', args.system), { addGenerationPrompt: true });
      if (promptIds.length === 0) throw new UsageError('the prompt has no tokens');
      runner = await runnerFor(model, args.device, promptIds.length + args.maxNewTokens, say);
      const json = args.json;
      let printed = '';
      const result = await generate(runner, tokenizer, promptIds, {
        maxNewTokens: args.maxNewTokens,
        sampling: { ...args.sampling, topLogprobs: json ? JSON_TOP_LOGPROBS : undefined },
        signal,
        onToken: json
          ? undefined
          : (event) => {
              printed += event.text;
              stdout.write(event.text);
            },
      });
      if (json) {
        stdout.write(`${generationJson(promptIds, result)}\n`);
      } else {
        // A character cut off by the token budget is held back while streaming; the text has it.
        const rest = result.text.startsWith(printed) ? result.text.slice(printed.length) : '';
        stdout.write(`${rest}\n`);
        const t = result.timings;
        stderr.write(
          `l2s-merge: ${t.generatedTokens} tokens (${result.finishReason}); prefill ${t.promptTokens} tokens in ${t.prefillMs.toFixed(0)} ms, decode ${t.decodeTokensPerSecond.toFixed(1)} tokens/s on the ${runner.backend.toUpperCase()}\n`,
        );
      }
      return result.finishReason === 'abort' ? 130 : 0;
    },
  );
}
