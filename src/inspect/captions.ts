/**
 * Captions for the Inspect charts, computed from the numbers the charts draw: every claim a caption
 * makes (which layer changes most, how concentrated a task vector is, how low its rank) is decided
 * here from the data, so a different pair of models gets a different, still true, sentence.
 */
import type { TaskVectorInspection } from './inspect-models';
import { conflictFraction, keptShares, relativeNorm } from './task-vector-stats';

export const percent = (x: number, digits = 0): string =>
  Number.isFinite(x) ? `${(100 * x).toFixed(digits)}%` : '–';

const BLOCK_WORDS = { attention: 'attention', mlp: 'MLP' } as const;

/** The layer and block whose task vector is largest for model `m`, relative to the base. */
export function largestLayerBlock(
  report: TaskVectorInspection,
  m: number,
): { layer: number; block: 'attention' | 'mlp'; value: number } | undefined {
  let best: { layer: number; block: 'attention' | 'mlp'; value: number } | undefined;
  for (const l of report.layers) {
    for (const block of ['attention', 'mlp'] as const) {
      const value = relativeNorm(l.norms[m][block]);
      if (Number.isFinite(value) && (!best || value > best.value)) best = { layer: l.layer, block, value };
    }
  }
  return best;
}

/** Where the task vectors are largest, and how the models compare. */
export function normsCaption(report: TaskVectorInspection): string {
  const overall = report.totals.norms.map(relativeNorm);
  const parts: string[] = [];
  report.models.forEach((model, m) => {
    const top = largestLayerBlock(report, m);
    if (!top) return;
    parts.push(
      `${model} moves the base by ${percent(overall[m], 1)} overall, most in layer ${top.layer}'s ` +
        `${BLOCK_WORDS[top.block]} (${percent(top.value, 1)})`,
    );
  });
  if (report.models.length >= 2) {
    const order = report.models.map((model, m) => ({ model, v: overall[m] })).sort((a, b) => b.v - a.v);
    const [first, second] = order;
    if (second.v > 0 && Number.isFinite(first.v / second.v)) {
      parts.push(`${first.model}'s task vector is ${(first.v / second.v).toFixed(1)}× ${second.model}'s`);
    }
  }
  return parts.length ? `${parts.join('; ')}.` : 'No task vector could be measured.';
}

/** How much the models fight over signs, and where most. */
export function signsCaption(report: TaskVectorInspection): string {
  if (report.models.length < 2) return 'With one model there are no sign conflicts: tick a second model.';
  const overall = conflictFraction(report.totals.signs);
  let worst: { layer: number; block: 'attention' | 'mlp'; value: number } | undefined;
  for (const l of report.layers) {
    for (const block of ['attention', 'mlp'] as const) {
      const value = conflictFraction(l.signs[block]);
      if (Number.isFinite(value) && (!worst || value > worst.value)) worst = { layer: l.layer, block, value };
    }
  }
  // Independent random signs disagree half the time; task vectors that share a direction far less.
  const verdict =
    overall >= 0.4
      ? 'close to the 50% of unrelated signs, so plain averaging would cancel much of both'
      : overall >= 0.15
        ? 'enough that averaging loses part of both, which TIES’ sign election avoids'
        : 'few: the models mostly push the same way, so averaging and TIES differ little here';
  return (
    `The models disagree in sign on ${percent(overall)} of the weights (${verdict})` +
    (worst ? `; most in layer ${worst.layer}'s ${BLOCK_WORDS[worst.block]} (${percent(worst.value)}).` : '.')
  );
}

/** What TIES' trimming keeps of the focus model's task vector, and what that says about it. */
export function tiesCaption(report: TaskVectorInspection): string {
  const keep = keptShares(report.totals.ties);
  if (!Number.isFinite(keep.entries) || keep.entries === 0) {
    return `TIES keeps nothing of ${report.focus}'s task vector at this density.`;
  }
  const concentration = keep.energy / keep.entries;
  const verdict =
    concentration >= 2.5
      ? 'its energy sits in the largest entries, so trimming the rest loses little'
      : concentration >= 1.3
        ? 'its energy leans to the largest entries, but trimming still drops a real share'
        : 'its energy is spread evenly, so trimming drops about as much as it removes';
  return (
    `TIES keeps ${percent(keep.entries)} of ${report.focus}'s entries, which hold ${percent(keep.energy)} of the ` +
    `energy and ${percent(keep.l1)} of the L1 mass: ${verdict}.`
  );
}

export interface SpectrumNumbers {
  model: string;
  tensor: string;
  /** min(rows, cols): the full rank. */
  fullRank: number;
  rank90: number | null;
  rank99: number | null;
  /** How many leading values were computed (all of them when exact). */
  computed: number;
}

/** How low-rank one task vector is, in words decided by its own 90% rank. */
export function spectrumCaption(s: SpectrumNumbers): string {
  const r90 = s.rank90;
  const head = `rank ${r90 ?? `more than ${s.computed}`} of ${s.fullRank} holds 90% of the energy of ${s.model}'s change to ${s.tensor}`;
  if (r90 === null)
    return `${head}: the change is spread over many directions, so low-rank merges lose much of it.`;
  const share = r90 / s.fullRank;
  const verdict =
    share <= 0.1
      ? 'a few singular directions carry most of it, so a low-rank (SVD) merge keeps it nearly whole'
      : share <= 0.35
        ? 'it is low-rank in part: a rank of that size keeps most of it'
        : 'it is close to full rank, so a low-rank merge would lose much of it';
  return `${head} (${percent(share)} of the full rank): ${verdict}.`;
}

export interface BeforeAfterRow {
  layer: number;
  block: 'attention' | 'mlp';
  /** ‖θ_merged − θ_base‖ / ‖θ_S2 − θ_base‖ for that layer and block. */
  ratio: number;
}

/** Per layer and block, the merged model's task vector as a share of System 2's. */
export function beforeAfterRows(
  report: TaskVectorInspection,
  merged: number,
  system2: number,
): BeforeAfterRow[] {
  return report.layers.flatMap((l) =>
    (['attention', 'mlp'] as const).map((block) => ({
      layer: l.layer,
      block,
      // Both norms are relative to the same base norm, so their ratio is the ratio of task vectors.
      ratio: relativeNorm(l.norms[merged][block]) / relativeNorm(l.norms[system2][block]),
    })),
  );
}

export function beforeAfterCaption(report: TaskVectorInspection, merged: number, system2: number): string {
  const overall = relativeNorm(report.totals.norms[merged]) / relativeNorm(report.totals.norms[system2]);
  const rows = beforeAfterRows(report, merged, system2).filter((r) => Number.isFinite(r.ratio));
  if (!rows.length || !Number.isFinite(overall))
    return 'The merged model and System 2 could not be compared.';
  const low = rows.reduce((a, b) => (b.ratio < a.ratio ? b : a));
  const high = rows.reduce((a, b) => (b.ratio > a.ratio ? b : a));
  return (
    `${report.models[merged]} carries ${percent(overall)} of ${report.models[system2]}'s change to the base ` +
    `(from ${percent(low.ratio)} in layer ${low.layer}'s ${BLOCK_WORDS[low.block]} to ${percent(high.ratio)} in ` +
    `layer ${high.layer}'s ${BLOCK_WORDS[high.block]}): what the merge kept of the slow thinker.`
  );
}
