/**
 * The options `generate` and `eval` share: --max-new-tokens, --system, --device, --json, the hub
 * flags and -h: one parseArgs table, one set of checks, one model locator. Each subcommand adds its
 * own options to the table and keeps its own usage text and defaults.
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';
import type { DeviceChoice } from '../gpu/select-backend';
import { folderResolver, type ModelLocator } from '../node/model-folder';
import { UsageError } from './errors';
import { cliHubSettings, HUB_OPTIONS } from './hub-options';
import { downloadReporter } from './progress';

export type FlagValues = Record<string, string | boolean | undefined>;

type OptionsTable = NonNullable<ParseArgsConfig['options']>;

export const MODEL_OPTIONS = {
  'max-new-tokens': { type: 'string' },
  system: { type: 'string' },
  device: { type: 'string' },
  json: { type: 'boolean' },
  ...HUB_OPTIONS,
  help: { type: 'boolean', short: 'h' },
} as const satisfies OptionsTable;

export interface ModelCommandOptions {
  maxNewTokens: number;
  /** --system as given; undefined when absent (each subcommand has its own default). */
  system?: string;
  device: DeviceChoice;
  json: boolean;
  /** --hub-endpoint and --offline, for cliModelLocator. */
  hubFlags: FlagValues;
}

export function parseDevice(text: string | undefined): DeviceChoice {
  const device = text ?? 'auto';
  if (device !== 'auto' && device !== 'cpu' && device !== 'gpu') {
    throw new UsageError(`--device must be auto, cpu or gpu, got ${device}`);
  }
  return device;
}

export function parseCount(text: string | undefined, flag: string, fallback: number): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < 1 || !Number.isSafeInteger(Number(text))) {
    throw new UsageError(`${flag} must be a positive integer, got ${text}`);
  }
  return Number(text);
}

/**
 * Parses a subcommand's arguments: the shared options plus `own`, positionals allowed. 'help' for
 * -h/--help; an unknown or malformed flag is a UsageError with parseArgs' message.
 */
export function parseModelCommandArgs(
  argv: string[],
  own: OptionsTable,
): { values: FlagValues; positionals: string[] } | 'help' {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { ...own, ...MODEL_OPTIONS } });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const values = parsed.values as FlagValues;
  if (values.help) return 'help';
  return { values, positionals: parsed.positionals };
}

/**
 * The shared options' values, checked, with the subcommand's own flag values from `own`: first
 * --max-new-tokens, then `own` (generate's sampling flags), then --device, the order in which the
 * subcommands have always reported a bad flag. Called after the subcommand's checks of its
 * positionals and required flags, so those are reported first.
 */
export function modelCommandOptions<T extends object>(
  values: FlagValues,
  defaults: { maxNewTokens: number },
  own: () => T,
): ModelCommandOptions & T {
  const maxNewTokens = parseCount(
    values['max-new-tokens'] as string | undefined,
    '--max-new-tokens',
    defaults.maxNewTokens,
  );
  const ownValues = own();
  return {
    ...ownValues,
    maxNewTokens,
    system: values.system as string | undefined,
    device: parseDevice(values.device as string | undefined),
    json: Boolean(values.json),
    hubFlags: { 'hub-endpoint': values['hub-endpoint'], offline: values.offline },
  };
}

/** A locator for the subcommands' model references: folders relative to the current folder, hub ids. */
export async function cliModelLocator(
  hubFlags: FlagValues,
  signal: AbortSignal,
  say: (line: string) => void,
  quiet = false,
): Promise<ModelLocator> {
  return folderResolver(process.cwd(), {
    settings: await cliHubSettings(hubFlags),
    options: { signal, onProgress: quiet ? undefined : downloadReporter(process.stderr), notice: say },
  });
}
