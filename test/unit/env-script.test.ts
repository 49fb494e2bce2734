/**
 * scripts/env.sh, sourced in an interactive shell and by a script, from a copy in a temporary
 * repository (its package-lock stamp matches, so it installs nothing): the interactive shell keeps its
 * options and folder and gets the exports, and a failing setup returns 1 there instead of ending the
 * shell; a script gets strict mode and the repository root, and stops when the setup fails.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let repo: string;
let elsewhere: string;

beforeAll(async () => {
  repo = await realpath(await mkdtemp(join(tmpdir(), 'l2s-env-')));
  elsewhere = await realpath(await mkdtemp(join(tmpdir(), 'l2s-env-cwd-')));
  await mkdir(join(repo, 'scripts'));
  await copyFile('scripts/env.sh', join(repo, 'scripts', 'env.sh'));
  const lock = '{"lockfileVersion": 3}\n';
  await writeFile(join(repo, 'package-lock.json'), lock);
  await mkdir(join(repo, 'node_modules'));
  await writeFile(
    join(repo, 'node_modules', '.l2s-lock.sha256'),
    `${createHash('sha256').update(lock).digest('hex')}\n`,
  );
});

afterAll(async () => {
  await rm(repo, { recursive: true, force: true });
  await rm(elsewhere, { recursive: true, force: true });
});

/** Runs `script` in bash (`-i`: an interactive shell) from `elsewhere`; stdout, and the exit code. */
function bash(args: string[], script: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(
      'bash',
      ['--norc', '--noprofile', ...args, '-c', script],
      // A browser named up front: the setup looks for none and installs none.
      { cwd: elsewhere, env: { PATH: process.env.PATH, HOME: elsewhere, L2S_CHROMIUM: '/bin/true' } },
      (error, stdout, stderr) => done({ code: error ? Number(error.code) : 0, stdout, stderr }),
    );
  });
}

// Read in the shell itself: a command substitution would not inherit errexit.
const REPORT = `echo "status=$?"; if [[ -o pipefail ]]; then p=pipefail; else p=; fi; echo "options=\${-//[^eu]/} $p"; echo "folder=$PWD"; echo "chromium=$L2S_CHROMIUM"; echo "xdg=\${XDG_RUNTIME_DIR:+set}"; echo "left=$(set | grep -c '^l2s_')"`;

function report(stdout: string): Record<string, string> {
  return Object.fromEntries(
    stdout
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

describe('scripts/env.sh', () => {
  it("sourced in an interactive shell, sets the exports and keeps the shell's options and folder", async () => {
    const r = await bash(['-i'], `source ${repo}/scripts/env.sh; ${REPORT}`);
    expect(report(r.stdout)).toEqual({
      status: '0',
      options: ' ',
      folder: elsewhere,
      chromium: '/bin/true',
      xdg: 'set',
      left: '0',
    });
  });

  it('returns 1 in an interactive shell when the setup fails, and the shell goes on as it was', async () => {
    await rm(join(repo, 'package-lock.json'), { force: true });
    try {
      const r = await bash(['-i'], `source ${repo}/scripts/env.sh; ${REPORT}`);
      expect(r.stderr).toContain('package-lock.json: No such file or directory');
      expect(report(r.stdout)).toMatchObject({
        status: '1',
        options: ' ',
        folder: elsewhere,
        xdg: '',
        left: '0',
      });
    } finally {
      await writeFile(join(repo, 'package-lock.json'), '{"lockfileVersion": 3}\n');
    }
  });

  it('sourced by a script, turns on strict mode and moves to the repository root', async () => {
    const r = await bash([], `source ${repo}/scripts/env.sh; ${REPORT}`);
    expect(report(r.stdout)).toEqual({
      status: '0',
      options: 'eu pipefail',
      folder: repo,
      chromium: '/bin/true',
      xdg: 'set',
      left: '0',
    });
  });

  it('stops a script that sources it when the setup fails', async () => {
    await rm(join(repo, 'package-lock.json'), { force: true });
    try {
      const r = await bash([], `source ${repo}/scripts/env.sh; echo "went on"`);
      expect(r.code).toBe(1);
      expect(r.stdout).not.toContain('went on');
    } finally {
      await writeFile(join(repo, 'package-lock.json'), '{"lockfileVersion": 3}\n');
    }
  });
});
