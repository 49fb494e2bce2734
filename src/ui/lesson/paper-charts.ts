/** The paper's results as charts of accuracy against answer length (Observable Plot). */
import * as Plot from '@observablehq/plot';
import { type MethodFamily, TABLE_1_5B, TABLE_7B, TIES_LENGTH_BY_SIZE } from '../../lesson/paper-results';
import type { ChartFrame, ChartSpec } from '../charts/chart';

const FAMILIES: MethodFamily[] = ['reference', 'task vector', 'SVD', 'activation'];
const FAMILY_COLORS = ['#4b5567', '#1c5fb8', '#862e9c', '#2b8a3e'];
const FAMILY_LEGEND = FAMILIES.map((label, i) => ({ label, color: FAMILY_COLORS[i] }));

function frameOptions(frame: ChartFrame, ariaLabel: string): Plot.PlotOptions {
  return {
    width: frame.width,
    height: Math.round(Math.max(200, Math.min(frame.maxHeight ?? 520, frame.width * 0.5))),
    marginLeft: Math.round(frame.fontSize * 4),
    marginRight: Math.round(frame.fontSize * 8),
    marginBottom: Math.round(frame.fontSize * 3),
    style: { fontSize: `${frame.fontSize}px`, background: 'transparent', overflow: 'visible' },
    ariaLabel,
  };
}

/** Table 1 (7B): mean accuracy over six benchmarks against the length change relative to R1. */
export function sevenBChart(): ChartSpec {
  const merged = TABLE_7B.filter((r) => r.lengthChange !== null).map((r) => ({
    ...r,
    length: (r.lengthChange as number) * 100,
  }));
  const system1 = TABLE_7B.find((r) => r.lengthChange === null);
  const draw = (frame: ChartFrame) =>
    Plot.plot({
      ...frameOptions(frame, 'Paper Table 1 (7B): average accuracy against length change relative to R1'),
      x: { label: 'length change vs R1-Distill-7B (%)', domain: [-70, 5], grid: true },
      y: { label: 'average accuracy (6 benchmarks)', domain: [30, 58], grid: true },
      color: { domain: FAMILIES, range: FAMILY_COLORS },
      marks: [
        system1
          ? Plot.ruleY([system1.average], { stroke: '#8a93a3', strokeDasharray: '4 3' })
          : Plot.ruleY([]),
        system1
          ? Plot.text([system1], {
              x: -70,
              y: 'average',
              text: (d: { model: string; average: number }) => `${d.model} (System 1): ${d.average}`,
              textAnchor: 'start',
              dy: -8,
              fill: '#4b5567',
            })
          : Plot.text([]),
        Plot.dot(merged, { x: 'length', y: 'average', fill: 'family', r: 6, tip: true, title: tipText7b }),
        // AIM-TIES and TIES sit almost on one point: their labels go to either side.
        ...[false, true].map((left) =>
          Plot.text(
            merged.filter((r) => (r.model === 'AIM-TIES') === left),
            {
              x: 'length',
              y: 'average',
              text: 'model',
              dx: left ? -9 : 9,
              textAnchor: left ? 'end' : 'start',
              fill: '#1d2330',
            },
          ),
        ),
      ],
    });
  return { draw, legend: FAMILY_LEGEND };
}

function tipText7b(d: { model: string; average: number; length: number; scores: number[] }): string {
  return `${d.model}\naverage ${d.average}, length ${d.length.toFixed(1)}%\nGSM8K ${d.scores[0]}, MATH500 ${d.scores[1]}, AIME24 ${d.scores[5]}`;
}

/** Table 2 (1.5B, GSM8K): accuracy against mean response tokens; averaging's collapse as a rule. */
export function onePointFiveBChart(): ChartSpec {
  const withTokens = TABLE_1_5B.filter((r) => r.tokens !== null);
  const collapsed = TABLE_1_5B.filter((r) => r.tokens === null);
  const draw = (frame: ChartFrame) =>
    Plot.plot({
      ...frameOptions(frame, 'Paper Table 2 (1.5B): GSM8K accuracy against mean response tokens'),
      x: { label: 'mean response tokens on GSM8K (log)', type: 'log', domain: [250, 4000], grid: true },
      y: { label: 'GSM8K accuracy', domain: [20, 90], grid: true },
      color: { domain: FAMILIES, range: FAMILY_COLORS },
      marks: [
        Plot.ruleY(collapsed, { y: 'gsm8k', stroke: '#b02a37', strokeDasharray: '4 3' }),
        Plot.text(collapsed, {
          x: 250,
          y: 'gsm8k',
          text: (d: { model: string; gsm8k: number }) => `${d.model} merging collapses: ${d.gsm8k}`,
          textAnchor: 'start',
          dy: -8,
          fill: '#b02a37',
        }),
        Plot.dot(withTokens, {
          x: 'tokens',
          y: 'gsm8k',
          fill: 'family',
          r: 6,
          tip: true,
          title: (d: { model: string; gsm8k: number; tokens: number }) =>
            `${d.model}\nGSM8K ${d.gsm8k} with ${d.tokens} tokens`,
        }),
        Plot.text(withTokens, {
          x: 'tokens',
          y: 'gsm8k',
          text: (d: { model: string; tokens: number }) => `${d.model} (${d.tokens})`,
          dx: 9,
          textAnchor: 'start',
          fill: '#1d2330',
        }),
      ],
    });
  return { draw, legend: FAMILY_LEGEND };
}

/** TIES' length change by model size: the effect shrinks with scale. */
export function scaleChart(): ChartSpec {
  const data = TIES_LENGTH_BY_SIZE.map((r) => ({ size: r.size, change: r.lengthChange * 100 }));
  const draw = (frame: ChartFrame) =>
    Plot.plot({
      ...frameOptions(frame, 'TIES length change relative to R1-Distill by model size'),
      x: { label: 'model size', domain: data.map((d) => d.size) },
      y: { label: 'length change vs R1-Distill (%)', domain: [-60, 0], grid: true },
      marks: [
        Plot.barY(data, { x: 'size', y: 'change', fill: '#1c5fb8', tip: true }),
        Plot.text(data, {
          x: 'size',
          y: 'change',
          text: (d: { change: number }) => `${d.change.toFixed(1)}%`,
          dy: 12,
          fill: '#1d2330',
        }),
        Plot.ruleY([0]),
      ],
    });
  return { draw, legend: [{ label: 'TIES (mean over six benchmarks)', color: '#1c5fb8' }] };
}
