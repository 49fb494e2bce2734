import { describe, expect, it } from 'vitest';
import { answersMatch, boxedContents, extractAnswer, normalizeAnswer } from '../../src/eval/answer';
import { BUILTIN_QUESTIONS } from '../../src/eval/questions';

describe('boxedContents', () => {
  it('reads nested braces to the matching close', () => {
    expect(boxedContents(String.raw`so \boxed{\frac{3}{4}} and \boxed{{12}}`)).toEqual([
      String.raw`\frac{3}{4}`,
      '{12}',
    ]);
  });
  it('takes a bare argument and runs an unclosed box to the end', () => {
    expect(boxedContents(String.raw`\boxed 42 then \fbox{7`)).toEqual(['42', '7']);
  });
});

describe('extractAnswer', () => {
  it('prefers the last boxed answer over everything else', () => {
    const text = String.raw`The answer is 5. Wait, \boxed{6} no: \boxed{\text{1,234}} and then 99`;
    expect(extractAnswer(text)).toEqual({ raw: String.raw`\text{1,234}`, value: '1234', source: 'boxed' });
  });
  it('reads "The answer is N" (the last one) without a box', () => {
    expect(extractAnswer('First 12. The answer is 23. Then 7 more, final answer: -4 apples.')).toEqual({
      raw: '-4',
      value: '-4',
      source: 'answer-is',
    });
    expect(extractAnswer('The answer is $1,050.00.')?.value).toBe('1050');
  });
  it('falls back to the last number, keeping minus signs only where they cannot be subtraction', () => {
    expect(extractAnswer('14, 27 and 5: 14 + 27 = 41, 41-5=36')).toEqual({
      raw: '36',
      value: '36',
      source: 'last-number',
    });
    expect(extractAnswer('35-2')?.value).toBe('2');
    expect(extractAnswer('it fell to -3 degrees')?.value).toBe('-3');
    expect(extractAnswer('a list 14, 27, 5')?.value).toBe('5');
    expect(extractAnswer('costs 1,200,000 in all')?.value).toBe('1200000');
  });
  it("reads the fixture models' answer style", () => {
    expect(extractAnswer('The answer is 23.')?.value).toBe('23');
    // System 2 cut off inside its reasoning: the last number, not a final answer.
    expect(
      extractAnswer('<think>\nSo I subtract 10 from 34: 34 - 10 = 24.\nLet me double-check.\n24 + '),
    ).toEqual({
      raw: '24',
      value: '24',
      source: 'last-number',
    });
  });
  it('gives nothing for a response without a number', () => {
    expect(extractAnswer('I do not know.')).toBeUndefined();
    expect(extractAnswer('')).toBeUndefined();
  });
});

describe('normalizeAnswer', () => {
  it.each([
    ['1,234', '1234'],
    ['1234.0', '1234'],
    ['1234.50', '1234.5'],
    ['+7', '7'],
    ['-0', '0'],
    ['−12', '-12'],
    ['$18', '18'],
    [String.raw`\$18`, '18'],
    ['18 dollars', '18'],
    ['50%', '50'],
    [String.raw`\frac{3}{4}`, '0.75'],
    [String.raw`-\dfrac{1}{2}`, '-0.5'],
    ['3/4', '0.75'],
    ['23.', '23'],
    [String.raw`\text{ 42 }`, '42'],
    [String.raw`1\,000`, '1000'],
    ['x + 1', 'x + 1'],
  ])('%s -> %s', (input, out) => {
    expect(normalizeAnswer(input)).toBe(out);
  });
});

describe('answersMatch', () => {
  it('compares as numbers after normalising', () => {
    expect(answersMatch('1,234.0', '1234')).toBe(true);
    expect(answersMatch('0.75', String.raw`\frac{3}{4}`)).toBe(true);
    expect(answersMatch('24', '23')).toBe(false);
    expect(answersMatch('-3', '3')).toBe(false);
    expect(answersMatch(undefined, '3')).toBe(false);
    expect(answersMatch('', '0')).toBe(false);
  });
});

describe('BUILTIN_QUESTIONS', () => {
  it('has at least 30 distinct questions with integer answers and stable ids', () => {
    expect(BUILTIN_QUESTIONS.length).toBeGreaterThanOrEqual(30);
    expect(new Set(BUILTIN_QUESTIONS.map((q) => q.id)).size).toBe(BUILTIN_QUESTIONS.length);
    expect(new Set(BUILTIN_QUESTIONS.map((q) => q.question)).size).toBe(BUILTIN_QUESTIONS.length);
    for (const q of BUILTIN_QUESTIONS) {
      expect(Number.isInteger(Number(q.answer)), q.id).toBe(true);
      expect(normalizeAnswer(q.answer)).toBe(q.answer);
      expect(q.question.endsWith('?'), q.id).toBe(true);
    }
    expect(BUILTIN_QUESTIONS[0].id).toBe('builtin-01');
  });
  it('grades a boxed correct answer to every question as correct', () => {
    for (const q of BUILTIN_QUESTIONS) {
      expect(answersMatch(extractAnswer(`so \\boxed{${q.answer}}`)?.value, q.answer)).toBe(true);
    }
  });
});
