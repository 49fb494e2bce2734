import { describe, expect, it } from 'vitest';
import {
  beforeAfterCaption,
  beforeAfterRows,
  largestLayerBlock,
  normsCaption,
  signsCaption,
  spectrumCaption,
  tiesCaption,
} from '../../src/inspect/captions';
import type { LayerInspection, TaskVectorInspection } from '../../src/inspect/inspect-models';
import type { KeptMass, NormSums, SignCounts } from '../../src/inspect/task-vector-stats';

/** Norm sums whose relative norm is exactly `r` (base energy 1). */
const norm = (r: number): NormSums => ({ delta2: r * r, base2: 1, elements: 10 });
const signs = (conflicts: number): SignCounts => ({ conflicts, contested: conflicts, elements: 100 });
const kept = (entries: number, energy: number, l1: number): KeptMass => ({
  elements: 100,
  kept: entries * 100,
  l1: 1,
  keptL1: l1,
  energy: 1,
  keptEnergy: energy,
});

/** A report over `norms[m][layer] = [attention, mlp]` with the given conflicts and TIES keep. */
function report(
  models: string[],
  norms: [number, number][][],
  conflicts: [number, number][] = norms[0].map(() => [0, 0]),
  ties: KeptMass = kept(0.2, 0.8, 0.5),
): TaskVectorInspection {
  const layers: LayerInspection[] = norms[0].map((_, layer) => ({
    layer,
    norms: models.map((_, m) => ({
      attention: norm(norms[m][layer][0]),
      mlp: norm(norms[m][layer][1]),
      other: norm(0),
    })),
    signs: { attention: signs(conflicts[layer][0]), mlp: signs(conflicts[layer][1]), other: signs(0) },
    ties,
  }));
  const total = (m: number) => {
    const d2 = norms[m].flat().reduce((a, v) => a + v * v, 0);
    return { delta2: d2, base2: norms[m].flat().length, elements: 10 * norms[m].flat().length };
  };
  const allConflicts = conflicts.flat().reduce((a, c) => a + c, 0);
  return {
    base: 'base',
    models,
    focus: models[0],
    layers,
    totals: {
      norms: models.map((_, m) => total(m)),
      signs: signs(allConflicts / conflicts.flat().length),
      ties,
    },
    density: { min: 0.2, max: 0.2 },
    matrices: [],
    tensors: layers.length * 2,
    skipped: [],
  };
}

describe('Inspect captions follow the data', () => {
  it('names the layer and block that change most, and the ratio of task-vector sizes', () => {
    const r = report(
      ['s2', 'instruct'],
      [
        [
          [0.1, 0.2],
          [0.5, 0.1],
        ],
        [
          [0.05, 0.05],
          [0.05, 0.05],
        ],
      ],
    );
    expect(largestLayerBlock(r, 0)).toEqual({ layer: 1, block: 'attention', value: 0.5 });
    const caption = normsCaption(r);
    expect(caption).toContain("most in layer 1's attention (50.0%)");
    expect(caption).toMatch(/s2's task vector is [\d.]+× instruct's/);
    // Move the peak: the caption moves with it.
    const moved = report(
      ['s2'],
      [
        [
          [0.1, 0.9],
          [0.5, 0.1],
        ],
      ],
    );
    expect(normsCaption(moved)).toContain("most in layer 0's MLP (90.0%)");
  });

  it('judges sign conflicts by their share', () => {
    const many = report(['a', 'b'], [[[1, 1]], [[1, 1]]], [[48, 50]]);
    expect(signsCaption(many)).toContain('49% of the weights (close to the 50% of unrelated signs');
    expect(signsCaption(many)).toContain("layer 0's MLP (50%)");
    const few = report(['a', 'b'], [[[1, 1]], [[1, 1]]], [[5, 3]]);
    expect(signsCaption(few)).toContain('4% of the weights (few');
    expect(signsCaption(report(['a'], [[[1, 1]]]))).toContain('tick a second model');
  });

  it('says whether TIES trimming keeps the energy', () => {
    const concentrated = report(['a'], [[[1, 1]]], undefined, kept(0.2, 0.8, 0.55));
    expect(tiesCaption(concentrated)).toContain('keeps 20% of');
    expect(tiesCaption(concentrated)).toContain('80% of the energy');
    expect(tiesCaption(concentrated)).toContain('sits in the largest entries');
    const even = report(['a'], [[[1, 1]]], undefined, kept(0.2, 0.22, 0.21));
    expect(tiesCaption(even)).toContain('spread evenly');
  });

  it('calls a spectrum low-rank only when its 90% rank is small', () => {
    const base = { model: 'm', tensor: 't', fullRank: 512, rank99: 400, computed: 512 };
    expect(spectrumCaption({ ...base, rank90: 20 })).toContain('a few singular directions carry most');
    const quarter = spectrumCaption({ ...base, rank90: 128 });
    expect(quarter).toContain('rank 128 of 512');
    expect(quarter).toContain('(25% of the full rank): it is low-rank in part');
    expect(quarter).not.toContain('a few singular directions');
    expect(spectrumCaption({ ...base, rank90: 400 })).toContain('close to full rank');
    expect(spectrumCaption({ ...base, rank90: null, computed: 64 })).toContain('more than 64');
  });

  it('compares the merged model with System 2 layer by layer', () => {
    const r = report(
      ['merged', 's2'],
      [
        [
          [0.05, 0.1],
          [0.1, 0.2],
        ],
        [
          [0.1, 0.1],
          [0.1, 0.4],
        ],
      ],
    );
    const rows = beforeAfterRows(r, 0, 1);
    expect(rows.map((x) => x.ratio)).toEqual([0.5, 1, 1, 0.5].map((v) => expect.closeTo(v, 12)));
    const caption = beforeAfterCaption(r, 0, 1);
    expect(caption).toMatch(/^merged carries \d+% of s2's change/);
    expect(caption).toContain("from 50% in layer 0's attention to 100% in layer 0's MLP");
  });
});
