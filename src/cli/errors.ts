/** What every subcommand prints when it fails: one line, no stack trace. */

/** Bad command-line arguments (exit code 2, with the usage text). */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** One line for the user: the error's own message, already naming the file and tensor. */
export function oneLine(e: unknown): string {
  const err = e as Error;
  const msg = (err?.message ?? String(e)).replace(/\s*\n\s*/g, ' ');
  return err?.name && err.name !== 'Error' ? `${err.name}: ${msg}` : msg;
}
