/**
 * The paper's hyperparameters (Wu et al. 2025, Table 7) as recipe settings. The paper trims a
 * fraction k, so mergekit's density is 1 - k; its alpha scales the merged task vector (a weight in
 * task arithmetic, lambda in TIES). The paper gives
 * DARE only its drop rate p (density 1 - p) and no 32B setting.
 */
import type { AimSettings } from '../recipe/aim';

export type ModelScale = '1.5B' | '7B' | '14B' | '32B';

export interface RecipePreset {
  label: string;
  /** The one scale, or several when the paper uses the same setting for them. */
  scale: ModelScale | readonly ModelScale[];
  mergeMethod: 'task_arithmetic' | 'ties' | 'dare_ties';
  /** Per-model parameters of the System 2 model(s). */
  modelParams: Record<string, number>;
  globalParams: Record<string, number>;
  /** Where the numbers come from, shown beside the button. */
  note: string;
  /** Activation-informed merging on top of the method (AIM-TIES). */
  aim?: AimSettings;
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
  // AIM-TIES: TIES (k 0.8, alpha 1.0, the same at 1.5B and 7B) then AIM with omega 0.4, calibrated on
  // 100 random s1K samples of question and short answer (the paper's setting; needs the network).
  {
    label: 'AIM-TIES 7B / 1.5B',
    scale: ['7B', '1.5B'],
    mergeMethod: 'ties',
    modelParams: { weight: 1.0, density: 0.2 },
    globalParams: { lambda: 1.0 },
    note: 'k 0.8, alpha 1.0, omega 0.4; calibration: 100 s1K samples (question + short answer)',
    aim: {
      omega: 0.4,
      calibration: {
        source: {
          kind: 'hub',
          dataset: 'simplescaling/s1K',
          config: 'default',
          split: 'train',
          field: ['question', 'attempt'],
        },
        samples: 100,
        blockSize: 512,
        seed: 42,
      },
    },
  },
];
