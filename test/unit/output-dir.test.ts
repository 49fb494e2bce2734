/** The output folder's commit when a rename fails, and the clean-up of killed runs' leftovers. */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

/** Renames whose (from, to) match are made to fail once with `code`. */
const failures: Array<{ match: (from: string, to: string) => boolean; code: string }> = [];

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  return {
    ...real,
    rename: async (from: string, to: string) => {
      const i = failures.findIndex((f) => f.match(String(from), String(to)));
      if (i >= 0) {
        const [f] = failures.splice(i, 1);
        throw Object.assign(new Error(`${f.code}: injected, rename '${from}' -> '${to}'`), { code: f.code });
      }
      return real.rename(from, to);
    },
  };
});

const { outputDir, recoverOutputDir } = await import('../../src/node/output-dir');

let dir: string;
beforeEach(async () => {
  dir = await fs.mkdtemp(join(tmpdir(), 'l2s-outdir-'));
});
afterEach(async () => {
  failures.length = 0;
  await fs.rm(dir, { recursive: true, force: true });
});

async function writeOutput(
  out: string,
  marker: string,
  force = false,
): Promise<ReturnType<typeof outputDir>> {
  const target = await outputDir(out, { force });
  for (const [name, text] of [
    ['model.safetensors', marker],
    ['mergekit_config.yml', 'merge_method: linear\n'],
  ]) {
    const sink = await target.createFile(name);
    await sink.write(new TextEncoder().encode(text));
    await sink.close();
  }
  return target;
}

const siblings = async () => (await fs.readdir(dir)).sort();

describe('the --force swap', () => {
  it('puts the earlier output back when the new one cannot be moved into place', async () => {
    const out = join(dir, 'out');
    await (await writeOutput(out, 'earlier')).commit();
    const next = await writeOutput(out, 'new', true);
    failures.push({ match: (from, to) => from.includes('.out.partial-') && to === out, code: 'EIO' });
    await expect(next.commit()).rejects.toThrow(
      `${out}: cannot move the new output into place (an input/output error from the disk (EIO)); the earlier output is back in place`,
    );
    expect(await fs.readFile(join(out, 'model.safetensors'), 'utf8')).toBe('earlier');
    await next.abort();
    expect(await siblings()).toEqual(['out']);
  });

  it('leaves the earlier output for the next run when putting it back fails too', async () => {
    const out = join(dir, 'out');
    await (await writeOutput(out, 'earlier')).commit();
    const next = await writeOutput(out, 'new', true);
    failures.push({ match: (from, to) => from.includes('.out.partial-') && to === out, code: 'EIO' });
    failures.push({ match: (from, to) => from.includes('.out.old-') && to === out, code: 'EIO' });
    await expect(next.commit()).rejects.toThrow(
      /the earlier output is in .*\.out\.old-\d+-[0-9a-f]+, and the next run for/,
    );
    await next.abort();
    // The next run: the old folder's pid is this process, so pretend it came from a dead one.
    const [old] = (await siblings()).filter((e) => e.startsWith('.out.old-'));
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    await fs.rename(join(dir, old), join(dir, old.replace(/old-\d+-/, `old-${dead}-`)));
    const log: string[] = [];
    await recoverOutputDir(out, (l) => log.push(l));
    expect(log).toEqual([
      expect.stringMatching(
        /^restored .*out from .*\.out\.old-\d+-[0-9a-f]+, where an interrupted --force run had moved the earlier output$/,
      ),
    ]);
    expect(await fs.readFile(join(out, 'model.safetensors'), 'utf8')).toBe('earlier');
    expect(await siblings()).toEqual(['out']);
  });

  it('leaves OUT_DIR untouched when it cannot be moved aside', async () => {
    const out = join(dir, 'out');
    await (await writeOutput(out, 'earlier')).commit();
    const next = await writeOutput(out, 'new', true);
    failures.push({ match: (from) => from === out, code: 'EBUSY' });
    await expect(next.commit()).rejects.toThrow(
      `${out}: cannot move the earlier output aside (it is busy (EBUSY)); it is unchanged`,
    );
    await next.abort();
    expect(await fs.readFile(join(out, 'model.safetensors'), 'utf8')).toBe('earlier');
    expect(await siblings()).toEqual(['out']);
  });
});

describe('leftovers of killed runs', () => {
  it("removes an .old folder whose replacement is in place, and leaves a live run's folders alone", async () => {
    const out = join(dir, 'out');
    await (await writeOutput(out, 'current')).commit();
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    await fs.mkdir(join(dir, `.out.old-${dead}-0a0b0c0d`));
    // This process is alive: its partial folder belongs to a run still going.
    await fs.mkdir(join(dir, `.out.partial-${process.pid}-01020304`));
    // Another OUT_DIR's leftovers are not ours to touch.
    await fs.mkdir(join(dir, `.other.partial-${dead}-01020304`));
    const log: string[] = [];
    await recoverOutputDir(out, (l) => log.push(l));
    expect(log.sort()).toEqual([
      `left ${join(dir, `.out.partial-${process.pid}-01020304`)} alone: the run that is writing it (process ${process.pid}) is still going`,
      `removed ${join(dir, `.out.old-${dead}-0a0b0c0d`)}, an earlier output that an interrupted --force run had already replaced`,
    ]);
    expect(await siblings()).toEqual([
      `.other.partial-${dead}-01020304`,
      `.out.partial-${process.pid}-01020304`,
      'out',
    ]);
    expect(await fs.readFile(join(out, 'model.safetensors'), 'utf8')).toBe('current');
  });
});
