/**
 * AIM-TIES through `l2s-merge recipe.yml OUT` on the fixture pair (System 1 base, System 2), against
 * the TS reference: the statistics pass of src/model/calibration.ts, the ties method's f32 result and
 * the AIM formula written out here, rounded once to bf16.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main';
import { bytesByteSource } from '../../src/formats/byte-source';
import { decodeToF32, encodeFromF32 } from '../../src/formats/dtype';
import { readModelTensors } from '../../src/formats/model-index';
import { readSafetensorsHeader } from '../../src/formats/safetensors';
import { getMethod } from '../../src/methods';
import { type ActivationStatistics, aimModuleOf } from '../../src/methods/aim';
import { decodeAimStatistics } from '../../src/model/aim-statistics';
import { cpuStatisticsSink, runStatisticsPass } from '../../src/model/calibration';
import { buildCalibrationBlocks, builtinCandidates } from '../../src/model/calibration-text';
import { createCpuRunner } from '../../src/model/reference';
import { ModelTokenizer } from '../../src/model/tokenizer';
import { openModelWeights } from '../../src/model/weights';
import { modelFolder } from '../../src/node/model-folder';
import { parseRecipe, resolveParams } from '../../src/recipe';

const FIXTURE = resolve('test/fixtures/qwen2-tiny-l2s');
const SETTINGS = { samples: 16, blockSize: 64, seed: 42 };

function recipe(aim: string): string {
  return `merge_method: ties
base_model: ${FIXTURE}/system1
models:
  - model: ${FIXTURE}/system2
    parameters: {weight: 1.0, density: 0.2}
parameters: {lambda: 1.0}
dtype: bfloat16
${aim}`;
}
const AIM_BLOCK = `aim:
  omega: 0.4
  calibration: {source: builtin, samples: ${SETTINGS.samples}, block_size: ${SETTINGS.blockSize}, seed: ${SETTINGS.seed}}
`;

async function cli(...args: string[]): Promise<{ code: number; stderr: string }> {
  let stderr = '';
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stderr += typeof chunk === 'string' ? chunk : new TextDecoder().decode(chunk);
    return true;
  });
  try {
    return { code: await main(args), stderr };
  } finally {
    spy.mockRestore();
  }
}

async function outputTensors(dir: string): Promise<Map<string, Uint8Array>> {
  const bytes = new Uint8Array(await readFile(join(dir, 'model.safetensors')));
  const header = await readSafetensorsHeader(bytesByteSource(bytes, 'model.safetensors'));
  return new Map([...header.tensors].map(([n, i]) => [n, bytes.subarray(i.offset, i.offset + i.byteLength)]));
}

let dir: string;
let reference: ActivationStatistics;
let textSha256: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'l2s-aim-'));
  // The TS reference statistics.
  const base = await modelFolder(`${FIXTURE}/system1`);
  try {
    const tokenizer = await ModelTokenizer.load(base);
    const blocks = await buildCalibrationBlocks(builtinCandidates(), tokenizer, SETTINGS);
    textSha256 = blocks.textSha256;
    const runner = await createCpuRunner(await openModelWeights(base), { maxContext: SETTINGS.blockSize });
    reference = await runStatisticsPass(runner, blocks, cpuStatisticsSink());
    runner.dispose();
  } finally {
    await base.close();
  }
}, 120_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('l2s-merge with an AIM-TIES recipe', () => {
  it('calibrates, merges, and writes the TS reference bit for bit, with statistics and the recorded recipe', async () => {
    await writeFile(join(dir, 'aim.yml'), recipe(AIM_BLOCK));
    const { code, stderr } = await cli(join(dir, 'aim.yml'), join(dir, 'out'), '--device', 'cpu');
    expect(stderr).toMatch(/AIM calibration: block \d+\/\d+, \d+ tokens, \d+ tokens\/s, ETA/);
    expect(code, stderr).toBe(0);

    const saved = await decodeAimStatistics(
      new Uint8Array(await readFile(join(dir, 'out', 'aim_statistics.safetensors'))),
      'aim_statistics.safetensors',
    );
    expect([...saved.modules.keys()]).toEqual([...reference.modules.keys()]);
    for (const [m, a] of reference.modules)
      expect(Buffer.from(saved.modules.get(m)!.buffer).equals(Buffer.from(a.buffer)), m).toBe(true);
    expect(saved.textSha256).toBe(textSha256);

    const recorded = parseRecipe(
      await readFile(join(dir, 'out', 'mergekit_config.yml'), 'utf8'),
      'mergekit_config.yml',
    );
    expect(recorded.aim).toEqual({
      omega: 0.4,
      calibration: { source: { kind: 'builtin' }, ...SETTINGS, sha256: textSha256 },
    });

    const got = await outputTensors(join(dir, 'out'));
    const system1 = await modelFolder(`${FIXTURE}/system1`);
    const system2 = await modelFolder(`${FIXTURE}/system2`);
    try {
      const [i1, i2] = await Promise.all([readModelTensors(system1), readModelTensors(system2)]);
      const read = async (index: typeof i1, name: string) => {
        const info = index.tensors.get(name)!;
        return decodeToF32(await index.sources.get(info.file)!.read(info.offset, info.byteLength), 'BF16');
      };
      const ties = getMethod('ties');
      const parsed = parseRecipe(recipe(AIM_BLOCK));
      let relaxed = 0;
      for (const [name, bytes] of got) {
        const base = await read(i1, i1.tensors.has(name) ? name : 'model.embed_tokens.weight');
        const other = await read(i2, name);
        const { global, perModel } = resolveParams(parsed, ties, name, 4);
        const merged = ties.merge({
          tensorName: name,
          shape: i2.tensors.get(name)!.shape,
          tensors: [
            { model: `${FIXTURE}/system2`, values: other, params: perModel.get(`${FIXTURE}/system2`)! },
            { model: `${FIXTURE}/system1`, values: base, params: perModel.get(`${FIXTURE}/system1`)! },
          ],
          baseIndex: 1,
          params: global,
          seed: 0,
        });
        const module = aimModuleOf(name);
        const expected = merged.slice();
        if (module) {
          relaxed++;
          const a = reference.modules.get(module)!;
          const max = a.reduce((m, v) => Math.max(m, v), 0);
          for (let i = 0; i < merged.length; i++) {
            const f = Math.fround(1 - Math.fround(Math.fround(0.6) * Math.fround(a[i % a.length] / max)));
            if (f !== 1) expected[i] = base[i] + Math.fround(Math.fround(merged[i] - base[i]) * f);
          }
        }
        expect(Buffer.from(encodeFromF32(expected, 'BF16')).equals(Buffer.from(bytes)), name).toBe(true);
      }
      // 4 layers x 9 weights, model.norm and the output's own lm_head.
      expect(relaxed).toBe(4 * 9 + 2);
    } finally {
      await system1.close();
      await system2.close();
    }
  }, 180_000);

  it('reuses saved statistics for another omega; omega 1 is the plain TIES merge', async () => {
    await writeFile(join(dir, 'ties.yml'), recipe(''));
    expect((await cli(join(dir, 'ties.yml'), join(dir, 'out-ties'), '--device', 'cpu', '--quiet')).code).toBe(
      0,
    );
    const stats = join(dir, 'out', 'aim_statistics.safetensors');
    await writeFile(join(dir, 'omega1.yml'), recipe(`aim: {omega: 1, statistics: ${stats}}\n`));
    const run = await cli(join(dir, 'omega1.yml'), join(dir, 'out-omega1'), '--device', 'cpu');
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/AIM statistics from .*aim_statistics.safetensors .*no calibration run/);
    expect(run.stderr).not.toMatch(/AIM calibration: block/);
    const plain = await outputTensors(join(dir, 'out-ties'));
    const omega1 = await outputTensors(join(dir, 'out-omega1'));
    for (const [name, bytes] of plain)
      expect(Buffer.from(omega1.get(name)!).equals(Buffer.from(bytes)), name).toBe(true);
    // The recorded recipe names the calibration the statistics came from.
    const recorded = parseRecipe(await readFile(join(dir, 'out-omega1', 'mergekit_config.yml'), 'utf8'));
    expect(recorded.aim?.calibration).toEqual({
      source: { kind: 'builtin' },
      ...SETTINGS,
      sha256: textSha256,
    });
    // Same statistics, omega 0.4 again: the first run's bytes.
    await writeFile(join(dir, 'again.yml'), recipe(`aim: {omega: 0.4, statistics: ${stats}}\n`));
    expect(
      (await cli(join(dir, 'again.yml'), join(dir, 'out-again'), '--device', 'cpu', '--quiet')).code,
    ).toBe(0);
    const first = await readFile(join(dir, 'out', 'model.safetensors'));
    expect((await readFile(join(dir, 'out-again', 'model.safetensors'))).equals(first)).toBe(true);
  }, 120_000);

  it('refuses a malformed aim block with one line naming the file, line and key', async () => {
    await writeFile(join(dir, 'bad.yml'), recipe('aim:\n  omega: 1.5\n'));
    const bad = await cli(join(dir, 'bad.yml'), join(dir, 'out-bad'), '--device', 'cpu');
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(
      /bad.yml:9: aim.omega: must be a number from 0 to 1 \(the paper uses 0.4\), not 1.5/,
    );
    // A recipe that cannot merge fails on its plan, before the calibration pass.
    await writeFile(
      join(dir, 'missing.yml'),
      recipe(AIM_BLOCK).replace(`${FIXTURE}/system2`, `${FIXTURE}/system3`),
    );
    const missing = await cli(join(dir, 'missing.yml'), join(dir, 'out-missing'), '--device', 'cpu');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/system3/);
    expect(missing.stderr).not.toMatch(/AIM calibration/);
    await writeFile(
      join(dir, 'sha.yml'),
      recipe(`${AIM_BLOCK.replace('seed: 42}', `seed: 42, sha256: ${'ab'.repeat(32)}}`)}`),
    );
    const sha = await cli(join(dir, 'sha.yml'), join(dir, 'out-sha'), '--device', 'cpu', '--quiet');
    expect(sha.code).toBe(1);
    expect(sha.stderr).toMatch(
      /CalibrationError: the calibration text hashes to [0-9a-f]{64}, but the recipe's aim.calibration.sha256/,
    );
  }, 60_000);
});
