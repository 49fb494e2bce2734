/**
 * Scoring of generated answers and the paper's summary table (Wu et al. 2025, Tables 1-2): per model
 * the accuracy and the mean number of generated tokens, and the length change relative to the System 2
 * model, len / len_S2 - 1 (the paper's "length" column on one benchmark; negative = shorter).
 */
import { answersMatch, extractAnswer } from './answer';
import type { EvalQuestion } from './questions';

export interface EvalResult {
  model: string;
  questionId: string;
  gold: string;
  /** The normalised extracted answer; undefined when the response has none. */
  predicted?: string;
  correct: boolean;
  /** Tokens the model generated for this question (the eos token included when it stopped there). */
  generatedTokens: number;
  finishReason?: string;
}

/** Grades one response. */
export function scoreResponse(
  model: string,
  question: EvalQuestion,
  responseText: string,
  generatedTokens: number,
  finishReason?: string,
): EvalResult {
  const extracted = extractAnswer(responseText);
  return {
    model,
    questionId: question.id,
    gold: question.answer,
    predicted: extracted?.value,
    correct: answersMatch(extracted?.value, question.answer),
    generatedTokens,
    finishReason,
  };
}

export interface EvalTableRow {
  model: string;
  questions: number;
  correct: number;
  /** correct / questions, in [0, 1]. */
  accuracy: number;
  meanTokens: number;
  /** meanTokens / meanTokens of the reference model - 1; undefined without a reference (or for it). */
  lengthChange?: number;
}

export class EvalTableError extends Error {
  override name = 'EvalTableError';
}

/**
 * One row per model, in the order the models first appear in `results`. `reference` names the System 2
 * model the length change is measured against; it must be one of the models. Each model must have
 * answered the same questions, else accuracies would not compare.
 */
export function summarize(results: readonly EvalResult[], reference?: string): EvalTableRow[] {
  const byModel = new Map<string, EvalResult[]>();
  for (const r of results) {
    const list = byModel.get(r.model) ?? [];
    list.push(r);
    byModel.set(r.model, list);
  }
  if (reference !== undefined && !byModel.has(reference)) {
    const names = [...byModel.keys()].join(', ') || 'none';
    throw new EvalTableError(
      `the reference model '${reference}' has no results (models with results: ${names})`,
    );
  }
  const questionSet = (list: EvalResult[]) =>
    list
      .map((r) => r.questionId)
      .sort()
      .join('\n');
  const [first] = byModel.values();
  for (const [model, list] of byModel) {
    if (new Set(list.map((r) => r.questionId)).size !== list.length) {
      throw new EvalTableError(`model '${model}' has more than one result for a question`);
    }
    if (questionSet(list) !== questionSet(first)) {
      throw new EvalTableError(
        `model '${model}' answered ${list.length} questions, not the same ${first.length} as '${first[0].model}'`,
      );
    }
  }
  const rows: EvalTableRow[] = [...byModel].map(([model, list]) => {
    const correct = list.filter((r) => r.correct).length;
    return {
      model,
      questions: list.length,
      correct,
      accuracy: correct / list.length,
      meanTokens: list.reduce((sum, r) => sum + r.generatedTokens, 0) / list.length,
    };
  });
  const referenceRow = rows.find((r) => r.model === reference);
  if (referenceRow && referenceRow.meanTokens > 0) {
    for (const row of rows) {
      if (row !== referenceRow) row.lengthChange = row.meanTokens / referenceRow.meanTokens - 1;
    }
  }
  return rows;
}

/** `-53.0%`, `+4.2%`. */
export function formatLengthChange(change: number | undefined): string {
  if (change === undefined || !Number.isFinite(change)) return '';
  const percent = (change * 100).toFixed(1);
  return `${change > 0 ? '+' : ''}${percent === '-0.0' ? '0.0' : percent}%`;
}

/** The table as aligned plain text (the CLI's `eval` output). */
export function formatEvalTable(rows: readonly EvalTableRow[], reference?: string): string {
  const header = [
    'model',
    'accuracy',
    'correct',
    'mean tokens',
    reference ? `length vs ${reference}` : 'length',
  ];
  const body = rows.map((r) => [
    r.model,
    `${(r.accuracy * 100).toFixed(1)}%`,
    `${r.correct}/${r.questions}`,
    r.meanTokens.toFixed(1),
    r.model === reference ? '(reference)' : formatLengthChange(r.lengthChange),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i].length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}
