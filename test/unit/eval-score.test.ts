import { describe, expect, it } from 'vitest';
import type { EvalQuestion } from '../../src/eval/questions';
import {
  type EvalResult,
  EvalTableError,
  formatEvalTable,
  formatLengthChange,
  scoreResponse,
  summarize,
} from '../../src/eval/score';

const questions: EvalQuestion[] = [
  { id: 'q1', question: 'One?', answer: '12' },
  { id: 'q2', question: 'Two?', answer: '-3' },
];

describe('scoreResponse', () => {
  it('extracts, normalises and grades', () => {
    expect(scoreResponse('s2', questions[0], String.raw`... \boxed{12.0}`, 40, 'eos')).toEqual({
      model: 's2',
      questionId: 'q1',
      gold: '12',
      predicted: '12',
      correct: true,
      generatedTokens: 40,
      finishReason: 'eos',
    });
    const wrong = scoreResponse('s1', questions[1], 'no idea', 5);
    expect(wrong.correct).toBe(false);
    expect(wrong.predicted).toBeUndefined();
  });
});

describe('summarize', () => {
  const results: EvalResult[] = [
    scoreResponse('System 2', questions[0], String.raw`\boxed{12}`, 300),
    scoreResponse('System 2', questions[1], String.raw`\boxed{-3}`, 500),
    scoreResponse('merged', questions[0], 'The answer is 12.', 100),
    scoreResponse('merged', questions[1], 'The answer is 3.', 140),
    scoreResponse('System 1', questions[1], '-3', 8),
    scoreResponse('System 1', questions[0], '11', 12),
  ];

  it('gives accuracy, mean tokens and the length change against System 2', () => {
    const rows = summarize(results, 'System 2');
    expect(rows.map((r) => r.model)).toEqual(['System 2', 'merged', 'System 1']);
    expect(rows[0]).toEqual({ model: 'System 2', questions: 2, correct: 2, accuracy: 1, meanTokens: 400 });
    expect(rows[1].accuracy).toBe(0.5);
    expect(rows[1].meanTokens).toBe(120);
    expect(rows[1].lengthChange).toBeCloseTo(120 / 400 - 1, 12);
    expect(rows[2].correct).toBe(1);
    expect(rows[2].lengthChange).toBeCloseTo(10 / 400 - 1, 12);
  });

  it('leaves the length change out without a reference', () => {
    expect(summarize(results).every((r) => r.lengthChange === undefined)).toBe(true);
  });

  it('refuses an absent reference, duplicates, and models that answered different questions', () => {
    expect(() => summarize(results, 'R1')).toThrow(EvalTableError);
    expect(() => summarize(results, 'R1')).toThrow(/'R1' has no results/);
    expect(() => summarize([...results, results[0]], 'System 2')).toThrow(/more than one result/);
    expect(() => summarize(results.slice(0, 5), 'System 2')).toThrow(/answered 1 questions, not the same 2/);
  });

  it('formats the table as the paper reports it', () => {
    const text = formatEvalTable(summarize(results, 'System 2'), 'System 2');
    expect(text.split('\n')).toEqual([
      'model     accuracy  correct  mean tokens  length vs System 2',
      '--------  --------  -------  -----------  ------------------',
      'System 2    100.0%      2/2        400.0         (reference)',
      'merged       50.0%      1/2        120.0              -70.0%',
      'System 1     50.0%      1/2         10.0              -97.5%',
    ]);
  });

  it('formats length changes with a sign', () => {
    expect(formatLengthChange(0.042)).toBe('+4.2%');
    expect(formatLengthChange(-0.53)).toBe('-53.0%');
    expect(formatLengthChange(-0.00001)).toBe('0.0%');
    expect(formatLengthChange(undefined)).toBe('');
  });
});
