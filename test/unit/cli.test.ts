import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main';
import { makeTinyModel, TINY_TRIO } from '../../src/demo/tiny-qwen';
import { bytesByteSource } from '../../src/formats/byte-source';
import { decodeToF32, encodeFromF32 } from '../../src/formats/dtype';
import {
  readSafetensorsHeader,
  readTensorBytes,
  type SafetensorsHeader,
} from '../../src/formats/safetensors';
import { parseRecipe } from '../../src/recipe';
import { tinyTrioDir, writeModel } from '../fixtures/tiny';

const run = promisify(execFile);

const TIES_RECIPE = `merge_method: ties
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-instruct
    parameters: {weight: 0.5, density: 0.5}
  - model: tiny-qwen-system2
    parameters: {weight: 1.0, density: 0.2}
parameters: {lambda: 1.0}
dtype: bfloat16
`;

const DARE_RECIPE = `merge_method: dare_ties
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-system2
    parameters: {weight: 0.7, density: 0.7}
dtype: bfloat16
`;

let dir: string;

/**
 * Runs the CLI in-process; returns the exit code and what it wrote to stderr. On the CPU unless the
 * test asks for a device: the GPU path has tests of its own.
 */
async function cli(...args: string[]): Promise<{ code: number; stderr: string }> {
  const argv = args.length >= 2 && !args.includes('--device') ? [...args, '--device', 'cpu'] : args;
  let stderr = '';
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stderr += typeof chunk === 'string' ? chunk : new TextDecoder().decode(chunk);
    return true;
  });
  try {
    const code = await main(argv);
    return { code, stderr };
  } finally {
    spy.mockRestore();
  }
}

async function readOutput(
  outDir: string,
): Promise<Map<string, { header: SafetensorsHeader; bytes: Uint8Array }>> {
  const files = (await readdir(outDir)).filter((f) => f.endsWith('.safetensors'));
  const out = new Map<string, { header: SafetensorsHeader; bytes: Uint8Array }>();
  for (const f of files) {
    const bytes = new Uint8Array(await readFile(join(outDir, f)));
    out.set(f, { header: await readSafetensorsHeader(bytesByteSource(bytes, f)), bytes });
  }
  return out;
}

async function outputTensor(outDir: string, name: string): Promise<Float32Array> {
  for (const [, { header, bytes }] of await readOutput(outDir)) {
    const info = header.tensors.get(name);
    if (info) return decodeToF32(await readTensorBytes(bytesByteSource(bytes, info.file), info), 'BF16');
  }
  throw new Error(`no ${name} in ${outDir}`);
}

async function modelTensor(model: string, name: string): Promise<Float32Array> {
  const folder = join(dir, model);
  for (const f of (await readdir(folder)).filter((x) => x.endsWith('.safetensors'))) {
    const bytes = new Uint8Array(await readFile(join(folder, f)));
    const header = await readSafetensorsHeader(bytesByteSource(bytes, f));
    const info = header.tensors.get(name);
    if (info) return decodeToF32(await readTensorBytes(bytesByteSource(bytes, f), info), 'BF16');
  }
  throw new Error(`no ${name} in ${model}`);
}

/**
 * TIES written out independently of src/methods: trim each delta to its top floor(density*n) by
 * magnitude (stable: lower index first among equals), elect the sign of the weighted sum, average
 * the agreeing weighted deltas by their weights, add to the base. f32 at every step.
 */
function tiesReference(
  base: Float32Array,
  models: { values: Float32Array; weight: number; density: number }[],
) {
  const f = Math.fround;
  const n = base.length;
  const weighted = models.map(({ values, weight, density }) => {
    const delta = Float32Array.from(values, (v, i) => f(v - base[i]));
    const k = Math.floor(density * n);
    const order = Array.from({ length: n }, (_, i) => i).sort(
      (a, b) => Math.abs(delta[b]) - Math.abs(delta[a]) || a - b,
    );
    const kept = new Float32Array(n);
    for (let j = 0; j < k; j++) kept[order[j]] = delta[order[j]];
    return { values: Float32Array.from(kept, (d) => f(d * weight)), weight };
  });
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (const w of weighted) s = f(s + w.values[i]);
    const majority = s >= 0 ? 1 : -1;
    let mixed = 0;
    let divisor = 0;
    for (const w of weighted) {
      if (Math.sign(w.values[i]) === majority) {
        mixed = f(mixed + w.values[i]);
        divisor = f(divisor + w.weight);
      }
    }
    if (divisor === 0) divisor = 1;
    out[i] = f(base[i] + f(mixed / divisor));
  }
  return out;
}

beforeAll(async () => {
  dir = await tinyTrioDir();
  await writeFile(join(dir, 'ties.yml'), TIES_RECIPE);
  await writeFile(join(dir, 'dare.yml'), DARE_RECIPE);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('l2s-merge CLI on the tiny Qwen2 trio', () => {
  it('merges with TIES into a complete, loadable folder', async () => {
    const out = join(dir, 'out-ties');
    const { code, stderr } = await cli(join(dir, 'ties.yml'), out, '--device', 'cpu');
    expect(stderr).not.toMatch(/error/i);
    expect(code).toBe(0);
    const files = (await readdir(out)).sort();
    expect(files).toEqual(
      [
        'README.md',
        'config.json',
        'generation_config.json',
        'mergekit_config.yml',
        'model.safetensors',
        'tokenizer.json',
        'tokenizer_config.json',
      ].sort(),
    );
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    expect(config.torch_dtype).toBe('bfloat16');
    // The reasoner has its own lm_head, so the output keeps one and unties it.
    expect(config.tie_word_embeddings).toBe(false);
    expect(config.num_hidden_layers).toBe(4);
    const recipeBack = parseRecipe(await readFile(join(out, 'mergekit_config.yml'), 'utf8'));
    expect(recipeBack).toEqual(parseRecipe(TIES_RECIPE));
    expect(await readFile(join(out, 'tokenizer.json'))).toEqual(
      await readFile(join(dir, 'tiny-qwen-system1', 'tokenizer.json')),
    );

    const [[, { header }]] = [...(await readOutput(out))];
    const names = [...header.tensors.keys()];
    expect(names[0]).toBe('model.embed_tokens.weight');
    expect(names.at(-1)).toBe('lm_head.weight');
    expect(names).toHaveLength(1 + 4 * 12 + 2);
    for (const info of header.tensors.values()) expect(info.dtype).toBe('BF16');
    expect(header.metadata).toEqual({ format: 'pt' });
  });

  it('writes the numbers of an independent TIES implementation, ties resolved through embeddings', async () => {
    const out = join(dir, 'out-ties');
    for (const [name, fallback] of [
      ['model.layers.2.mlp.down_proj.weight', undefined],
      ['model.layers.0.self_attn.k_proj.bias', undefined],
      // instruct ties its head to its embeddings; the base too; the reasoner has its own.
      ['lm_head.weight', 'model.embed_tokens.weight'],
    ] as const) {
      const base = await modelTensor('tiny-qwen-system1', fallback ?? name);
      const instruct = await modelTensor('tiny-qwen-instruct', fallback ?? name);
      const reasoner = await modelTensor('tiny-qwen-system2', name);
      const expected = tiesReference(base, [
        { values: instruct, weight: 0.5, density: 0.5 },
        { values: reasoner, weight: 1.0, density: 0.2 },
      ]);
      const got = await outputTensor(out, name);
      expect(encodeFromF32(got, 'BF16')).toEqual(encodeFromF32(expected, 'BF16'));
    }
  });

  it('gives the same bytes for the same seed and others for another seed (DARE-TIES)', async () => {
    const a = join(dir, 'out-dare-a');
    const b = join(dir, 'out-dare-b');
    const c = join(dir, 'out-dare-c');
    expect((await cli(join(dir, 'dare.yml'), a, '--seed', '5', '--quiet')).code).toBe(0);
    expect((await cli(join(dir, 'dare.yml'), b, '--seed', '5', '--quiet')).code).toBe(0);
    expect((await cli(join(dir, 'dare.yml'), c, '--seed', '6', '--quiet')).code).toBe(0);
    const bytes = async (d: string) => readFile(join(d, 'model.safetensors'));
    expect(await bytes(a)).toEqual(await bytes(b));
    expect(await bytes(a)).not.toEqual(await bytes(c));
  });

  it('shards by --out-shard-size with an index that covers every tensor', async () => {
    const out = join(dir, 'out-sharded');
    expect((await cli(join(dir, 'ties.yml'), out, '--out-shard-size', '100K', '--quiet')).code).toBe(0);
    const files = await readdir(out);
    const shards = files.filter((f) => f.endsWith('.safetensors')).sort();
    expect(shards.length).toBeGreaterThan(2);
    expect(shards[0]).toBe(`model-00001-of-${String(shards.length).padStart(5, '0')}.safetensors`);
    const index = JSON.parse(await readFile(join(out, 'model.safetensors.index.json'), 'utf8'));
    const all = await readOutput(out);
    let total = 0;
    for (const [file, { header }] of all) {
      for (const [name, info] of header.tensors) {
        expect(index.weight_map[name]).toBe(file);
        total += info.byteLength;
      }
    }
    expect(Object.keys(index.weight_map)).toHaveLength(1 + 4 * 12 + 2);
    expect(index.metadata.total_size).toBe(total);
    // Same tensors, same bytes as the single-file output.
    const single = await readOutput(join(dir, 'out-ties'));
    const [[, one]] = [...single];
    for (const [, { header, bytes }] of all) {
      for (const [name, info] of header.tensors) {
        const ref = one.header.tensors.get(name)!;
        expect(await readTensorBytes(bytesByteSource(bytes, 'x'), info)).toEqual(
          await readTensorBytes(bytesByteSource(one.bytes, 'y'), ref),
        );
      }
    }
  });

  it('refuses a non-empty OUT_DIR unless --force, and --force replaces only an earlier output', async () => {
    const out = join(dir, 'out-busy');
    await mkdir(out);
    await writeFile(join(out, 'keep.txt'), 'mine');
    const refused = await cli(join(dir, 'ties.yml'), out, '--quiet');
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/out-busy.*not empty.*--force/);
    expect(await readFile(join(out, 'keep.txt'), 'utf8')).toBe('mine');
    // keep.txt is not something a merge writes: --force refuses too.
    const forced = await cli(join(dir, 'ties.yml'), out, '--force', '--quiet');
    expect(forced.code).toBe(1);
    expect(forced.stderr).toMatch(
      /out-busy: --force replaces only a folder that l2s-merge wrote, and it holds keep\.txt/,
    );
    expect(await readFile(join(out, 'keep.txt'), 'utf8')).toBe('mine');
    await rm(join(out, 'keep.txt'));
    expect((await cli(join(dir, 'ties.yml'), out, '--quiet')).code).toBe(0);
    const first = await readFile(join(out, 'model.safetensors'));
    expect((await cli(join(dir, 'dare.yml'), out, '--force', '--quiet')).code).toBe(0);
    expect(await readFile(join(out, 'model.safetensors'))).not.toEqual(first);
    expect(await readFile(join(out, 'mergekit_config.yml'), 'utf8')).toContain('dare_ties');
  });
});

describe('l2s-merge CLI on bad input', () => {
  async function leftovers(): Promise<string[]> {
    return (await readdir(dir)).filter((f) => f.includes('.partial-') || f.includes('.old-'));
  }

  it('names the file and tensor of a truncated shard and leaves no output', async () => {
    const bad = join(dir, 'bad-truncated');
    await mkdir(bad);
    const reasoner = await makeTinyModel(TINY_TRIO[2]);
    const folder = await writeModel(bad, reasoner);
    await writeModel(bad, await makeTinyModel(TINY_TRIO[0]));
    const shard = join(folder, 'model-00002-of-00002.safetensors');
    const size = (await readFile(shard)).byteLength;
    await truncate(shard, size - 1000);
    await writeFile(
      join(bad, 'r.yml'),
      DARE_RECIPE.replace('  - model: tiny-qwen-system2', '  - model: tiny-qwen-system2'),
    );
    const out = join(bad, 'out');
    const { code, stderr } = await cli(join(bad, 'r.yml'), out, '--quiet');
    expect(code).toBe(1);
    expect(stderr.trim().split('\n')).toHaveLength(1);
    expect(stderr).toContain('model-00002-of-00002.safetensors');
    expect(stderr).toContain("tensor 'lm_head.weight'");
    expect(existsSync(out)).toBe(false);
    expect((await readdir(bad)).filter((f) => f.startsWith('.'))).toEqual([]);
  });

  it('names the model and tensor that is missing', async () => {
    const bad = join(dir, 'bad-missing');
    await mkdir(bad);
    const base = await makeTinyModel(TINY_TRIO[0]);
    await writeModel(bad, base);
    // A reasoner whose safetensors lack one layer's tensor.
    const reasoner = await makeTinyModel({ ...TINY_TRIO[2], shards: 1 });
    const st = reasoner.files.get('model.safetensors')!;
    const header = await readSafetensorsHeader(bytesByteSource(st, 'model.safetensors'));
    const { planShards, ShardWriter } = await import('../../src/formats/shard-writer');
    const kept = [...header.tensors.values()].filter((t) => t.name !== 'model.layers.1.mlp.up_proj.weight');
    const layout = planShards(kept, 1e12);
    const parts: Uint8Array[] = [];
    const writer = new ShardWriter(layout, async () => ({
      async write(b: Uint8Array) {
        parts.push(b.slice());
      },
      async close() {},
    }));
    for (const t of kept)
      await writer.writeTensor(t.name, await readTensorBytes(bytesByteSource(st, 'x'), t));
    await writer.finish();
    reasoner.files.set('model.safetensors', Buffer.concat(parts));
    await writeModel(bad, reasoner);
    await writeFile(join(bad, 'r.yml'), DARE_RECIPE);
    const { code, stderr } = await cli(join(bad, 'r.yml'), join(bad, 'out'), '--quiet');
    expect(code).toBe(1);
    expect(stderr).toContain('tiny-qwen-system2');
    expect(stderr).toContain('model.layers.1.mlp.up_proj.weight');
    expect(existsSync(join(bad, 'out'))).toBe(false);
  });

  it('names both models on a shape mismatch', async () => {
    const bad = join(dir, 'bad-shape');
    await mkdir(bad);
    await writeModel(bad, await makeTinyModel(TINY_TRIO[0]));
    const wide = await makeTinyModel(
      { ...TINY_TRIO[2] },
      { hiddenSize: 64, intermediateSize: 192, layers: 4, heads: 4, kvHeads: 2, vocabSize: 384 },
    );
    await writeModel(bad, wide);
    await writeFile(join(bad, 'r.yml'), DARE_RECIPE);
    const { code, stderr } = await cli(join(bad, 'r.yml'), join(bad, 'out'), '--quiet');
    expect(code).toBe(1);
    expect(stderr).toMatch(/mlp\.(gate|up|down)_proj\.weight/);
    expect(stderr).toContain('tiny-qwen-system2');
    expect(stderr).toContain('tiny-qwen-system1');
  });

  it('merges a larger-vocabulary reasoner through the base-sized embedding submatrix', async () => {
    const sub = join(dir, 'vocab');
    await mkdir(sub);
    await writeModel(sub, await makeTinyModel(TINY_TRIO[0]));
    await writeModel(sub, await makeTinyModel({ ...TINY_TRIO[2], extraVocab: 16 }));
    await writeFile(join(sub, 'r.yml'), TIES_RECIPE.replace(/ {2}- model: tiny-qwen-instruct\n.*\n/, ''));
    const out = join(sub, 'out');
    const { code, stderr } = await cli(join(sub, 'r.yml'), out, '--quiet', '--device', 'cpu');
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const [[, { header }]] = [...(await readOutput(out))];
    expect(header.tensors.get('model.embed_tokens.weight')!.shape).toEqual([384, 64]);
    expect(header.tensors.get('lm_head.weight')!.shape).toEqual([384, 64]);
  });

  it('fails cleanly on a recipe that names a folder that does not exist', async () => {
    await writeFile(join(dir, 'nofolder.yml'), DARE_RECIPE.replace('tiny-qwen-system2', 'no-such-model'));
    const { code, stderr } = await cli(join(dir, 'nofolder.yml'), join(dir, 'out-nofolder'), '--quiet');
    expect(code).toBe(1);
    expect(stderr).toContain('no-such-model');
    expect(existsSync(join(dir, 'out-nofolder'))).toBe(false);
    expect(await leftovers()).toEqual([]);
  });

  it('explains usage errors with exit code 2', async () => {
    expect((await cli()).code).toBe(2);
    const seed = await cli('a.yml', 'out', '--seed', '-3');
    expect(seed.code).toBe(2);
    expect(seed.stderr).toMatch(/seed/);
    expect((await cli('a.yml', 'out', '--out-shard-size', 'lots')).code).toBe(2);
    for (const bad of ['0', '65', 'two']) {
      const threads = await cli('a.yml', 'out', '--threads', bad);
      expect(threads.code).toBe(2);
      expect(threads.stderr).toContain(`--threads must be an integer from 1 to 64, got ${bad}`);
    }
  });
});

describe('the SVD family from the CLI', () => {
  const svdRecipes: Record<string, string> = {
    lowrank_task_arithmetic:
      'parameters: {rank: 8}\nmodels:\n  - model: tiny-qwen-system2\n    parameters: {weight: 0.7}\n',
    tsv: 'parameters: {rank_fraction: 0.5}\nmodels:\n  - model: tiny-qwen-instruct\n  - model: tiny-qwen-system2\n',
    lore: 'parameters: {mu: 0.01, iterations: 3, rank: 8}\nmodels:\n  - model: tiny-qwen-instruct\n  - model: tiny-qwen-system2\n',
    twin: 'parameters: {rank: 4}\nmodels:\n  - model: tiny-qwen-instruct\n  - model: tiny-qwen-system2\n',
  };
  for (const [method, rest] of Object.entries(svdRecipes)) {
    it(`runs ${method} on the tiny trio and logs each tensor's rank and kept energy`, async () => {
      const file = join(dir, `${method}.yml`);
      await writeFile(
        file,
        `merge_method: ${method}\nbase_model: tiny-qwen-system1\ndtype: bfloat16\n${rest}`,
      );
      const out = join(dir, `out-${method}`);
      const { code, stderr } = await cli(file, out);
      expect(code, stderr).toBe(0);
      const ranks = stderr
        .split('\n')
        .filter((l) => /: rank \d+ keeps \d+\.\d% of the spectrum's energy/.test(l));
      expect(ranks.length).toBeGreaterThan(10);
      expect(stderr).toContain('model.layers.0.mlp.down_proj.weight');
      const down = await outputTensor(out, 'model.layers.3.mlp.down_proj.weight');
      expect(down.every(Number.isFinite)).toBe(true);
    }, 60_000);
  }
});

/** Node WebGPU (Dawn) with a software adapter where the machine has no GPU; see scripts/env.sh. */
const gpuAvailable = await import('../../src/node/webgpu')
  .then((m) => m.nodeAdapter())
  .then(() => true)
  .catch(() => false);

describe.skipIf(!gpuAvailable)('l2s-merge --device gpu', () => {
  for (const [name, recipe] of [
    ['ties.yml', 'TIES'],
    ['dare.yml', 'DARE-TIES'],
  ] as const) {
    it(`writes the bytes of --device cpu (${recipe})`, async () => {
      const gpu = join(dir, `out-gpu-${name}`);
      const cpu = join(dir, `out-cpu-${name}`);
      const onGpu = await cli(
        join(dir, name),
        gpu,
        '--device',
        'gpu',
        '--seed',
        '11',
        '--out-shard-size',
        '200K',
      );
      expect(onGpu.code, onGpu.stderr).toBe(0);
      expect(onGpu.stderr).toMatch(/merging on the GPU/);
      expect(
        (await cli(join(dir, name), cpu, '--device', 'cpu', '--seed', '11', '--out-shard-size', '200K')).code,
      ).toBe(0);
      const files = (await readdir(cpu)).sort();
      expect((await readdir(gpu)).sort()).toEqual(files);
      for (const f of files) expect(await readFile(join(gpu, f)), f).toEqual(await readFile(join(cpu, f)));
    }, 120_000);
  }
});

describe('the installed bin', () => {
  it('runs as `l2s-merge` from the built bundle', async () => {
    if (!existsSync('dist/cli/main.js'))
      await run('npx', ['vite', 'build', '--config', 'vite.cli.config.ts']);
    const out = join(dir, 'out-bin');
    const { stderr } = await run(process.execPath, [
      'bin/l2s-merge.mjs',
      join(dir, 'ties.yml'),
      out,
      '--device',
      'cpu',
    ]);
    expect(stderr).toMatch(/tensors/);
    expect(await readFile(join(out, 'model.safetensors'))).toEqual(
      await readFile(join(dir, 'out-ties', 'model.safetensors')),
    );
  }, 120_000);

  it('writes the same bytes on two kernel threads and on one (--threads 1)', async () => {
    if (!existsSync('dist/cli/kernel-worker.js'))
      await run('npx', ['vite', 'build', '--config', 'vite.cli.config.ts']);
    for (const recipe of ['ties.yml', 'dare.yml']) {
      const bytes: Buffer[] = [];
      for (const threads of ['2', '1']) {
        const out = join(dir, `out-bin-threads-${threads}-${recipe}`);
        const { stderr } = await run(process.execPath, [
          'bin/l2s-merge.mjs',
          join(dir, recipe),
          out,
          '--device',
          'cpu',
          '--threads',
          threads,
          '--seed',
          '5',
        ]);
        expect(stderr.includes('2 kernel threads'), stderr).toBe(threads === '2');
        bytes.push(await readFile(join(out, 'model.safetensors')));
      }
      expect(Buffer.compare(bytes[0], bytes[1]), recipe).toBe(0);
    }
  }, 120_000);
});
