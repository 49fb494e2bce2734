/**
 * The frame of the subcommands that run a model (`generate`, `eval`): the arguments parsed (a bad
 * one exits 2 with the usage), Ctrl-C and SIGTERM cancel, a failure is one line naming the command
 * (exit 2 for a usage error, 130 when cancelled, else 1), and what the command opened is closed
 * however it ends.
 */
import { readFile } from 'node:fs/promises';
import { fsErrorText } from '../node/fs-errors';
import { InputFileError, UsageError } from './errors';
import { failureText } from './fatal';

export interface CommandScope {
  /** Aborted by SIGINT or SIGTERM. */
  readonly signal: AbortSignal;
  /** Runs `close` when the command ends, however it ends (the last registered first). */
  onEnd(close: () => unknown): void;
}

export async function runModelCommand<A>(
  name: string,
  usage: string,
  parse: (argv: string[]) => A | 'help',
  argv: string[],
  body: (args: A, scope: CommandScope) => Promise<number>,
): Promise<number> {
  const { stdout, stderr } = process;
  let args: A | 'help';
  try {
    args = parse(argv);
  } catch (e) {
    stderr.write(`l2s-merge ${name}: ${(e as Error).message}\n${usage}`);
    return 2;
  }
  if (args === 'help') {
    stdout.write(usage);
    return 0;
  }
  const controller = new AbortController();
  const onSignal = () => controller.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const closers: Array<() => unknown> = [];
  try {
    return await body(args, { signal: controller.signal, onEnd: (close) => closers.push(close) });
  } catch (e) {
    if ((e as Error).name === 'AbortError') {
      stderr.write(`l2s-merge ${name}: cancelled\n`);
      return 130;
    }
    stderr.write(`l2s-merge ${name}: ${failureText(e)}\n`);
    return e instanceof UsageError ? 2 : 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    for (const close of closers.reverse()) await close();
  }
}

/** A text file the command reads (`what`: "prompt", "questions"), or an InputFileError naming it. */
export async function readInputFile(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new InputFileError(`${path}: cannot read the ${what} (${fsErrorText(e)})`);
  }
}
