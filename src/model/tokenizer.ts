/**
 * A model's own tokenizer and chat template, as transformers uses them:
 * - tokenizer.json through `@huggingface/tokenizers`;
 * - the chat template from tokenizer_config.json `chat_template` (a string, or a list of {name,
 *   template} where "default" is used) or chat_template.jinja (which transformers prefers when both
 *   exist), rendered with `@huggingface/jinja` (trim_blocks and lstrip_blocks, as transformers) with
 *   `messages`, `add_generation_prompt` and the special tokens (bos_token, eos_token, ...) as strings;
 * - a rendered template is encoded with add_special_tokens=false, as transformers' apply_chat_template
 *   does (the template already holds any bos token).
 */
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import type { ModelFiles } from '../engine/io';
import { jsonDepthOver, MAX_JSON_DEPTH } from '../formats/json-text';

export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';
export const CHAT_TEMPLATE_FILE = 'chat_template.jinja';

/** Largest tokenizer file we read (Qwen2's tokenizer.json is 7 MB; Llama 3's 9 MB). */
const MAX_TOKENIZER_BYTES = 200_000_000;

export class TokenizerLoadError extends Error {
  override name = 'TokenizerLoadError';
}

/** The model has no chat template, or rendering it failed. */
export class ChatTemplateError extends Error {
  override name = 'ChatTemplateError';
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string;
}

const SPECIAL_TOKEN_KEYS = [
  'bos_token',
  'eos_token',
  'unk_token',
  'pad_token',
  'sep_token',
  'cls_token',
  'mask_token',
] as const;

/** A special token in tokenizer_config.json: a string, or an AddedToken object {content, ...}. */
function tokenString(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') {
    return (v as { content: string }).content;
  }
  return undefined;
}

async function readText(files: ModelFiles, file: string): Promise<string> {
  const source = await files.open(file);
  if (source.size > MAX_TOKENIZER_BYTES) {
    throw new TokenizerLoadError(
      `${files.name}/${file}: is ${source.size} bytes, over the ${MAX_TOKENIZER_BYTES}-byte limit`,
    );
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(await source.read(0, source.size));
  } catch (e) {
    throw new TokenizerLoadError(`${files.name}/${file}: is not valid UTF-8 (${(e as Error).message})`);
  }
}

async function readJson(files: ModelFiles, file: string): Promise<Record<string, unknown>> {
  const text = await readText(files, file);
  if (jsonDepthOver(text) !== undefined) {
    throw new TokenizerLoadError(
      `${files.name}/${file}: nests JSON deeper than ${MAX_JSON_DEPTH} levels; the file is corrupt`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new TokenizerLoadError(`${files.name}/${file}: is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new TokenizerLoadError(`${files.name}/${file}: must be a JSON object`);
  }
  return json as Record<string, unknown>;
}

function pickTemplate(raw: unknown, where: string): string | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw === 'string') return raw;
  if (Array.isArray(raw)) {
    const named = raw.find(
      (t) => typeof t === 'object' && t !== null && (t as { name?: unknown }).name === 'default',
    ) as { template?: unknown } | undefined;
    if (named && typeof named.template === 'string') return named.template;
    throw new TokenizerLoadError(`${where}: chat_template is a list without a "default" template`);
  }
  throw new TokenizerLoadError(`${where}: chat_template must be a string or a list of {name, template}`);
}

/**
 * Turns a growing list of token ids into text pieces without ever splitting a UTF-8 character: the
 * text of the ids since the last emitted boundary is decoded again each step, and held back while it
 * ends in U+FFFD (an incomplete byte sequence).
 */
export class StreamingDecoder {
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;

  constructor(private readonly decodeIds: (ids: number[]) => string) {}

  /** Adds one token; returns the text it completes ('' while a character is incomplete). */
  push(id: number): string {
    this.ids.push(id);
    const prefixText = this.decodeIds(this.ids.slice(this.prefixOffset, this.readOffset));
    const newText = this.decodeIds(this.ids.slice(this.prefixOffset));
    if (newText.length > prefixText.length && !newText.endsWith('\uFFFD')) {
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      return newText.slice(prefixText.length);
    }
    return '';
  }

  /** What is held back at the end (an incomplete character decodes as U+FFFD, as transformers does). */
  flush(): string {
    const prefixText = this.decodeIds(this.ids.slice(this.prefixOffset, this.readOffset));
    const newText = this.decodeIds(this.ids.slice(this.prefixOffset));
    this.prefixOffset = this.readOffset = this.ids.length;
    return newText.length > prefixText.length ? newText.slice(prefixText.length) : '';
  }
}

export class ModelTokenizer {
  private readonly template?: Template;

  private constructor(
    readonly modelName: string,
    private readonly tokenizer: Tokenizer,
    private readonly tokenizerConfig: Record<string, unknown>,
    /** The chat template's source text, when the model has one. */
    readonly chatTemplate: string | undefined,
    private readonly templateFile: string,
  ) {
    if (chatTemplate !== undefined) {
      try {
        this.template = new Template(chatTemplate);
      } catch (e) {
        throw new ChatTemplateError(
          `${templateFile}: the chat template does not parse (${(e as Error).message})`,
        );
      }
    }
  }

  /** Reads tokenizer.json, tokenizer_config.json and chat_template.jinja (when present) of a model. */
  static async load(files: ModelFiles): Promise<ModelTokenizer> {
    const names = files.files();
    if (!names.includes(TOKENIZER_FILE)) {
      throw new TokenizerLoadError(
        `${files.name}/${TOKENIZER_FILE}: not found (the runtime needs the model's fast-tokenizer file)`,
      );
    }
    const tokenizerJson = await readJson(files, TOKENIZER_FILE);
    const config = names.includes(TOKENIZER_CONFIG_FILE) ? await readJson(files, TOKENIZER_CONFIG_FILE) : {};
    let chatTemplate: string | undefined;
    let templateFile = `${files.name}/${TOKENIZER_CONFIG_FILE}`;
    if (names.includes(CHAT_TEMPLATE_FILE)) {
      chatTemplate = await readText(files, CHAT_TEMPLATE_FILE);
      templateFile = `${files.name}/${CHAT_TEMPLATE_FILE}`;
    } else {
      chatTemplate = pickTemplate(config.chat_template, templateFile);
    }
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(tokenizerJson, config);
    } catch (e) {
      throw new TokenizerLoadError(
        `${files.name}/${TOKENIZER_FILE}: cannot be loaded (${(e as Error).message})`,
      );
    }
    return new ModelTokenizer(files.name, tokenizer, config, chatTemplate, templateFile);
  }

  /** Token ids of `text`; special tokens written in the text are recognised as tokens. */
  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    // The library rejects an empty list; the text of no tokens is ''.
    if (ids.length === 0) return '';
    return this.tokenizer.decode([...ids], {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      // As transformers: the tokenizer_config.json setting, default off.
      clean_up_tokenization_spaces: this.tokenizerConfig.clean_up_tokenization_spaces === true,
    });
  }

  streamingDecoder(options: { skipSpecialTokens?: boolean } = {}): StreamingDecoder {
    return new StreamingDecoder((ids) => this.decode(ids, options));
  }

  /** The id of a token string (e.g. "<|im_end|>"), when the vocabulary has it. */
  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  /** The chat template rendered as transformers' apply_chat_template(..., tokenize=False). */
  renderChat(messages: readonly ChatMessage[], options: { addGenerationPrompt?: boolean } = {}): string {
    if (!this.template) {
      throw new ChatTemplateError(
        `${this.templateFile}: the model has no chat_template (pass the prompt raw, e.g. --raw in the CLI)`,
      );
    }
    const context: Record<string, unknown> = {
      messages: messages.map((m) => ({ ...m })),
      add_generation_prompt: options.addGenerationPrompt ?? false,
    };
    for (const key of SPECIAL_TOKEN_KEYS) {
      const value = tokenString(this.tokenizerConfig[key]);
      if (value !== undefined) context[key] = value;
    }
    try {
      return this.template.render(context);
    } catch (e) {
      throw new ChatTemplateError(
        `${this.templateFile}: rendering the chat template failed (${(e as Error).message})`,
      );
    }
  }

  /** The token ids of a chat, as apply_chat_template(..., tokenize=True): add_special_tokens=false. */
  encodeChat(messages: readonly ChatMessage[], options: { addGenerationPrompt?: boolean } = {}): number[] {
    return this.encode(this.renderChat(messages, options), { addSpecialTokens: false });
  }
}
