import { describe, expect, it } from 'vitest';
import { planShards } from '../../src/formats/shard-writer';
import type { KeyValueStore } from '../../src/store/kv';
import { partialOutputShortfall, RunJournal, type RunJournalRecord } from '../../src/worker/run-journal';

function memoryStore(): KeyValueStore & { data: Map<string, unknown> } {
  const data = new Map<string, unknown>();
  return {
    data,
    async getMany<T>(ks: readonly string[]) {
      return ks.map((k) => structuredClone(data.get(k)) as T | undefined);
    },
    async keys() {
      return [...data.keys()];
    },
    async write(puts, deletes = []) {
      for (const [k, v] of puts) data.set(k, structuredClone(v));
      for (const k of deletes) data.delete(k);
    },
  };
}

function record(runId: string, startedAt: number): RunJournalRecord {
  return {
    runId,
    recipeText: 'merge_method: linear\n',
    seed: 0,
    device: 'cpu',
    startedAt,
    tensorsDone: 0,
    tensorsTotal: 51,
    models: [{ name: 'a', id: 'id-a' }],
  };
}

describe('RunJournal', () => {
  it('keeps one record per run, oldest first, with the tensors done', async () => {
    const kv = memoryStore();
    const journal = new RunJournal(kv);
    await journal.begin(record('late', 20));
    await journal.begin(record('early', 10));
    await journal.setTensorsDone('late', 23);
    expect((await journal.list()).map((r) => [r.runId, r.tensorsDone])).toEqual([
      ['early', 0],
      ['late', 23],
    ]);
    expect(await journal.get('late')).toEqual({ ...record('late', 20), tensorsDone: 23 });
    await journal.remove('early');
    expect((await journal.list()).map((r) => r.runId)).toEqual(['late']);
  });

  it('does not bring back a removed run when progress arrives late', async () => {
    const journal = new RunJournal(memoryStore());
    await journal.begin(record('r', 1));
    await journal.remove('r');
    await journal.setTensorsDone('r', 5);
    expect(await journal.get('r')).toBeUndefined();
    expect(await journal.list()).toEqual([]);
  });

  it('marks a run that cannot continue, keeping the rest of its record; a removed run stays removed', async () => {
    const journal = new RunJournal(memoryStore());
    await journal.begin({ ...record('r', 1), tensorsDone: 7 });
    await journal.setResumeProblem('r', 'model.safetensors is missing from its partial output');
    expect(await journal.get('r')).toEqual({
      ...record('r', 1),
      tensorsDone: 7,
      resumeProblem: 'model.safetensors is missing from its partial output',
    });
    await journal.remove('r');
    await journal.setResumeProblem('r', 'late');
    expect(await journal.get('r')).toBeUndefined();
  });

  it('ignores keys that are not run records', async () => {
    const kv = memoryStore();
    kv.data.set('other', { runId: 'x' });
    const journal = new RunJournal(kv);
    await journal.begin(record('r', 1));
    expect((await journal.list()).map((r) => r.runId)).toEqual(['r']);
  });
});

describe('partialOutputShortfall', () => {
  // Three F32 tensors of 400, 400 and 800 bytes; a 1000-byte limit gives shards [a, b] and [c].
  const layout = planShards(
    [
      { name: 'a', dtype: 'F32', shape: [100] },
      { name: 'b', dtype: 'F32', shape: [100] },
      { name: 'c', dtype: 'F32', shape: [200] },
    ],
    1000,
  );
  const [first, second] = layout.shards;
  const header1 = first.headerBytes.byteLength;

  it('accepts files holding at least the finished tensors', () => {
    expect(layout.shards).toHaveLength(2);
    expect(partialOutputShortfall(layout, 0, new Map())).toBeUndefined();
    expect(partialOutputShortfall(layout, 1, new Map([[first.file, header1 + 400]]))).toBeUndefined();
    // Bytes of a tensor under way when the run stopped are allowed (they are cut on resume).
    expect(partialOutputShortfall(layout, 1, new Map([[first.file, header1 + 700]]))).toBeUndefined();
    expect(partialOutputShortfall(layout, 2, new Map([[first.file, first.byteLength]]))).toBeUndefined();
    expect(
      partialOutputShortfall(
        layout,
        3,
        new Map([
          [first.file, first.byteLength],
          [second.file, second.byteLength],
        ]),
      ),
    ).toBeUndefined();
  });

  it('names the file that is short or missing', () => {
    expect(partialOutputShortfall(layout, 1, new Map([[first.file, header1 + 399]]))).toBe(
      `${first.file} holds ${header1 + 399} bytes, fewer than the ${header1 + 400} its 1 finished tensors need`,
    );
    expect(partialOutputShortfall(layout, 3, new Map([[first.file, first.byteLength]]))).toBe(
      `${second.file} is missing from its partial output`,
    );
    expect(partialOutputShortfall(layout, 4, new Map())).toMatch(/missing/);
    expect(
      partialOutputShortfall(
        layout,
        4,
        new Map([
          [first.file, first.byteLength],
          [second.file, second.byteLength],
        ]),
      ),
    ).toBe('the output plans fewer than 4 tensors');
  });
});
