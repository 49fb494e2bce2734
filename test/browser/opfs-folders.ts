/**
 * Folders of the origin private file system standing in for folders on the user's computer, for
 * the browser tests of linked models and outputs written to a folder (`?opfsPicker`: a folder pick
 * becomes a prompt for an OPFS path, answered by `answerPicks`), and the fixture pair's TIES merge
 * by the CLI to compare with.
 */
import { mkdtemp, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from '@playwright/test';
import { cliMerge, expect, ROOT } from './app-harness';

export const FIXTURES = join(ROOT, 'test/fixtures/qwen2-tiny-l2s');

export const TIES_PAIR = `merge_method: ties
base_model: system1
models:
  - model: system2
    parameters: {weight: 1.0, density: 0.2}
parameters: {lambda: 1.0}
dtype: bfloat16
`;

/** Copies a fixture folder's files into the origin private file system at `path`. */
export async function writeOpfsFolder(page: Page, path: string, folder: string): Promise<void> {
  const files: { name: string; base64: string }[] = [];
  for (const name of (await readdir(folder)).sort()) {
    files.push({ name, base64: (await readFile(join(folder, name))).toString('base64') });
  }
  await page.evaluate(
    async ({ path, files }) => {
      let dir = await navigator.storage.getDirectory();
      for (const part of path.split('/')) dir = await dir.getDirectoryHandle(part, { create: true });
      for (const f of files) {
        const bytes = Uint8Array.from(atob(f.base64), (c) => c.charCodeAt(0));
        const writable = await (await dir.getFileHandle(f.name, { create: true })).createWritable();
        await writable.write(bytes);
        await writable.close();
      }
    },
    { path, files },
  );
}

/** Every file under `path` in the origin private file system (relative names), with its bytes. */
export async function readOpfsTree(page: Page, path: string): Promise<Map<string, Buffer>> {
  const entries = await page.evaluate(async (path) => {
    let dir = await navigator.storage.getDirectory();
    for (const part of path.split('/')) dir = await dir.getDirectoryHandle(part, { create: true });
    const out: { name: string; base64: string }[] = [];
    const walk = async (d: FileSystemDirectoryHandle, prefix: string) => {
      for await (const entry of (d as unknown as { values(): AsyncIterable<FileSystemHandle> }).values()) {
        if (entry.kind === 'directory') {
          await walk(entry as FileSystemDirectoryHandle, `${prefix}${entry.name}/`);
          continue;
        }
        const bytes = new Uint8Array(await (await (entry as FileSystemFileHandle).getFile()).arrayBuffer());
        let text = '';
        for (let i = 0; i < bytes.length; i += 0x8000)
          text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
        out.push({ name: prefix + entry.name, base64: btoa(text) });
      }
    };
    await walk(dir, '');
    return out;
  }, path);
  return new Map(entries.map((e) => [e.name, Buffer.from(e.base64, 'base64')]));
}

/** Answers the page's test folder picker (a prompt) with the given OPFS paths, in order. */
export function answerPicks(page: Page, paths: string[]): void {
  page.on('dialog', async (dialog) => {
    const path = paths.shift();
    if (dialog.type() !== 'prompt' || path === undefined) await dialog.dismiss();
    else await dialog.accept(path);
  });
}

/**
 * OPFS handles are always granted; with this stub the page's queryPermission answers 'prompt' (as
 * after a reload) while `granted` is false, and requestPermission grants unless `refuse` is set.
 * Workers keep the real calls: only the page can ask, which is what these tests check.
 */
export async function stubPermissions(page: Page, granted: boolean): Promise<void> {
  await page.addInitScript((granted) => {
    const proto = FileSystemHandle.prototype as unknown as {
      queryPermission(d: unknown): Promise<PermissionState>;
      requestPermission(d: unknown): Promise<PermissionState>;
    };
    const state = { granted, refuse: false, requests: 0 };
    (window as unknown as { permissionStub: typeof state }).permissionStub = state;
    proto.queryPermission = async () => (state.granted ? 'granted' : 'prompt');
    proto.requestPermission = async () => {
      state.requests++;
      if (state.refuse) return 'denied';
      state.granted = true;
      return 'granted';
    };
  }, granted);
}

/** As after a reload: the page's permission on linked folders is gone (`refuse`: and will be refused). */
export async function forgetPermissions(page: Page, refuse = false): Promise<void> {
  await page.evaluate((refuse) => {
    const stub = (window as unknown as { permissionStub: { granted: boolean; refuse: boolean } })
      .permissionStub;
    stub.granted = false;
    stub.refuse = refuse;
    window.dispatchEvent(new Event('focus'));
  }, refuse);
}

export async function permissionRequests(page: Page): Promise<number> {
  return page.evaluate(
    () => (window as unknown as { permissionStub: { requests: number } }).permissionStub.requests,
  );
}

export async function linkFolder(page: Page, name: string): Promise<void> {
  await page.getByTestId('link-folder').click();
  const status = page.getByTestId('import-status');
  await expect(status).toContainText(`Linked ${name}`, { timeout: 30_000 });
  await expect(status).toHaveAttribute('data-state', 'done');
}

/** The fixture pair beside the recipe, as the CLI resolves them; returns the CLI's output. */
export async function cliOutput(): Promise<Map<string, Buffer>> {
  const dir = await mkdtemp(join(tmpdir(), 'l2s-linked-'));
  for (const name of ['system1', 'system2']) await symlink(join(FIXTURES, name), join(dir, name));
  await writeFile(join(dir, 'ties.yml'), TIES_PAIR);
  return cliMerge(join(dir, 'ties.yml'), join(dir, 'cli-out'), ['--device', 'cpu']);
}

export function expectSameFiles(
  actual: Map<string, Buffer>,
  expected: Map<string, Buffer>,
  what: string,
): void {
  expect([...actual.keys()].sort()).toEqual([...expected.keys()].sort());
  for (const [name, bytes] of expected) {
    expect(actual.get(name)?.equals(bytes), `${what}: ${name} differs from the CLI's`).toBe(true);
  }
}

export async function linkFixturePair(page: Page): Promise<void> {
  await writeOpfsFolder(page, 'picked/system1', join(FIXTURES, 'system1'));
  await writeOpfsFolder(page, 'picked/system2', join(FIXTURES, 'system2'));
  await linkFolder(page, 'system1');
  await linkFolder(page, 'system2');
}
