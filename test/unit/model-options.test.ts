/** The options table and checks `generate` and `eval` share (src/cli/model-options.ts). */
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/cli/errors';
import { modelCommandOptions, parseModelCommandArgs } from '../../src/cli/model-options';

const own = { prompt: { type: 'string' }, quiet: { type: 'boolean' } } as const;

function parsed(argv: string[]) {
  const p = parseModelCommandArgs(argv, own);
  if (p === 'help') throw new Error('unexpected help');
  return p;
}

describe('shared model subcommand options', () => {
  it('parses the shared flags next to a subcommand’s own, with positionals', () => {
    const { values, positionals } = parsed([
      'a',
      '--prompt',
      'hi',
      '--max-new-tokens',
      '7',
      '--system',
      '',
      '--device',
      'cpu',
      '--json',
      '--offline',
      '--hub-endpoint',
      'http://127.0.0.1:1',
      'b',
    ]);
    expect(positionals).toEqual(['a', 'b']);
    expect(values.prompt).toBe('hi');
    const options = modelCommandOptions(values, { maxNewTokens: 256 }, () => ({ prompt: values.prompt }));
    expect(options).toEqual({
      prompt: 'hi',
      maxNewTokens: 7,
      system: '',
      device: 'cpu',
      json: true,
      hubFlags: { 'hub-endpoint': 'http://127.0.0.1:1', offline: true },
    });
  });

  it('takes each subcommand’s defaults when the flags are absent', () => {
    const options = modelCommandOptions(parsed(['m']).values, { maxNewTokens: 1024 }, () => ({}));
    expect(options).toEqual({
      maxNewTokens: 1024,
      system: undefined,
      device: 'auto',
      json: false,
      hubFlags: { 'hub-endpoint': undefined, offline: undefined },
    });
  });

  it('answers help for -h and --help, and a UsageError for an unknown flag or a missing value', () => {
    expect(parseModelCommandArgs(['-h'], own)).toBe('help');
    expect(parseModelCommandArgs(['m', '--help'], own)).toBe('help');
    expect(() => parseModelCommandArgs(['--temperature', '1'], own)).toThrow(UsageError);
    expect(() => parseModelCommandArgs(['--temperature', '1'], own)).toThrow(
      "Unknown option '--temperature'",
    );
    expect(() => parseModelCommandArgs(['--system'], own)).toThrow(
      "Option '--system <value>' argument missing",
    );
  });

  it('reports --max-new-tokens first, then the subcommand’s own flags, then --device', () => {
    const check = (argv: string[]) => () =>
      modelCommandOptions(parsed(argv).values, { maxNewTokens: 1 }, () => {
        throw new UsageError('own flag');
      });
    expect(check(['--max-new-tokens', '0', '--device', 'tpu'])).toThrow(
      '--max-new-tokens must be a positive integer, got 0',
    );
    expect(check(['--max-new-tokens', '1.5'])).toThrow(
      '--max-new-tokens must be a positive integer, got 1.5',
    );
    expect(check(['--device', 'tpu'])).toThrow('own flag');
    expect(() =>
      modelCommandOptions(parsed(['--device', 'tpu']).values, { maxNewTokens: 1 }, () => ({})),
    ).toThrow('--device must be auto, cpu or gpu, got tpu');
  });
});
