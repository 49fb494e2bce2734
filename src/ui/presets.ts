/**
 * The paper's hyperparameters (Wu et al. 2025, Table 7) as recipe settings. The paper trims a
 * fraction k, so mergekit's density is 1 - k; its alpha scales the merged task vector (a weight in
 * task arithmetic, lambda in TIES). The paper gives
 * DARE only its drop rate p (density 1 - p) and no 32B setting.
 */
export type ModelScale = '1.5B' | '7B' | '14B' | '32B';

export interface RecipePreset {
  label: string;
  scale: ModelScale;
  mergeMethod: 'task_arithmetic' | 'ties' | 'dare_ties';
  /** Per-model parameters of the System 2 model(s). */
  modelParams: Record<string, number>;
  globalParams: Record<string, number>;
  /** Where the numbers come from, shown beside the button. */
  note: string;
}

export const PAPER_PRESETS: readonly RecipePreset[] = [
  ...(['1.5B', '7B', '14B', '32B'] as const).map(
    (scale): RecipePreset => ({
      label: `Task arithmetic ${scale}`,
      scale,
      mergeMethod: 'task_arithmetic',
      modelParams: { weight: 0.7 },
      globalParams: {},
      note: 'alpha 0.7',
    }),
  ),
  // TIES normalizes by the kept weights, so the paper's alpha must be lambda: as a weight it would
  // cancel out.
  ...(
    [
      ['1.5B', 0.8, 1.0],
      ['7B', 0.8, 1.0],
      ['14B', 0.2, 0.5],
      ['32B', 0.25, 0.55],
    ] as const
  ).map(
    ([scale, k, alpha]): RecipePreset => ({
      label: `TIES ${scale}`,
      scale,
      mergeMethod: 'ties',
      modelParams: { weight: 1.0, density: Math.round((1 - k) * 100) / 100 },
      globalParams: { lambda: alpha },
      note: `k ${k}, alpha ${alpha}`,
    }),
  ),
  ...(
    [
      ['1.5B', 0.3],
      ['7B', 0.3],
      ['14B', 0.4],
    ] as const
  ).map(
    ([scale, p]): RecipePreset => ({
      label: `DARE-TIES ${scale}`,
      scale,
      mergeMethod: 'dare_ties',
      modelParams: { weight: 1.0, density: Math.round((1 - p) * 100) / 100 },
      globalParams: { lambda: 1.0 },
      note: `drop p ${p}`,
    }),
  ),
];
