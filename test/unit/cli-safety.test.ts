/**
 * The CLI against faults and hostile input, run as the real binary on generated tiny models: nothing
 * of the user's is lost, leftovers of killed runs are cleaned up, and every failure is one line that
 * names the file (and tensor).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import {
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  symlink,
  truncate,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTinyModel, TINY_TRIO } from '../../src/demo/tiny-qwen';
import { type BinResult, buildCliBin, messageLines, runBin } from '../fixtures/cli-bin';
import { editModel } from '../fixtures/edit-model';
import { tinyTrioDir, writeModel } from '../fixtures/tiny';

const RECIPE = `merge_method: task_arithmetic
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-system2
    parameters: {weight: 0.7}
dtype: bfloat16
`;

let bin: string;
let disposeBin: () => Promise<void>;
let dir: string;

beforeAll(async () => {
  ({ bin, dispose: disposeBin } = await buildCliBin());
  dir = await tinyTrioDir();
  await writeFile(join(dir, 'r.yml'), RECIPE);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  await disposeBin();
});

function l2s(args: string[], options: Parameters<typeof runBin>[2] = {}): Promise<BinResult> {
  return runBin(bin, [...args, '--device', 'cpu'], options);
}

/** A failed run: exit 1, and exactly one message line, with no stack trace. */
function expectOneLineFailure(r: BinResult, pattern: RegExp | string): string {
  expect(r.timedOut, 'the CLI hung').toBe(false);
  expect(r.code, r.stderr).toBe(1);
  const lines = messageLines(r.stderr).filter((l) => !l.includes(': warning: '));
  expect(lines, r.stderr).toHaveLength(1);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  if (typeof pattern === 'string') expect(lines[0]).toContain(pattern);
  else expect(lines[0]).toMatch(pattern);
  return lines[0];
}

async function snapshot(folder: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const f of (await readdir(folder)).sort()) {
    const buf = await readFile(join(folder, f)).catch(() => undefined);
    out.set(f, buf ? buf.toString('base64') : 'folder');
  }
  return out;
}

async function leftovers(folder: string): Promise<string[]> {
  return (await readdir(folder)).filter((f) => /\.(partial|old)-\d+-/.test(f));
}

/** A fresh folder with the base and the reasoner, and `r.yml` merging them. */
async function pairDir(prefix: string, recipe = RECIPE): Promise<string> {
  const d = await mkdtemp(join(dir, `${prefix}-`));
  await writeModel(d, await makeTinyModel(TINY_TRIO[0]));
  await writeModel(d, await makeTinyModel(TINY_TRIO[2]));
  await writeFile(join(d, 'r.yml'), recipe);
  return d;
}

/** The pid of a process that has exited. */
function deadPid(): number {
  return spawnSync(process.execPath, ['-e', '0']).pid!;
}

describe('--force replaces only an earlier output (item 1)', () => {
  it('refuses OUT_DIR "" (an unset variable) and leaves the current folder alone', async () => {
    const before = await snapshot(dir);
    const r = await l2s(['r.yml', '', '--force'], { cwd: dir });
    expectOneLineFailure(
      r,
      'OutputDirError: "": refusing it as the output folder: OUT_DIR is an empty string',
    );
    expect(await snapshot(dir)).toEqual(before);
  });

  it('refuses the current folder, /, the home folder and a folder holding the inputs', async () => {
    const before = await snapshot(dir);
    expectOneLineFailure(
      await l2s(['r.yml', '.', '--force'], { cwd: dir }),
      /^l2s-merge: OutputDirError: \.: .*is the current folder$/,
    );
    expectOneLineFailure(await l2s([join(dir, 'r.yml'), '/', '--force']), 'is the root folder');
    const home = await mkdtemp(join(tmpdir(), 'l2s-home-'));
    await writeFile(join(home, '.bashrc'), 'mine');
    expectOneLineFailure(
      await l2s([join(dir, 'r.yml'), home, '--force'], { env: { HOME: home } }),
      'is your home folder',
    );
    expect(await readFile(join(home, '.bashrc'), 'utf8')).toBe('mine');
    await rm(home, { recursive: true });
    expectOneLineFailure(
      await l2s([join(dir, 'r.yml'), dir, '--force'], { cwd: tmpdir() }),
      /contains an input model/,
    );
    expect(await snapshot(dir)).toEqual(before);
  });

  it('refuses an input model folder and the recipe folder, with or without --force', async () => {
    const model = join(dir, 'tiny-qwen-system2');
    const before = await snapshot(model);
    expectOneLineFailure(
      await l2s([join(dir, 'r.yml'), model, '--force'], { cwd: tmpdir() }),
      `tiny-qwen-system2: refusing it as the output folder: is the folder of an input model`,
    );
    expect(await snapshot(model)).toEqual(before);
    const recipes = join(dir, 'recipes');
    await mkdir(recipes, { recursive: true });
    await writeFile(join(recipes, 'r.yml'), RECIPE.replace(/tiny-qwen/g, '../tiny-qwen'));
    await writeFile(join(recipes, 'notes.txt'), 'mine');
    expectOneLineFailure(
      await l2s([join(recipes, 'r.yml'), recipes, '--force'], { cwd: tmpdir() }),
      'is the folder of the recipe',
    );
    expect(await readFile(join(recipes, 'notes.txt'), 'utf8')).toBe('mine');
  });

  it('refuses a folder holding files l2s-merge does not write, and replaces an earlier output', async () => {
    const out = join(dir, 'out-force');
    await mkdir(out);
    await writeFile(join(out, 'keep.txt'), 'mine');
    await writeFile(join(out, 'model.safetensors'), 'x');
    await writeFile(join(out, 'mergekit_config.yml'), 'x');
    const r = await l2s([join(dir, 'r.yml'), out, '--force']);
    expectOneLineFailure(
      r,
      `${out}: --force replaces only a folder that l2s-merge wrote, and it holds keep.txt, which l2s-merge does not write; move those files away or choose another OUT_DIR`,
    );
    expect(await readFile(join(out, 'keep.txt'), 'utf8')).toBe('mine');
    await rm(join(out, 'keep.txt'));
    const ok = await l2s([join(dir, 'r.yml'), out, '--force', '--quiet']);
    expect(ok.code, ok.stderr).toBe(0);
    expect((await readFile(join(out, 'model.safetensors'))).byteLength).toBeGreaterThan(1000);
    const again = await l2s([join(dir, 'r.yml'), out, '--force', '--quiet']);
    expect(again.code, again.stderr).toBe(0);
    expect(await leftovers(dir)).toEqual([]);
  });

  it('refuses two spellings of one folder', async () => {
    const d = await pairDir('alias');
    await symlink(join(d, 'tiny-qwen-system2'), join(d, 'reasoner'));
    await writeFile(
      join(d, 'two.yml'),
      `${RECIPE}`.replace('models:\n', 'models:\n  - model: reasoner\n    parameters: {weight: 0.2}\n'),
    );
    expectOneLineFailure(
      await l2s([join(d, 'two.yml'), join(d, 'out')]),
      /DuplicateModelError: .*two\.yml: (reasoner and tiny-qwen-system2|tiny-qwen-system2 and reasoner) are the same folder/,
    );
  });
});

describe('crash leftovers (items 2 and 3)', () => {
  it('puts back an earlier output that a killed --force run had moved aside', async () => {
    const d = await pairDir('swap');
    const out = join(d, 'out');
    expect((await l2s(['r.yml', out, '--quiet'], { cwd: d })).code).toBe(0);
    const earlier = await snapshot(out);
    // The state a run killed between its two renames leaves: OUT_DIR moved aside, the new one unmoved.
    const pid = deadPid();
    await rename(out, join(d, `.out.old-${pid}-0badc0de`));
    await mkdir(join(d, `.out.partial-${pid}-00c0ffee`));
    await writeFile(join(d, `.out.partial-${pid}-00c0ffee`, 'model.safetensors'), 'half');
    // A run that fails on its own (a missing model) still cleans up first.
    await writeFile(join(d, 'broken.yml'), RECIPE.replace('tiny-qwen-system2', 'no-such-model'));
    const r = await l2s(['broken.yml', 'out', '--force'], { cwd: d });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `l2s-merge: restored out from ${join(d, `.out.old-${pid}-0badc0de`)}, where an interrupted --force run had moved the earlier output`,
    );
    expect(r.stderr).toContain(
      `l2s-merge: removed ${join(d, `.out.partial-${pid}-00c0ffee`)}, the unfinished output of an interrupted run`,
    );
    expect(r.stderr).toContain('no-such-model');
    expect(await snapshot(out)).toEqual(earlier);
    expect(await leftovers(d)).toEqual([]);
  });

  /** Shapes large enough that a TIES merge takes about a second here, so signals land mid-run. */
  async function slowPair(prefix: string): Promise<string> {
    const d = await mkdtemp(join(dir, `${prefix}-`));
    const shape = {
      hiddenSize: 128,
      intermediateSize: 512,
      layers: 4,
      heads: 4,
      kvHeads: 2,
      vocabSize: 1024,
    };
    await writeModel(d, await makeTinyModel(TINY_TRIO[0], shape));
    await writeModel(d, await makeTinyModel(TINY_TRIO[2], shape));
    await writeFile(
      join(d, 'r.yml'),
      RECIPE.replace('task_arithmetic', 'ties').replace('weight: 0.7', 'weight: 0.7, density: 0.3'),
    );
    return d;
  }

  it('removes the .partial folder of a run killed with SIGKILL, and says so', async () => {
    const d = await slowPair('kill');
    const killed = await l2s(['r.yml', 'out'], {
      cwd: d,
      onStderr: (text, child) => {
        if (text.includes('tensors,')) child.kill('SIGKILL');
      },
    });
    expect(killed.signal).toBe('SIGKILL');
    const left = await leftovers(d);
    expect(left).toHaveLength(1);
    expect(left[0]).toMatch(/^\.out\.partial-\d+-[0-9a-f]+$/);
    const next = await l2s(['r.yml', 'out', '--quiet'], { cwd: d });
    expect(next.code, next.stderr).toBe(0);
    expect(next.stderr).toContain(
      `l2s-merge: removed ${join(d, left[0])}, the unfinished output of an interrupted run`,
    );
    expect(await leftovers(d)).toEqual([]);
    expect(existsSync(join(d, 'out', 'model.safetensors'))).toBe(true);
  }, 120_000);

  it('still cleans up when Ctrl-C comes a second time during cleanup', async () => {
    const d = await slowPair('ctrlc');
    let sent = 0;
    const r = await l2s(['r.yml', 'out'], {
      cwd: d,
      onStderr: (text, child) => {
        if (sent === 0 && text.includes('tensors,')) {
          sent = 1;
          child.kill('SIGINT');
        } else if (sent === 1 && text.includes('cancelling')) {
          sent = 2;
          child.kill('SIGINT');
        }
      },
    });
    expect(sent).toBe(2);
    expect(r.signal).toBeNull();
    expect(r.code).toBe(130);
    expect(r.stderr).toContain('l2s-merge: SIGINT: cancelling; the partial output is removed before exit');
    expect(r.stderr).toContain('l2s-merge: cancelled; nothing was written');
    expect(await leftovers(d)).toEqual([]);
    expect(existsSync(join(d, 'out'))).toBe(false);
  }, 120_000);
});

/** A safetensors file from its header JSON text (no tensor data). */
function safetensorsWithHeader(json: string): Uint8Array {
  const header = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + header.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.byteLength), true);
  out.set(header, 8);
  return out;
}

describe('every failure names the file in one line (item 4)', () => {
  it('deep JSON nesting in a header and in an index', async () => {
    const d = await pairDir('deep');
    const reasoner = join(d, 'tiny-qwen-system2');
    const deep = `${'['.repeat(200_000)}${']'.repeat(200_000)}`;
    await writeFile(
      join(reasoner, 'model-00002-of-00002.safetensors'),
      safetensorsWithHeader(`{"lm_head.weight": {"dtype": "F32", "shape": ${deep}, "data_offsets": [0, 0]}}`),
    );
    expectOneLineFailure(
      await l2s(['r.yml', 'out'], { cwd: d }),
      'SafetensorsError: tiny-qwen-system2/model-00002-of-00002.safetensors: header nests JSON deeper than 64 levels',
    );
    await writeFile(join(reasoner, 'model.safetensors.index.json'), `{"weight_map": {"a": ${deep}}}`);
    expectOneLineFailure(
      await l2s(['r.yml', 'out'], { cwd: d }),
      'ModelIndexError: tiny-qwen-system2/model.safetensors.index.json: nests JSON deeper than 64 levels',
    );
    expect(existsSync(join(d, 'out'))).toBe(false);
  });

  it('a shard that is a folder', async () => {
    const d = await pairDir('eisdir');
    const reasoner = join(d, 'tiny-qwen-system2');
    await rm(join(reasoner, 'model-00002-of-00002.safetensors'));
    await symlink(tmpdir(), join(reasoner, 'model-00002-of-00002.safetensors'));
    expectOneLineFailure(
      await l2s(['r.yml', 'out'], { cwd: d }),
      'ModelFileError: tiny-qwen-system2/model-00002-of-00002.safetensors: is a folder, not a regular file',
    );
  });

  it('num_hidden_layers that is not a whole number or disagrees with the weights', async () => {
    const d = await pairDir('layers', RECIPE.replace('weight: 0.7', 'weight: [0.0, 1.0]'));
    const config = join(d, 'tiny-qwen-system1', 'config.json');
    const text = await readFile(config, 'utf8');
    await writeFile(config, text.replace('"num_hidden_layers": 4', '"num_hidden_layers": "three"'));
    expectOneLineFailure(
      await l2s(['r.yml', 'out'], { cwd: d }),
      'PlanError: tiny-qwen-system1/config.json: num_hidden_layers is "three", not a whole number of layers',
    );
    await writeFile(config, text.replace('"num_hidden_layers": 4', '"num_hidden_layers": 3'));
    expectOneLineFailure(
      await l2s(['r.yml', 'out'], { cwd: d }),
      'PlanError: tiny-qwen-system1/config.json: num_hidden_layers is 3, but the weights have 4 layers (model.layers.0 to model.layers.3); fix config.json',
    );
    expect(existsSync(join(d, 'out'))).toBe(false);
  });

  it('a recipe that cannot merge fails on its PlanError before any device is opened', async () => {
    const d = await pairDir('plan-first');
    const reasoner = join(d, 'tiny-qwen-system2');
    const files = new Map<string, Uint8Array>();
    for (const name of await readdir(reasoner)) files.set(name, await readFile(join(reasoner, name)));
    const broken = await editModel(files, {
      drop: ['model.norm.weight'],
      reshape: { 'model.layers.0.self_attn.o_proj.weight': [8, 3] },
    });
    for (const [name, bytes] of broken) await writeFile(join(reasoner, name), bytes);
    // --device gpu: the old order probed WebGPU first (a "merging on the GPU (adapter)" notice, or no
    // adapter at all failing the run) before the recipe was ever checked.
    const r = await runBin(bin, ['r.yml', 'out', '--device', 'gpu'], { cwd: d });
    expect(r.timedOut, 'the CLI hung').toBe(false);
    expect(r.code, r.stderr).toBe(1);
    // The first and only line: both problems, found together from the headers.
    expect(r.stderr).toBe(
      "l2s-merge: PlanError: 2 problems in the models' safetensors headers (found before any tensor data was read): " +
        '- tensor model.layers.0.self_attn.o_proj.weight: tiny-qwen-system2/model-00001-of-00002.safetensors has shape [8, 3] but tiny-qwen-system1 has [64, 64] ' +
        '- tiny-qwen-system2: tensor model.norm.weight is missing from model-00001-of-00002.safetensors and model-00002-of-00002.safetensors\n',
    );
    expect(r.stderr).not.toMatch(/GPU|adapter|WebGPU/i);
    expect(existsSync(join(d, 'out'))).toBe(false);
  });

  const root = process.getuid?.() === 0;
  it.skipIf(!root)('a full disk (a 300 kB tmpfs; needs root, skipped otherwise)', async () => {
    const mnt = await mkdtemp(join(tmpdir(), 'l2s-full-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=300k', 'tmpfs', mnt]);
    } catch (e) {
      console.warn(`skipping the full-disk test: cannot mount a tmpfs (${(e as Error).message})`);
      return;
    }
    try {
      const r = await l2s([join(dir, 'r.yml'), join(mnt, 'out'), '--quiet']);
      expectOneLineFailure(
        r,
        `OutputDirError: ${join(mnt, 'out', 'model.safetensors')}: writing failed (no space left on the disk (ENOSPC)); nothing was written to ${join(mnt, 'out')}`,
      );
      expect(await readdir(mnt)).toEqual([]);
    } finally {
      execFileSync('umount', [mnt]);
      await rm(mnt, { recursive: true, force: true });
    }
  });
  if (!root) console.warn('skipping the full-disk (ENOSPC) test: mounting a small tmpfs needs root');
});

describe('bounded resources (item 5)', () => {
  it('refuses a recipe file over 1 MB at once', async () => {
    const big = `${RECIPE.replace('weight: 0.7', `weight: [${Array(210_000).fill('0.5').join(', ')}]`)}`;
    await writeFile(join(dir, 'big.yml'), big);
    expectOneLineFailure(
      await l2s([join(dir, 'big.yml'), join(dir, 'out-big')]),
      `RecipeError: ${join(dir, 'big.yml')}: is 1.05 MB, over the 1.00 MB limit for a recipe file`,
    );
  });

  it('refuses a recipe with more than 10000 list entries', async () => {
    await writeFile(
      join(dir, 'long.yml'),
      RECIPE.replace('weight: 0.7', `weight: [${Array(20_000).fill('0.5').join(', ')}]`),
    );
    expectOneLineFailure(
      await l2s([join(dir, 'long.yml'), join(dir, 'out-long')]),
      `RecipeError: ${join(dir, 'long.yml')}: has more than 10000 list entries, over the limit for a recipe`,
    );
  });

  it('refuses a side file over 64 MB', async () => {
    const d = await pairDir('sidefile');
    await truncate(join(d, 'tiny-qwen-system1', 'tokenizer.json'), 65_000_000);
    expectOneLineFailure(
      await l2s(['r.yml', 'out'], { cwd: d }),
      'MergeError: tiny-qwen-system1/tokenizer.json: is 65.0 MB, over the 64.0 MB limit for a config or tokenizer file',
    );
    expect(await leftovers(d)).toEqual([]);
  });
});

describe('side files are regular files inside the model folder (item 6)', () => {
  it('refuses a tokenizer.json linked to a file outside the folder', async () => {
    const d = await pairDir('secret');
    const secret = join(d, 'secret.txt');
    await writeFile(secret, 'password');
    await rm(join(d, 'tiny-qwen-system1', 'tokenizer.json'));
    await symlink(secret, join(d, 'tiny-qwen-system1', 'tokenizer.json'));
    expectOneLineFailure(
      await l2s(['r.yml', 'out'], { cwd: d }),
      `ModelFileError: tiny-qwen-system1/tokenizer.json: is a symbolic link to ${secret}, outside the model folder`,
    );
    expect(existsSync(join(d, 'out'))).toBe(false);
  });

  it('refuses a FIFO, linked or not, a device, and a FIFO as the recipe, without hanging', async () => {
    const d = await pairDir('fifo');
    const base = join(d, 'tiny-qwen-system1');
    await rm(join(base, 'tokenizer.json'));
    execFileSync('mkfifo', [join(base, 'tokenizer.json')]);
    expectOneLineFailure(
      await l2s(['r.yml', 'out'], { cwd: d, timeoutMs: 20_000 }),
      'ModelFileError: tiny-qwen-system1/tokenizer.json: is a FIFO (named pipe), not a regular file',
    );
    // A shard may link outside the folder, but only to a regular file.
    const shard = join(d, 'tiny-qwen-system2', 'model-00002-of-00002.safetensors');
    await rename(shard, `${shard}.bak`);
    await symlink('/dev/zero', shard);
    expectOneLineFailure(
      await l2s(['r.yml', 'out'], { cwd: d, timeoutMs: 20_000 }),
      'ModelFileError: tiny-qwen-system2/model-00002-of-00002.safetensors: is a device, not a regular file',
    );
    await rm(shard);
    await rename(`${shard}.bak`, shard);
    execFileSync('mkfifo', [join(d, 'pipe.yml')]);
    expectOneLineFailure(
      await l2s(['pipe.yml', 'out'], { cwd: d, timeoutMs: 20_000 }),
      'RecipeError: pipe.yml: is a FIFO (named pipe), not a recipe file',
    );
    await rm(join(base, 'tokenizer.json'));
    execFileSync('mkfifo', [join(base, '.pipe')]);
    await symlink('.pipe', join(base, 'tokenizer.json'));
    expectOneLineFailure(
      await l2s(['r.yml', 'out'], { cwd: d, timeoutMs: 20_000 }),
      'ModelFileError: tiny-qwen-system1/tokenizer.json: is a FIFO (named pipe), not a regular file',
    );
  });
});

describe("the output's config.json (item 7)", () => {
  it('sets `dtype` when the base uses it, and keeps the formatting of every other key', async () => {
    const d = await pairDir(
      'dtype',
      RECIPE.replace('dtype: bfloat16', 'dtype: bfloat16\nout_dtype: float32'),
    );
    const config = join(d, 'tiny-qwen-system1', 'config.json');
    const text = (await readFile(config, 'utf8'))
      .replace('"torch_dtype": "bfloat16"', '"dtype": "bfloat16"')
      .replace('"rms_norm_eps": 0.000001', '"rms_norm_eps": 1e-06')
      .replace('"rope_theta": 10000', '"rope_theta": 10000.0,\n  "attention_dropout": 0.0');
    expect(text).toContain('1e-06');
    await writeFile(config, text);
    const r = await l2s(['r.yml', 'out', '--quiet'], { cwd: d });
    expect(r.code, r.stderr).toBe(0);
    const written = await readFile(join(d, 'out', 'config.json'), 'utf8');
    expect(JSON.parse(written).dtype).toBe('float32');
    expect(written).not.toContain('torch_dtype');
    // Only the changed values differ, line for line.
    const expected = text
      .replace('"dtype": "bfloat16"', '"dtype": "float32"')
      .replace('"tie_word_embeddings": true', '"tie_word_embeddings": false');
    expect(written).toBe(expected);
    expect(written).toContain('"attention_dropout": 0.0');
    expect(written).toContain('"rms_norm_eps": 1e-06');
    expect(written).toContain('"rope_theta": 10000.0');
  });

  it('sets both `dtype` and `torch_dtype` when the base has both', async () => {
    const d = await pairDir('both', RECIPE.replace('dtype: bfloat16', 'dtype: float32'));
    const config = join(d, 'tiny-qwen-system1', 'config.json');
    const text = (await readFile(config, 'utf8')).replace(
      '"torch_dtype": "bfloat16"',
      '"torch_dtype": "bfloat16",\n  "dtype": "bfloat16"',
    );
    await writeFile(config, text);
    expect((await l2s(['r.yml', 'out', '--quiet'], { cwd: d })).code).toBe(0);
    const written = JSON.parse(await readFile(join(d, 'out', 'config.json'), 'utf8'));
    expect([written.dtype, written.torch_dtype]).toEqual(['float32', 'float32']);
  });
});

describe('recipe strictness from the CLI (item 8)', () => {
  it('refuses __proto__, the same folder written twice, and unknown tags, naming the line', async () => {
    const cases: Array<[string, string]> = [
      [
        RECIPE.replace('{weight: 0.7}', '{weight: 0.7, __proto__: 0.1}'),
        'p.yml:5: models[0].parameters.__proto__: the key __proto__ is not allowed in a recipe',
      ],
      [
        RECIPE.replace(
          'models:\n',
          'models:\n  - model: tiny-qwen-system2/\n    parameters: {weight: 0.1}\n',
        ),
        'p.yml:6: models[1].model: model tiny-qwen-system2 is listed more than once (models[0] names it as tiny-qwen-system2/)',
      ],
      [
        RECIPE.replace('{weight: 0.7}', '{weight: !!python/object:os.system 0.7}'),
        'the YAML tag !!python/object:os.system is not allowed',
      ],
    ];
    for (const [text, message] of cases) {
      await writeFile(join(dir, 'p.yml'), text);
      expectOneLineFailure(await l2s(['p.yml', 'out-p'], { cwd: dir }), message);
    }
  });
});

describe('Inf and NaN made by the merge (item 9)', () => {
  const overflow = RECIPE.replace('dtype: bfloat16', 'dtype: bfloat16\nparameters: {lambda: 1.0e39}');

  it('fails naming the tensors unless --allow-nonfinite, which writes the output with warnings', async () => {
    const d = await pairDir('nonfinite', overflow);
    const r = await l2s(['r.yml', 'out', '--quiet'], { cwd: d });
    const line = expectOneLineFailure(
      r,
      /^l2s-merge: NonFiniteOutputError: \d+ merged tensor\(s\) hold Inf or NaN values \(first: model\.embed_tokens\.weight, \d+ of 24576 values\); .*nothing was written \(--allow-nonfinite writes the output anyway\)$/,
    );
    expect(line).toBeTruthy();
    expect(r.stderr).toMatch(
      /l2s-merge: warning: tensor model\.layers\.0\.mlp\.up_proj\.weight: \d+ of \d+ merged values are Inf or NaN/,
    );
    expect(existsSync(join(d, 'out'))).toBe(false);
    expect(await leftovers(d)).toEqual([]);

    const allowed = await l2s(['r.yml', 'out', '--quiet', '--allow-nonfinite'], { cwd: d });
    expect(allowed.code, allowed.stderr).toBe(0);
    expect(allowed.stderr).toContain('l2s-merge: warning: tensor model.embed_tokens.weight:');
    expect(existsSync(join(d, 'out', 'model.safetensors'))).toBe(true);
  });

  it('passes a finite merge without a warning', async () => {
    const r = await l2s([join(dir, 'r.yml'), join(dir, 'out-finite'), '--quiet']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
  });
});
