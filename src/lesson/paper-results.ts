/**
 * The results of Wu et al. 2025, "Unlocking Efficient Long-to-Short LLM Reasoning with Model
 * Merging" (arXiv 2503.20641), as the lesson charts them: Table 1 (7B) and Table 2 (1.5B), and the
 * length changes at 14B and 32B. Figures are the paper's; nothing here is computed.
 */

export const PAPER = {
  title: 'Unlocking Efficient Long-to-Short LLM Reasoning with Model Merging',
  authors: 'Wu et al. 2025',
  arxiv: '2503.20641',
  url: 'https://arxiv.org/abs/2503.20641',
  code: 'https://github.com/hahahawu/Long-to-Short-via-Model-Merging',
} as const;

export type MethodFamily = 'reference' | 'task vector' | 'SVD' | 'activation';

export interface SevenBRow {
  model: string;
  family: MethodFamily;
  /** GSM8K, MATH500, Minerva Math, OlympiadBench, College Math, AIME24. */
  scores: [number, number, number, number, number, number];
  average: number;
  /** Mean over the benchmarks of (length / R1's length - 1); null for the two source models. */
  lengthChange: number | null;
}

export const BENCHMARKS_7B = ['GSM8K', 'MATH500', 'Minerva', 'Olympiad', 'College', 'AIME24'] as const;

/** Table 1: Qwen2.5-Math-7B (System 1, the base) merged with DeepSeek-R1-Distill-Qwen-7B (System 2). */
export const TABLE_7B: readonly SevenBRow[] = [
  {
    model: 'Qwen2.5-Math-7B',
    family: 'reference',
    scores: [88.9, 52.2, 12.1, 17.5, 22.6, 3.3],
    average: 32.8,
    lengthChange: null,
  },
  {
    model: 'R1-Distill-7B',
    family: 'reference',
    scores: [89.3, 87.4, 36.4, 51.0, 39.8, 23.3],
    average: 54.5,
    lengthChange: 0,
  },
  {
    model: 'Average',
    family: 'task vector',
    scores: [81.6, 78.2, 30.9, 37.9, 36.1, 26.7],
    average: 48.6,
    lengthChange: -0.346,
  },
  {
    model: 'Task arithmetic',
    family: 'task vector',
    scores: [90.5, 83.4, 41.9, 45.0, 40.3, 20.0],
    average: 53.5,
    lengthChange: -0.487,
  },
  {
    model: 'TIES',
    family: 'task vector',
    scores: [90.6, 81.8, 38.2, 43.0, 41.9, 33.3],
    average: 54.8,
    lengthChange: -0.53,
  },
  {
    model: 'DARE-TIES',
    family: 'task vector',
    scores: [89.6, 82.4, 37.5, 41.3, 40.2, 23.3],
    average: 52.4,
    lengthChange: -0.504,
  },
  {
    model: 'LoRE',
    family: 'SVD',
    scores: [84.8, 80.8, 37.5, 40.9, 35.5, 30.0],
    average: 51.6,
    lengthChange: -0.416,
  },
  {
    model: 'Twin',
    family: 'SVD',
    scores: [87.6, 79.6, 31.2, 40.0, 38.1, 26.7],
    average: 50.5,
    lengthChange: -0.358,
  },
  {
    model: 'AIM-TIES',
    family: 'activation',
    scores: [90.8, 83.0, 40.8, 46.4, 42.3, 26.7],
    average: 55.0,
    lengthChange: -0.553,
  },
  {
    model: 'Sens-Merging',
    family: 'activation',
    scores: [91.3, 83.0, 41.9, 45.0, 40.3, 36.7],
    average: 56.4,
    lengthChange: -0.498,
  },
];

/** Response lengths of the two 7B source models (mean tokens, range over the benchmarks). */
export const LENGTHS_7B = {
  system1: { model: 'Qwen2.5-Math-7B', min: 130, max: 1528 },
  system2: { model: 'R1-Distill-7B', min: 1062, max: 8675 },
} as const;

export interface OnePointFiveBRow {
  model: string;
  family: MethodFamily;
  gsm8k: number;
  /** Mean response tokens on GSM8K; null where the paper gives none. */
  tokens: number | null;
}

/** Table 2 (GSM8K): Qwen2.5-Math-1.5B merged with DeepSeek-R1-Distill-Qwen-1.5B. */
export const TABLE_1_5B: readonly OnePointFiveBRow[] = [
  { model: 'R1-Distill-1.5B', family: 'reference', gsm8k: 76.8, tokens: 2744 },
  { model: 'Task arithmetic', family: 'task vector', gsm8k: 74.5, tokens: 550 },
  { model: 'TIES', family: 'task vector', gsm8k: 75.9, tokens: 394 },
  { model: 'Sens-Merging', family: 'activation', gsm8k: 81.3, tokens: 340 },
  { model: 'Average', family: 'task vector', gsm8k: 26.6, tokens: null },
];

/** TIES' length change (mean over benchmarks, against R1-Distill of the same size) by model size. */
export const TIES_LENGTH_BY_SIZE = [
  { size: '7B', lengthChange: -0.53 },
  { size: '14B', lengthChange: -0.087 },
  { size: '32B', lengthChange: -0.279 },
] as const;

/** The paper's TIES preset for 1.5B and 7B: trim 80% (mergekit density 0.2), weight 1, lambda 1. */
export const PAPER_TIES_1_5B = { density: 0.2, weight: 1, lambda: 1 } as const;

/** The repos of the paper's 1.5B experiment. */
export const PAPER_1_5B_MODELS = {
  system1: 'Qwen/Qwen2.5-Math-1.5B',
  system2: 'deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B',
} as const;
