/**
 * Ctrl-C (SIGINT), SIGTERM and SIGHUP cancel the merge. The handlers stay installed until the run has
 * cleaned up: a second Ctrl-C during cleanup would otherwise kill the process with the partial
 * output still on disk. (Anything left by a SIGKILL is cleaned up by the next run: recoverOutputDir.)
 */
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** Installs the handlers; the returned function removes them. */
export function cancelOnSignals(controller: AbortController, say: (line: string) => void): () => void {
  let received = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    received++;
    if (received === 1) {
      say(`${signal}: cancelling; the partial output is removed before exit`);
      controller.abort();
    } else {
      say(`${signal}: still cleaning up the partial output; exiting as soon as it is removed`);
    }
  };
  for (const s of SIGNALS) process.on(s, onSignal);
  return () => {
    for (const s of SIGNALS) process.off(s, onSignal);
  };
}
