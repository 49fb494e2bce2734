/**
 * Models read in place and output written straight into a folder (File System Access API).
 * Playwright cannot answer a folder picker, so the page runs with `?opfsPicker`: a pick becomes a
 * prompt for a folder of the origin private file system, where the test wrote the fixture models
 * (test/fixtures/qwen2-tiny-l2s). Everything after the pick is the code a user runs. Outputs are
 * compared byte for byte with the Node CLI's for the same recipe.
 */
import { mkdtemp, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from '@playwright/test';
import {
  cliMerge,
  downloadAll,
  expect,
  importFolder,
  libraryKeys,
  libraryNames,
  openApp,
  runMergeInPage,
  setRecipe,
  test,
} from './app-harness';
import {
  answerPicks,
  cliOutput,
  expectSameFiles,
  FIXTURES,
  forgetPermissions,
  linkFixturePair,
  permissionRequests,
  readOpfsTree,
  stubPermissions,
  TIES_PAIR,
  writeOpfsFolder,
} from './opfs-folders';

test('linked folders merge in place: nothing stored, output equal to the CLI, changes refused', async ({
  page,
}) => {
  test.setTimeout(240_000);
  const cliFiles = await cliOutput();
  answerPicks(page, ['picked/system1', 'picked/system2']);
  await openApp(page, '?opfsPicker');
  expect(await libraryKeys(page)).toEqual([]);
  await linkFixturePair(page);

  // The library stores two records (the handle and the files' sizes and mtimes), no chunk of bytes.
  const keysAfterLink = await libraryKeys(page);
  expect(keysAfterLink.length).toBe(2);
  expect(keysAfterLink.every((k) => k.startsWith('model:'))).toBe(true);
  for (const name of ['system1', 'system2']) {
    const row = page.locator(`[data-testid="library-model"][data-name="${name}"]`);
    await expect(row.getByTestId('model-kind')).toHaveText('linked');
    await expect(row.getByTestId('model-storage')).toHaveText('none (in place)');
    await expect(row.getByTestId('link-state')).toHaveAttribute('data-state', 'ready');
    await expect(row).toContainText('Qwen2ForCausalLM');
  }

  await setRecipe(page, TIES_PAIR);
  await page.getByTestId('merge-device').selectOption('cpu');
  await runMergeInPage(page);
  expect(await libraryKeys(page)).toEqual(keysAfterLink);
  const dir = await mkdtemp(join(tmpdir(), 'l2s-linked-out-'));
  expectSameFiles(await downloadAll(page, join(dir, 'first')), cliFiles, 'linked merge');

  // The second shard rewritten after linking (same bytes, new mtime): shown, and the merge refuses it.
  await writeOpfsFolder(page, 'picked/system2', join(FIXTURES, 'system2'));
  await page.evaluate(() => window.dispatchEvent(new Event('focus')));
  const system2 = page.locator('[data-testid="library-model"][data-name="system2"]');
  const state = system2.getByTestId('link-state');
  await expect(state).toHaveAttribute('data-state', 'changed');
  await expect(state).toContainText('Changed since linking');
  await expect(state).toContainText('model-00002-of-00002.safetensors was modified');
  const status = page.getByTestId('merge-status');
  const runs = Number(await status.getAttribute('data-runs'));
  await page.getByTestId('merge-run').click();
  await expect(status).toHaveAttribute('data-runs', String(runs + 1));
  await expect(status).toHaveAttribute('data-state', 'error', { timeout: 60_000 });
  await expect(status).toContainText(
    'LinkedFolderChangedError: system2: the linked folder changed since it was linked',
  );
  await expect(status).toContainText('model-00002-of-00002.safetensors was modified');
  await expect(status).toContainText('press "Re-link"');

  // Re-link records the files as they are now; the merge runs again and still equals the CLI.
  await system2.getByTestId('model-relink').click();
  await expect(state).toHaveAttribute('data-state', 'ready');
  await runMergeInPage(page);
  expectSameFiles(await downloadAll(page, join(dir, 'relinked')), cliFiles, 'merge after re-link');

  // Removing a linked model removes the link only: the folder keeps every file.
  await system2.getByTestId('model-delete').click();
  await system2.getByTestId('model-delete-confirm').click();
  await expect(system2).toHaveCount(0);
  expect((await libraryKeys(page)).length).toBe(1);
  const kept = await readOpfsTree(page, 'picked/system2');
  expect([...kept.keys()].sort()).toEqual((await readdir(join(FIXTURES, 'system2'))).sort());
});

test('output written straight into a folder equals the CLI, never over an earlier one; cancel leaves the folder as it was', async ({
  page,
}) => {
  test.setTimeout(240_000);
  const cliFiles = await cliOutput();
  answerPicks(page, ['picked/system1', 'picked/system2', 'out']);
  await openApp(page, '?opfsPicker&paceWrites=100');
  await page.evaluate(async () => {
    await (await navigator.storage.getDirectory()).getDirectoryHandle('out', { create: true });
  });
  await linkFixturePair(page);
  await setRecipe(page, TIES_PAIR);
  await page.getByTestId('merge-device').selectOption('cpu');
  await page.getByTestId('merge-output-to').selectOption('folder');
  await expect(page.getByTestId('merge-output-where')).toContainText('out/merged-model');

  const status = page.getByTestId('merge-status');
  await runMergeInPage(page);
  await expect(status).toContainText('Written to the folder out/merged-model on this computer.');
  const first = await readOpfsTree(page, 'out');
  const inFirst = new Map(
    [...first]
      .filter(([n]) => n.startsWith('merged-model/'))
      .map(([n, b]) => [n.slice('merged-model/'.length), b]),
  );
  expectSameFiles(inFirst, cliFiles, 'output in a folder');
  expect([...first.keys()].filter((n) => n.includes('.l2s-partial') || n.endsWith('.crswap'))).toEqual([]);
  // Nothing went to browser storage.
  await expect(page.getByTestId('earlier-output')).toHaveCount(0);

  // A second run takes a free name; the first output stays as it was.
  await runMergeInPage(page);
  await expect(status).toContainText('Written to the folder out/merged-model-2 on this computer.');
  const second = await readOpfsTree(page, 'out');
  for (const [name, bytes] of first) expect(second.get(name)?.equals(bytes), name).toBe(true);
  expect([...second.keys()].filter((n) => n.startsWith('merged-model-2/')).length).toBe(cliFiles.size);

  // Cancel mid-merge (writes paced): the folder is left exactly as it was before.
  const runs = Number(await status.getAttribute('data-runs'));
  await page.getByTestId('merge-run').click();
  await expect(status).toHaveAttribute('data-runs', String(runs + 1));
  await expect(status).toContainText('Merging into out/merged-model-3');
  await expect
    .poll(async () => [...(await readOpfsTree(page, 'out')).keys()].some((n) => n.includes('.l2s-partial')), {
      timeout: 30_000,
    })
    .toBe(true);
  await page.getByTestId('merge-cancel').click();
  await expect(status).toHaveAttribute('data-state', 'idle', { timeout: 30_000 });
  await expect(status).toHaveText('Merge cancelled; nothing was kept.');
  const after = await readOpfsTree(page, 'out');
  expect([...after.keys()].sort()).toEqual([...second.keys()].sort());
  for (const [name, bytes] of second) expect(after.get(name)?.equals(bytes), name).toBe(true);
});

test('a dropped folder is linked; one the browser no longer may read shows "Permission needed" until allowed, and Merge asks for it', async ({
  page,
}) => {
  // OPFS handles are always granted; here the page's queryPermission answers 'prompt' (as after a
  // reload) until requestPermission is called from the button.
  await page.addInitScript(() => {
    const proto = FileSystemHandle.prototype as unknown as {
      queryPermission(d: unknown): Promise<PermissionState>;
      requestPermission(d: unknown): Promise<PermissionState>;
    };
    const state = { granted: false, requests: 0 };
    (window as unknown as { permissionStub: typeof state }).permissionStub = state;
    proto.queryPermission = async () => (state.granted ? 'granted' : 'prompt');
    proto.requestPermission = async () => {
      state.requests++;
      state.granted = true;
      return 'granted';
    };
  });
  // A script's DataTransfer carries no folder: its items hand out the OPFS folder the test names,
  // as a dropped folder's items do through getAsFileSystemHandle.
  await page.addInitScript(() => {
    (
      DataTransferItem.prototype as unknown as { getAsFileSystemHandle(): Promise<FileSystemHandle> }
    ).getAsFileSystemHandle = async () => {
      let dir = await navigator.storage.getDirectory();
      for (const part of ['picked', 'system1']) dir = await dir.getDirectoryHandle(part);
      return dir;
    };
  });
  await openApp(page, '?opfsPicker');
  await writeOpfsFolder(page, 'picked/system1', join(FIXTURES, 'system1'));
  await expect(page.getByTestId('link-dropped')).toBeChecked();
  await page.locator('l2s-import-panel .drop').evaluate((zone) => {
    const data = new DataTransfer();
    data.items.add('system1', 'text/plain');
    zone.dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
  });
  const status = page.getByTestId('import-status');
  await expect(status).toContainText('Linked system1', { timeout: 30_000 });
  expect((await libraryKeys(page)).every((k) => k.startsWith('model:'))).toBe(true);
  const row = page.locator('[data-testid="library-model"][data-name="system1"]');
  const state = row.getByTestId('link-state');
  await expect(state).toHaveAttribute('data-state', 'permission');
  await expect(state).toContainText('Permission needed to read system1');
  await row.getByTestId('model-allow').click();
  await expect(state).toHaveAttribute('data-state', 'ready');
  const requests = () =>
    page.evaluate(
      () => (window as unknown as { permissionStub: { requests: number } }).permissionStub.requests,
    );
  expect(await requests()).toBe(1);

  // As after another reload: Merge (a click) asks for the linked models the recipe reads.
  await page.evaluate(() => {
    (window as unknown as { permissionStub: { granted: boolean } }).permissionStub.granted = false;
    window.dispatchEvent(new Event('focus'));
  });
  await expect(state).toHaveAttribute('data-state', 'permission');
  await setRecipe(
    page,
    'merge_method: linear\nmodels:\n  - model: system1\n    parameters: {weight: 1.0}\ndtype: bfloat16\n',
  );
  await page.getByTestId('merge-device').selectOption('cpu');
  await runMergeInPage(page);
  expect(await requests()).toBe(2);
  await expect(state).toHaveAttribute('data-state', 'ready');
});

test('"Save to a folder" copies an output from browser storage into a new subfolder, never over an earlier one', async ({
  page,
}) => {
  test.setTimeout(240_000);
  const cliFiles = await cliOutput();
  answerPicks(page, ['picked/system1', 'picked/system2', 'saved', 'saved']);
  await openApp(page, '?opfsPicker');
  await page.evaluate(async () => {
    await (await navigator.storage.getDirectory()).getDirectoryHandle('saved', { create: true });
  });
  await linkFixturePair(page);
  await setRecipe(page, TIES_PAIR);
  await page.getByTestId('merge-device').selectOption('cpu');
  await runMergeInPage(page);
  await expect(page.getByTestId('merge-status')).toHaveAttribute('data-state', 'done');

  const save = page.getByTestId('save-folder');
  const message = page.getByTestId('output-message');
  await save.click();
  await expect(message).toContainText(`Saved ${cliFiles.size} files to the folder saved/`);
  const first = await readOpfsTree(page, 'saved');
  const folders = new Set([...first.keys()].map((n) => n.split('/')[0]));
  expect(folders.size).toBe(1);
  const [folder] = folders;
  const saved = new Map([...first].map(([n, b]) => [n.slice(folder.length + 1), b]));
  expectSameFiles(saved, cliFiles, 'output saved to a folder');

  // Saving again makes a second subfolder; the first stays as it was.
  await save.click();
  await expect(message).toContainText(`to the folder saved/${folder}-2.`);
  const second = await readOpfsTree(page, 'saved');
  for (const [name, bytes] of first) expect(second.get(name)?.equals(bytes), name).toBe(true);
  expect([...second.keys()].filter((n) => n.startsWith(`${folder}-2/`)).length).toBe(cliFiles.size);
  expect([...second.keys()].filter((n) => n.includes('.l2s-partial') || n.endsWith('.crswap'))).toEqual([]);
});

test('Cancel pressed after a merge into a folder committed says the output was finished and kept there', async ({
  page,
}) => {
  test.setTimeout(240_000);
  const cliFiles = await cliOutput();
  answerPicks(page, ['picked/system1', 'picked/system2', 'out']);
  // The finished merge waits 60 s after its commit before it answers: Cancel lands in that moment.
  await openApp(page, '?opfsPicker&holdReply=60000');
  await page.evaluate(async () => {
    await (await navigator.storage.getDirectory()).getDirectoryHandle('out', { create: true });
  });
  await linkFixturePair(page);
  await setRecipe(page, TIES_PAIR);
  await page.getByTestId('merge-device').selectOption('cpu');
  await page.getByTestId('merge-output-to').selectOption('folder');
  const status = page.getByTestId('merge-status');
  const runs = Number(await status.getAttribute('data-runs'));
  await page.getByTestId('merge-run').click();
  await expect(status).toHaveAttribute('data-runs', String(runs + 1));
  // A file renamed while the tree is read is missing for that read: poll again.
  const finished = async () =>
    [...(await readOpfsTree(page, 'out').catch(() => new Map<string, Buffer>())).keys()]
      .filter((n) => !n.startsWith('merged-model/.'))
      .sort();
  await expect
    .poll(finished, { timeout: 60_000 })
    .toEqual([...cliFiles.keys()].map((n) => `merged-model/${n}`).sort());
  await expect(status).toHaveAttribute('data-state', 'running');
  await page.getByTestId('merge-cancel').click();
  await expect(status).toHaveAttribute('data-state', 'done', { timeout: 30_000 });
  await expect(status).toHaveText(
    'Cancel came too late: the merge had already finished, and its output was kept in the folder out/merged-model on this computer.',
  );
  const out = await readOpfsTree(page, 'out');
  const kept = new Map([...out].map(([n, b]) => [n.replace(/^merged-model\//, ''), b]));
  expectSameFiles(kept, cliFiles, 'output kept after a late Cancel');
  // Nothing is left to resume or clean up.
  await expect(page.getByTestId('merge-interrupted')).toHaveCount(0);
});

interface ReferencePrompt {
  messages: { role: string; content: string }[];
  generated_ids: number[];
}

/** What Inspect shows for a recipe's pair, as numbers (norm, TIES shares, spectrum). */
async function inspectFigures(page: Page, model: string): Promise<Record<string, string | null>> {
  const status = page.getByTestId('inspect-status');
  await page.getByTestId('inspect-run').click();
  await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 60_000 });
  await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
  const spectrum = page.getByTestId('inspect-spectrum');
  await expect(spectrum).toHaveAttribute('data-state', 'done', { timeout: 60_000 });
  await expect(spectrum).toHaveAttribute('data-model', model);
  const signs = page.getByTestId('inspect-signs');
  const norm = page.locator(`[data-testid="inspect-norm-model"][data-model="${model}"]`);
  return {
    norm: await norm.getAttribute('data-value'),
    conflicts: await signs.getAttribute('data-conflicts'),
    keptEntries: await signs.getAttribute('data-kept-entries'),
    keptEnergy: await signs.getAttribute('data-kept-energy'),
    spectrumTensor: await spectrum.getAttribute('data-tensor'),
    keptL1: await signs.getAttribute('data-kept-l1'),
    rank90: await spectrum.getAttribute('data-rank90'),
    rank99: await spectrum.getAttribute('data-rank99'),
  };
}

test('a linked model inspects and generates exactly as its stored copy; Inspect and Compare ask for permission', async ({
  page,
}) => {
  test.setTimeout(300_000);
  await stubPermissions(page, true);
  answerPicks(page, ['picked/system1', 'picked/system2']);
  await openApp(page, '?opfsPicker');
  await linkFixturePair(page);
  // The same models stored in the browser, beside the linked ones.
  await importFolder(page, join(FIXTURES, 'system1'));
  await importFolder(page, join(FIXTURES, 'system2'));
  expect((await libraryNames(page)).sort()).toEqual(['system1', 'system1-2', 'system2', 'system2-2']);
  const linkState = page
    .locator('[data-testid="library-model"][data-name="system2"]')
    .getByTestId('link-state');

  // Inspect after a "reload": the click asks, then the linked pair gives the stored pair's figures.
  await forgetPermissions(page);
  await expect(linkState).toHaveAttribute('data-state', 'permission');
  await setRecipe(page, TIES_PAIR);
  const linkedFigures = await inspectFigures(page, 'system2');
  expect(await permissionRequests(page)).toBe(1);
  await expect(linkState).toHaveAttribute('data-state', 'ready');
  expect(Number(linkedFigures.norm)).toBeGreaterThan(0);
  await setRecipe(page, TIES_PAIR.replace('system1', 'system1-2').replace('system2', 'system2-2'));
  expect(await inspectFigures(page, 'system2-2')).toEqual(linkedFigures);

  // Compare: the linked System 2 and its stored copy, greedy on the CPU, give transformers' tokens.
  const reference: ReferencePrompt = JSON.parse(
    await readFile(join(FIXTURES, 'system2/reference.json'), 'utf8'),
  ).prompts[0];
  await page.getByTestId('compare-model-0').selectOption('lib:system2');
  await page.getByTestId('compare-model-1').selectOption('lib:system2-2');
  await page.getByTestId('compare-model-2').selectOption('');
  await page.getByTestId('compare-system-prompt').fill('');
  await page.getByTestId('compare-question').fill(reference.messages[0].content);
  await page.getByTestId('compare-max-tokens').fill(String(reference.generated_ids.length));
  await page.getByTestId('compare-max-tokens').dispatchEvent('change');
  await page.getByTestId('compare-device').selectOption('cpu');
  await forgetPermissions(page);
  await expect(linkState).toHaveAttribute('data-state', 'permission');
  const status = page.getByTestId('compare-status');
  const runs = Number(await status.getAttribute('data-runs'));
  await page.getByTestId('compare-run').click();
  await expect(status).toHaveAttribute('data-runs', String(runs + 1));
  await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 120_000 });
  await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
  expect(await permissionRequests(page)).toBe(2);
  const results = page.getByTestId('compare-result');
  await expect(results).toHaveCount(2);
  for (const [i, model] of ['system2', 'system2-2'].entries()) {
    await expect(results.nth(i)).toHaveAttribute('data-model', model);
    await expect(results.nth(i)).toHaveAttribute('data-state', 'done');
    await expect(results.nth(i)).toHaveAttribute('data-token-ids', reference.generated_ids.join(','));
  }

  // Refused: nothing runs, and the status says which folder and what to press.
  await forgetPermissions(page, true);
  await page.getByTestId('compare-run').click();
  await expect(status).toHaveAttribute('data-state', 'error');
  await expect(status).toHaveText(
    'The browser did not allow reading the linked folder system2, so system2 cannot be run. ' +
      'Press "Allow reading" beside it in the library.',
  );
  await setRecipe(page, TIES_PAIR);
  await page.getByTestId('inspect-run').click();
  await expect(page.getByTestId('inspect-status')).toHaveText(
    'The browser did not allow reading the linked folder system1, so system1 cannot be inspected. ' +
      'Press "Allow reading" beside it in the library.',
  );
});

test('the lesson pictures linked models; after a "reload" it offers Allow reading instead of failing', async ({
  page,
}) => {
  test.setTimeout(120_000);
  await stubPermissions(page, true);
  answerPicks(page, ['picked/system1', 'picked/system2']);
  await openApp(page, '?opfsPicker');
  await linkFixturePair(page);
  await setRecipe(page, TIES_PAIR);
  await forgetPermissions(page);
  await page.evaluate(() => {
    location.hash = '#learn/4';
  });
  await expect(page.getByTestId('lesson')).toHaveAttribute('data-step', 'task-vector');
  const picture = page.getByTestId('lesson-picture');
  await expect(picture).toHaveAttribute('data-state', 'permission', { timeout: 30_000 });
  await expect(picture).toContainText('These pictures read the linked folders system1, system2');
  expect(await permissionRequests(page)).toBe(0);
  await picture.getByTestId('lesson-allow').click();
  await expect(picture).toHaveAttribute('data-state', 'done', { timeout: 60_000 });
  expect(await permissionRequests(page)).toBe(1);
  await expect(page.getByTestId('lesson-caption')).toContainText(/system2 moves the base by [\d.]+% overall/);
  expect(await picture.locator('circle').count()).toBe(2 * 4); // 1 model x (attention, MLP) x 4 layers
});

test('AIM calibrates on a linked base as on a stored one (output equal to the CLI), and the output joins the library', async ({
  page,
}) => {
  test.setTimeout(240_000);
  const aimTies = `${TIES_PAIR}aim:\n  omega: 0.4\n  calibration: {source: builtin, samples: 8, block_size: 64, seed: 42}\n`;
  const dir = await mkdtemp(join(tmpdir(), 'l2s-linked-aim-'));
  for (const name of ['system1', 'system2']) await symlink(join(FIXTURES, name), join(dir, name));
  await writeFile(join(dir, 'aim.yml'), aimTies);
  const cliFiles = await cliMerge(join(dir, 'aim.yml'), join(dir, 'cli-out'), ['--device', 'cpu']);
  expect(cliFiles.has('aim_statistics.safetensors')).toBe(true);

  answerPicks(page, ['picked/system1', 'picked/system2']);
  await openApp(page, '?opfsPicker');
  await linkFixturePair(page);
  await setRecipe(page, aimTies);
  await expect(page.getByTestId('recipe-aim')).toBeChecked();
  await page.getByTestId('merge-device').selectOption('cpu');
  await runMergeInPage(page);
  await expect(page.locator('.log')).toContainText(/AIM calibration: block \d+\/\d+/);
  expectSameFiles(await downloadAll(page, join(dir, 'browser-out')), cliFiles, 'AIM merge of linked models');

  // "Add to library" copies the output into browser storage: a stored model beside the linked ones.
  const keysBefore = new Set(await libraryKeys(page));
  await page.getByTestId('output-name').fill('aim-merge');
  await page.getByTestId('add-to-library').click();
  const row = page.locator('[data-testid="library-model"][data-name="aim-merge"]');
  await expect(row.getByTestId('model-kind')).toHaveText('stored', { timeout: 30_000 });
  await expect(row).toContainText('Qwen2ForCausalLM');
  const added = (await libraryKeys(page)).filter((k) => !keysBefore.has(k));
  const modelKey = added.find((k) => k.startsWith('model:'));
  expect(modelKey).toBeDefined();
  const prefix = `${modelKey?.slice('model:'.length)}/`;
  const stored = new Set(
    added.filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length, k.lastIndexOf('/'))),
  );
  // The model's files (weights, config, tokenizer) are kept; the merge's own extras need not be.
  const modelFiles = [...cliFiles.keys()].filter((n) => /^model.*\.safetensors$|^config\.json$/.test(n));
  expect(modelFiles.length).toBeGreaterThan(1);
  for (const name of modelFiles) expect(stored.has(name), name).toBe(true);
  for (const name of stored) expect(cliFiles.has(name), name).toBe(true);
});

test('a merge written to a folder is linked in the library without picking it again: merged again as the CLI does, inspected, compared', async ({
  page,
}) => {
  test.setTimeout(300_000);
  // The same two-step recipe through the CLI: the TIES merge, then a linear merge of it with system1.
  const stepTwo = `merge_method: linear
models:
  - model: merged-model
    parameters: {weight: 0.7}
  - model: system1
    parameters: {weight: 0.3}
dtype: bfloat16
`;
  const dir = await mkdtemp(join(tmpdir(), 'l2s-linked-output-'));
  for (const name of ['system1', 'system2']) await symlink(join(FIXTURES, name), join(dir, name));
  await writeFile(join(dir, 'ties.yml'), TIES_PAIR);
  await writeFile(join(dir, 'step-two.yml'), stepTwo);
  const cliFirst = await cliMerge(join(dir, 'ties.yml'), join(dir, 'merged-model'), ['--device', 'cpu']);
  const cliSecond = await cliMerge(join(dir, 'step-two.yml'), join(dir, 'cli-out'), ['--device', 'cpu']);

  // Three picks: the two models and the output folder; linking the output picks nothing more.
  answerPicks(page, ['picked/system1', 'picked/system2', 'out']);
  await openApp(page, '?opfsPicker');
  await page.evaluate(async () => {
    await (await navigator.storage.getDirectory()).getDirectoryHandle('out', { create: true });
  });
  await linkFixturePair(page);
  await setRecipe(page, TIES_PAIR);
  await page.getByTestId('merge-device').selectOption('cpu');

  // A merge into browser storage has its copy there ("Add to library"): no link is offered.
  await runMergeInPage(page);
  await expect(page.getByTestId('merge-link-output')).toHaveCount(0);
  // Kept as a stored copy, to inspect beside the linked one below.
  await page.getByTestId('output-name').fill('ties-stored');
  await page.getByTestId('add-to-library').click();
  await expect(
    page.locator('[data-testid="library-model"][data-name="ties-stored"]').getByTestId('model-kind'),
  ).toHaveText('stored', { timeout: 30_000 });

  await page.getByTestId('merge-output-to').selectOption('folder');
  await expect(page.getByTestId('merge-output-where')).toContainText('out/merged-model');
  await runMergeInPage(page);
  await expect(page.getByTestId('merge-status')).toContainText('Written to the folder out/merged-model');
  await expect(page.getByTestId('add-to-library')).toHaveCount(0);
  const written = new Map(
    [...(await readOpfsTree(page, 'out'))]
      .filter(([n]) => n.startsWith('merged-model/'))
      .map(([n, b]) => [n.slice('merged-model/'.length), b]),
  );
  expectSameFiles(written, cliFirst, 'first step in a folder');

  const keysBefore = await libraryKeys(page);
  const link = page.getByTestId('merge-link-output');
  await expect(link).toHaveText('Link it in the library');
  await link.click();
  const linkStatus = page.getByTestId('merge-link-status');
  await expect(linkStatus).toHaveAttribute('data-state', 'done', { timeout: 30_000 });
  await expect(linkStatus).toHaveText(
    'Linked out/merged-model in the library as merged-model: read in place from your folder, nothing copied into browser storage.',
  );
  await expect(link).toHaveCount(0);
  // One record (handle, sizes, mtimes) and no chunk of bytes.
  const added = (await libraryKeys(page)).filter((k) => !keysBefore.includes(k));
  expect(added.length).toBe(1);
  expect(added[0]?.startsWith('model:')).toBe(true);
  const row = page.locator('[data-testid="library-model"][data-name="merged-model"]');
  await expect(row.getByTestId('model-kind')).toHaveText('linked');
  await expect(row.getByTestId('model-storage')).toHaveText('none (in place)');
  await expect(row.getByTestId('link-state')).toHaveAttribute('data-state', 'ready');
  await expect(row).toContainText('Qwen2ForCausalLM');

  // The linked output as an input: the second step, into browser storage, equals the CLI's bytes.
  await page.getByTestId('merge-output-to').selectOption('browser');
  await setRecipe(page, stepTwo);
  await runMergeInPage(page);
  expectSameFiles(await downloadAll(page, join(dir, 'browser-out')), cliSecond, 'merge of the linked output');

  // Inspected, it gives the figures of the same merge's stored copy; Compare offers it.
  await setRecipe(page, TIES_PAIR.replace('system2', 'merged-model'));
  const linkedFigures = await inspectFigures(page, 'merged-model');
  expect(Number(linkedFigures.norm)).toBeGreaterThan(0);
  await setRecipe(page, TIES_PAIR.replace('system2', 'ties-stored'));
  expect(await inspectFigures(page, 'ties-stored')).toEqual(linkedFigures);
  await expect(page.getByTestId('compare-model-0').locator('option[value="lib:merged-model"]')).toHaveCount(
    1,
  );

  // An output folder gone before it is linked: a clear message, and nothing is added.
  await page.getByTestId('merge-output-to').selectOption('folder');
  await setRecipe(page, TIES_PAIR);
  await runMergeInPage(page);
  await expect(page.getByTestId('merge-status')).toContainText('Written to the folder out/merged-model-2');
  await page.evaluate(async () => {
    const out = await (await navigator.storage.getDirectory()).getDirectoryHandle('out');
    await out.removeEntry('merged-model-2', { recursive: true });
  });
  const keysBeforeGone = await libraryKeys(page);
  await page.getByTestId('merge-link-output').click();
  await expect(linkStatus).toHaveAttribute('data-state', 'error');
  await expect(linkStatus).toHaveText(
    'OutputLinkError: out/merged-model-2 is no longer there (moved, renamed or deleted), so it was not linked. ' +
      'Link the folder where it is now with "Link a folder…".',
  );
  expect(await libraryKeys(page)).toEqual(keysBeforeGone);
});
