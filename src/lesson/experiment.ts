/**
 * The paper's 1.5B experiment as the guided flow runs it: the recipe (the paper's TIES preset over the
 * two paper repos), the estimates shown before anything is downloaded, the GPU check, and the table of
 * the user's results beside the paper's (CSV for slides). The flow's UI is src/ui/lesson/paper-experiment.ts.
 */
import { formatBytes } from '../formats/size';
import { type HubModelPlan, largestTensorBytes } from '../store/hub-plan';
import { PAPER_1_5B_MODELS, PAPER_TIES_1_5B, TABLE_1_5B } from './paper-results';

/** The merge recipe of the experiment, in mergekit YAML, with models named as the library names them. */
export function experimentRecipe(
  system1 = PAPER_1_5B_MODELS.system1,
  system2 = PAPER_1_5B_MODELS.system2,
): string {
  const { density, weight, lambda } = PAPER_TIES_1_5B;
  return `merge_method: ties
base_model: ${system1}
models:
  - model: ${system2}
    parameters:
      weight: ${weight.toFixed(1)}
      density: ${density}
parameters:
  lambda: ${lambda.toFixed(1)}
dtype: bfloat16
`;
}

/**
 * Throughputs behind the time estimate, stated so the user can judge them: a home connection's
 * download speed, and a merge's pace on a laptop (read two models, write one).
 */
export const ESTIMATE_DOWNLOAD_BYTES_PER_S = 25e6;
export const ESTIMATE_MERGE_BYTES_PER_S = 150e6;

export interface ExperimentEstimate {
  /** Bytes still to download (models already in the library count zero). */
  downloadBytes: number;
  /** The merged output's bytes (System 2's weights, bf16, with its untied lm_head). */
  outputBytes: number;
  /** Storage the experiment adds: downloads plus the output. */
  storageBytes: number;
  downloadSeconds: number;
  mergeSeconds: number;
}

export function estimateExperiment(
  plans: { system1: HubModelPlan; system2: HubModelPlan },
  inLibrary: { system1: boolean; system2: boolean },
): ExperimentEstimate {
  const downloadBytes =
    (inLibrary.system1 ? 0 : plans.system1.bytes) + (inLibrary.system2 ? 0 : plans.system2.bytes);
  const outputBytes = Math.max(plans.system1.weightBytes, plans.system2.weightBytes);
  const mergeRead = plans.system1.weightBytes + plans.system2.weightBytes;
  return {
    downloadBytes,
    outputBytes,
    storageBytes: downloadBytes + outputBytes,
    downloadSeconds: downloadBytes / ESTIMATE_DOWNLOAD_BYTES_PER_S,
    mergeSeconds: (mergeRead + outputBytes) / ESTIMATE_MERGE_BYTES_PER_S,
  };
}

/** What WebGPU tells of the adapter: no API gives its total memory, only per-buffer limits. */
export interface AdapterFacts {
  available: boolean;
  description?: string;
  maxBufferSize?: number;
  maxStorageBufferBindingSize?: number;
  isFallbackAdapter?: boolean;
}

export type GpuVerdict = { fits: true; message: string } | { fits: false; message: string };

/**
 * Whether the GPU can run the 1.5B models for Compare. The weights stay in their stored dtype on the
 * device, one buffer per tensor, so the largest tensor (the embedding) must fit one buffer and one
 * storage binding; the whole model must fit the device's memory, which WebGPU does not report, so
 * that part is stated as a requirement.
 */
export function gpuVerdict(adapter: AdapterFacts, plan: HubModelPlan): GpuVerdict {
  const largest = largestTensorBytes(plan.config);
  const need = `${plan.repo} needs ${formatBytes(plan.weightBytes)} of GPU memory for its weights, with single tensors of ${formatBytes(largest)}`;
  if (!adapter.available) {
    return {
      fits: false,
      message: `This browser offers no WebGPU adapter, so the models would run on the CPU, far too slowly for a lecture. ${need}.`,
    };
  }
  const limits = [adapter.maxBufferSize, adapter.maxStorageBufferBindingSize].filter(
    (v): v is number => typeof v === 'number',
  );
  const allowed = limits.length ? Math.min(...limits) : 0;
  if (allowed < largest) {
    return {
      fits: false,
      message: `${need}; this GPU (${adapter.description ?? 'unknown'}) allows buffers of at most ${formatBytes(allowed)}.`,
    };
  }
  const software = adapter.isFallbackAdapter ? ' It is a software adapter: generation will be slow.' : '';
  return {
    fits: true,
    message: `${need}; this GPU (${adapter.description ?? 'unknown'}) allows buffers of ${formatBytes(allowed)}.${software}`,
  };
}

/** One model's result on the questions (the Compare table's row). */
export interface ExperimentRow {
  model: string;
  questions: number;
  accuracy: number;
  meanTokens: number;
  lengthChange?: number;
}

export interface ComparisonRow {
  role: 'System 2' | 'Merged (TIES)' | 'System 1';
  model: string;
  yours?: ExperimentRow;
  paper?: { gsm8k: number; tokens: number | null };
}

/** The user's table beside the paper's Table 2 (GSM8K), one row per role. */
export function comparisonRows(
  rows: readonly ExperimentRow[],
  names: { system1: string; system2: string; merged: string },
): ComparisonRow[] {
  const find = (model: string) => rows.find((r) => r.model === model);
  const paper = (model: string) => {
    const row = TABLE_1_5B.find((r) => r.model === model);
    return row ? { gsm8k: row.gsm8k, tokens: row.tokens } : undefined;
  };
  return [
    { role: 'System 2', model: names.system2, yours: find(names.system2), paper: paper('R1-Distill-1.5B') },
    { role: 'Merged (TIES)', model: names.merged, yours: find(names.merged), paper: paper('TIES') },
    { role: 'System 1', model: names.system1, yours: find(names.system1) },
  ];
}

function csvField(v: string | number | undefined | null): string {
  if (v === undefined || v === null) return '';
  const s = typeof v === 'number' ? String(Number(v.toFixed(4))) : v;
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** The comparison as CSV: accuracies in percent, tokens as means, length change vs System 2 in percent. */
export function comparisonCsv(rows: readonly ComparisonRow[]): string {
  const header = [
    'role',
    'model',
    'questions',
    'accuracy_percent',
    'mean_tokens',
    'length_change_percent',
    'paper_gsm8k_percent',
    'paper_mean_tokens',
  ];
  const lines = rows.map((r) =>
    [
      r.role,
      r.model,
      r.yours?.questions,
      r.yours && r.yours.accuracy * 100,
      r.yours?.meanTokens,
      r.yours?.lengthChange !== undefined ? r.yours.lengthChange * 100 : undefined,
      r.paper?.gsm8k,
      r.paper?.tokens,
    ]
      .map(csvField)
      .join(','),
  );
  return `${[header.join(','), ...lines].join('\n')}\n`;
}
