import { beforeAll, describe, expect, it } from 'vitest';
import { makeTinyModel, TINY_TRIO, type TinyModelFiles } from '../../src/demo/tiny-qwen';
import { cpuBackend, type MergeBackend, type MergeProgress, runMerge } from '../../src/engine/merge';
import { parseRecipe } from '../../src/recipe';
import { memoryOutput, memoryResolver } from '../fixtures/memory-merge';

const RECIPE = parseRecipe(`merge_method: dare_ties
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-instruct
    parameters: {weight: 0.4, density: 0.6}
  - model: tiny-qwen-system2
    parameters: {weight: 0.8, density: 0.3}
dtype: bfloat16
`);

let models: TinyModelFiles[];
let reference: Map<string, Uint8Array>;

async function merge(extra: Partial<Parameters<typeof runMerge>[0]> = {}, out = memoryOutput()) {
  const result = await runMerge({
    recipe: RECIPE,
    resolveModel: memoryResolver(models),
    output: out.target,
    seed: 3,
    outShardSize: 60_000,
    ...extra,
  });
  return { result, out };
}

beforeAll(async () => {
  models = await Promise.all(TINY_TRIO.map((s) => makeTinyModel(s)));
  const { result, out } = await merge();
  reference = new Map(result.files.map((f) => [f, out.bytes(f)]));
});

describe('runMerge', () => {
  it('writes shards, index and side files, and reports progress to the end', async () => {
    const seen: MergeProgress[] = [];
    const { result, out } = await merge({ onProgress: (p) => seen.push(p) });
    expect(out.state.committed).toBe(true);
    expect(result.files.filter((f) => f.endsWith('.safetensors')).length).toBeGreaterThan(3);
    expect(result.files).toContain('model.safetensors.index.json');
    expect(result.files).toContain('mergekit_config.yml');
    const last = seen.at(-1)!;
    expect(last.tensorsDone).toBe(last.tensorsTotal);
    expect(last.bytesDone).toBe(last.bytesTotal);
    expect(last.inputBytesDone).toBe(last.inputBytesTotal);
    for (let i = 1; i < seen.length; i++)
      expect(seen[i].tensorsDone).toBeGreaterThanOrEqual(seen[i - 1].tensorsDone);
  });

  it('resumes a crashed run from the last finished tensor to the same bytes', async () => {
    const out = memoryOutput({ crash: true });
    let recorded = 0;
    await expect(
      merge(
        {
          onTensorWritten: (n) => {
            recorded = n;
            if (n === 23) throw new Error('the tab was closed');
          },
        },
        out,
      ),
    ).rejects.toThrow('the tab was closed');
    expect(recorded).toBe(23);
    expect(out.state.committed).toBe(false);
    const read: string[] = [];
    const { result } = await merge(
      { resume: { tensorsDone: recorded }, onProgress: (p) => p.tensor && read.push(p.tensor) },
      out,
    );
    expect(out.state.committed).toBe(true);
    // Only the unfinished tensors were merged again.
    expect(read).toHaveLength(51 - 23);
    for (const f of result.files) expect(out.bytes(f), f).toEqual(reference.get(f));
  });

  it('carries on on the CPU when the GPU device is lost, keeping finished tensors', async () => {
    let calls = 0;
    const flaky: MergeBackend = {
      kind: 'gpu',
      async merge(method, inputs) {
        if (++calls === 9)
          throw Object.assign(new Error('device was lost (reason: destroyed)'), {
            name: 'GpuDeviceLostError',
          });
        if (calls > 9) throw new Error('a lost device is used no more');
        return method.merge(inputs);
      },
    };
    const logs: string[] = [];
    const { result, out } = await merge({ backend: flaky, onLog: (l) => logs.push(l) });
    expect(result.backend).toBe('cpu');
    expect(logs.join('\n')).toMatch(/GPU device was lost.*continuing on the CPU/);
    for (const f of result.files) expect(out.bytes(f), f).toEqual(reference.get(f));
  });

  it('streams large tensors in chunks of rows to the same bytes', async () => {
    const { result, out } = await merge({ streamElements: 1000 });
    for (const f of result.files) expect(out.bytes(f), f).toEqual(reference.get(f));
  });

  it('cancels cleanly: the output is aborted and nothing is committed', async () => {
    const controller = new AbortController();
    const out = memoryOutput();
    await expect(
      merge(
        {
          signal: controller.signal,
          onProgress: (p) => {
            if (p.tensorsDone === 5) controller.abort();
          },
        },
        out,
      ),
    ).rejects.toMatchObject({ name: 'AbortError' });
    expect(out.state.aborted).toBe(true);
    expect(out.state.committed).toBe(false);
    expect(out.files.size).toBe(0);
  });

  it('uses the CPU backend by default', async () => {
    const { result } = await merge();
    expect(result.backend).toBe(cpuBackend.kind);
  });
});
