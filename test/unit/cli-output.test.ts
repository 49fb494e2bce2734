/** What the CLI prints: one-line failures (no stack unless asked) and throttled progress in logs. */
import { describe, expect, it } from 'vitest';
import { failureText } from '../../src/cli/fatal';
import { progressReporter } from '../../src/cli/progress';
import type { MergeProgress } from '../../src/engine/merge';

describe('failure lines', () => {
  it("prints l2s-merge's own errors as name and message, on one line", () => {
    const e = new Error('a.yml:3: models[0]: bad\nsecond line');
    e.name = 'RecipeError';
    expect(failureText(e, {})).toBe('RecipeError: a.yml:3: models[0]: bad second line');
  });

  it('adds a hint and no stack to an error l2s-merge does not describe, the stack only with L2S_DEBUG', () => {
    const e = new TypeError("Cannot read properties of undefined (reading 'x')");
    const plain = failureText(e, {});
    expect(plain).toBe(
      "TypeError: Cannot read properties of undefined (reading 'x') (an error l2s-merge does not describe yet; rerun with L2S_DEBUG=1 for the stack trace and report it)",
    );
    expect(plain).not.toContain('\n');
    expect(failureText(e, { L2S_DEBUG: '0' })).toBe(plain);
    const debug = failureText(e, { L2S_DEBUG: '1' });
    expect(debug.split('\n')[0]).toBe(plain);
    expect(debug).toMatch(/\n\s+at /);
    expect(failureText('a thrown string', {})).toMatch(/^a thrown string \(an error l2s-merge/);
  });
});

describe('progress on a non-terminal stderr', () => {
  const progress = (tensorsDone: number, inputBytesDone: number): MergeProgress => ({
    tensorsDone,
    tensorsTotal: 3,
    bytesDone: 0,
    bytesTotal: 100,
    inputBytesDone,
    inputBytesTotal: 1000,
    elapsedMs: 1,
  });

  it('is throttled from the first tensor on: a streamed embedding reports every chunk', () => {
    const lines: string[] = [];
    const report = progressReporter(
      { isTTY: false, columns: 80, write: (s: string) => lines.push(s) > 0 },
      60_000,
    );
    // The first tensor, streamed in 130 chunks, then the rest.
    for (let chunk = 0; chunk <= 130; chunk++) report(progress(0, chunk));
    report(progress(1, 500));
    report(progress(2, 800));
    expect(lines).toHaveLength(1);
    report(progress(3, 1000));
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/^\[#+\] 100\.0% 3\/3 tensors/);
  });
});
