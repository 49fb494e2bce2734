/**
 * What the user sees when the CLI fails: one line, never a Node stack trace. l2s-merge's own errors
 * (named Error subclasses) already name the file and tensor; anything else is unexpected and gets a
 * hint. `L2S_DEBUG=1` adds the stack.
 */

/** Names of JavaScript's own error classes: an error of these was not described by l2s-merge. */
const UNDESCRIBED = new Set([
  'Error',
  'TypeError',
  'RangeError',
  'ReferenceError',
  'SyntaxError',
  'EvalError',
  'URIError',
  'AggregateError',
]);

const HINT =
  'an error l2s-merge does not describe yet; rerun with L2S_DEBUG=1 for the stack trace and report it';

function debugEnabled(env: NodeJS.ProcessEnv): boolean {
  return env.L2S_DEBUG !== undefined && env.L2S_DEBUG !== '' && env.L2S_DEBUG !== '0';
}

/** The failure as one line (plus the stack, on lines of its own, when L2S_DEBUG is set). */
export function failureText(e: unknown, env: NodeJS.ProcessEnv = process.env): string {
  const err = e instanceof Error ? e : undefined;
  const message = (err?.message ?? String(e)).replace(/\s*\n\s*/g, ' ').trim();
  const name = err?.name ?? 'Error';
  const line = UNDESCRIBED.has(name)
    ? `${name === 'Error' ? '' : `${name}: `}${message} (${HINT})`
    : `${name}: ${message}`;
  return debugEnabled(env) && err?.stack ? `${line}\n${err.stack}` : line;
}

let installed = false;

/**
 * For the `l2s-merge` binary: an error that escapes `main` (an unhandled rejection, an exception in
 * a callback) is reported like any other failure, and the process exits 1.
 */
export function installFatalHandlers(): void {
  if (installed) return;
  installed = true;
  const fatal = (e: unknown) => {
    process.stderr.write(`l2s-merge: ${failureText(e)}\n`);
    process.exit(1);
  };
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', fatal);
}
