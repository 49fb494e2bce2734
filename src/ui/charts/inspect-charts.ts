/**
 * The Inspect charts, drawn with Observable Plot from an inspection report: per-layer task-vector
 * norms, sign conflicts, TIES' kept shares, one task vector's singular spectrum, and the merged model
 * against System 2. Each function returns a `ChartSpec`
 * (the drawing and its legend) for <l2s-chart>.
 */
import * as Plot from '@observablehq/plot';
import { type BeforeAfterRow, percent } from '../../inspect/captions';
import type { TaskVectorInspection } from '../../inspect/inspect-models';
import type { TaskVectorSpectrum } from '../../inspect/task-vector-spectrum';
import { conflictFraction, keptShares, relativeNorm } from '../../inspect/task-vector-stats';
import type { ChartFrame, ChartSpec, LegendItem } from './chart';

export const MODEL_COLORS = ['#1c5fb8', '#d9480f', '#2b8a3e', '#862e9c', '#b02a37', '#0b7285'];
const BLOCKS = ['attention', 'MLP'] as const;
const BLOCK_COLORS = ['#3b6fd0', '#c2410c'];

/** Height that keeps a chart readable at its width (wide on a projector, narrow on a phone). */
function heightFor(frame: ChartFrame): number {
  return Math.round(Math.max(180, Math.min(frame.maxHeight ?? 360, frame.width * 0.55)));
}

function base(frame: ChartFrame, ariaLabel: string): Plot.PlotOptions {
  return {
    width: frame.width,
    height: heightFor(frame),
    marginLeft: Math.round(frame.fontSize * 4),
    marginBottom: Math.round(frame.fontSize * 3),
    style: { fontSize: `${frame.fontSize}px`, background: 'transparent', overflow: 'visible' },
    ariaLabel,
  };
}

/** Layer ticks: every layer, or about a dozen for deep models. */
function layerTicks(layers: number): number[] {
  const step = Math.max(1, Math.ceil(layers / 12));
  return Array.from({ length: Math.ceil(layers / step) }, (_, i) => i * step);
}

export function normsChart(report: TaskVectorInspection): ChartSpec {
  const rows = report.models.flatMap((model, m) =>
    report.layers.flatMap((l) =>
      (['attention', 'mlp'] as const).map((block, b) => ({
        model,
        block: BLOCKS[b],
        series: `${model} · ${BLOCKS[b]}`,
        layer: l.layer,
        value: relativeNorm(l.norms[m][block]),
      })),
    ),
  );
  const finite = rows.filter((r) => Number.isFinite(r.value));
  const color = { domain: report.models, range: MODEL_COLORS.slice(0, report.models.length) };
  const legend: LegendItem[] = [
    ...report.models.map((label, m) => ({ label, color: MODEL_COLORS[m % MODEL_COLORS.length] })),
    { label: 'attention (filled, solid)', color: '#4b5567' },
    { label: 'MLP (open, dashed)', color: '#4b5567', dashed: true },
  ];
  const draw = (frame: ChartFrame) =>
    Plot.plot({
      ...base(frame, 'Relative task-vector norm per layer'),
      x: { label: 'layer', ticks: layerTicks(report.layers.length), tickFormat: 'd' },
      y: { label: '‖θ − θ_base‖ / ‖θ_base‖', grid: true, zero: true },
      color,
      marks: [
        Plot.ruleY([0]),
        ...BLOCKS.map((block) =>
          Plot.line(
            finite.filter((d) => d.block === block),
            {
              x: 'layer',
              y: 'value',
              z: 'series',
              stroke: 'model',
              strokeWidth: 2,
              strokeDasharray: block === 'MLP' ? '6 4' : undefined,
            },
          ),
        ),
        // Attention points filled, MLP points open: two marks, since a fill is a scale or a constant.
        ...BLOCKS.map((block) =>
          Plot.dot(
            finite.filter((d) => d.block === block),
            {
              x: 'layer',
              y: 'value',
              stroke: 'model',
              fill: block === 'MLP' ? 'white' : 'model',
              r: 3.5,
              tip: true,
              title: (d: { model: string; layer: number; block: string; value: number }) =>
                `${d.model}\nlayer ${d.layer} ${d.block}: ${d.value.toFixed(4)}`,
            },
          ),
        ),
      ],
    });
  return { draw, legend };
}

export function conflictsChart(report: TaskVectorInspection): ChartSpec {
  const rows = report.layers.flatMap((l) =>
    (['attention', 'mlp'] as const).map((block, b) => ({
      layer: l.layer,
      block: BLOCKS[b],
      value: conflictFraction(l.signs[block]),
    })),
  );
  const draw = (frame: ChartFrame) =>
    Plot.plot({
      ...base(frame, 'Share of weights whose task-vector signs conflict, per layer'),
      fx: { label: 'layer', padding: 0.15, tickFormat: 'd' },
      x: { axis: null, domain: BLOCKS },
      y: { label: 'sign conflicts', grid: true, tickFormat: (v: number) => percent(v) },
      color: { domain: BLOCKS, range: BLOCK_COLORS, legend: false },
      marks: [
        Plot.barY(rows, {
          fx: 'layer',
          x: 'block',
          y: 'value',
          fill: 'block',
          tip: true,
          title: (d: { layer: number; block: string; value: number }) =>
            `layer ${d.layer} ${d.block}: ${percent(d.value, 1)} in conflict`,
        }),
        Plot.ruleY([0]),
      ],
    });
  return { draw, legend: BLOCKS.map((label, b) => ({ label, color: BLOCK_COLORS[b] })) };
}

const KEPT = ['entries', 'L1 mass', 'energy (L2²)'] as const;
const KEPT_COLORS = ['#8a93a3', '#4c6ef5', '#2b8a3e'];

export function tiesKeptChart(report: TaskVectorInspection): ChartSpec {
  const rows = report.layers.flatMap((l) => {
    const s = keptShares(l.ties);
    return [s.entries, s.l1, s.energy].map((value, k) => ({ layer: l.layer, kind: KEPT[k], value }));
  });
  const draw = (frame: ChartFrame) =>
    Plot.plot({
      ...base(frame, 'Share of entries, L1 mass and energy TIES keeps per layer'),
      fx: { label: 'layer', padding: 0.15, tickFormat: 'd' },
      x: { axis: null, domain: KEPT },
      y: { label: 'kept by TIES', grid: true, domain: [0, 1], tickFormat: (v: number) => percent(v) },
      color: { domain: KEPT, range: KEPT_COLORS, legend: false },
      marks: [
        Plot.barY(rows, {
          fx: 'layer',
          x: 'kind',
          y: 'value',
          fill: 'kind',
          tip: true,
          title: (d: { layer: number; kind: string; value: number }) =>
            `layer ${d.layer}: ${percent(d.value, 1)} of ${d.kind} kept`,
        }),
        Plot.ruleY([0]),
      ],
    });
  return { draw, legend: KEPT.map((label, k) => ({ label, color: KEPT_COLORS[k] })) };
}

/** σ_i / σ_1 on a log axis, with the ranks that hold 90% and 99% of the energy marked. */
export function spectrumChart(spec: TaskVectorSpectrum, model: string): ChartSpec {
  const values = Array.from(spec.normalized, (v, i) => ({ rank: i + 1, value: Math.max(v, 1e-8) }));
  const energy = Array.from(spec.cumulativeEnergy, (v, i) => ({ rank: i + 1, value: v }));
  const markers = [
    { rank: spec.rank90, label: '90%' },
    { rank: spec.rank99, label: '99%' },
  ].filter((m): m is { rank: number; label: string } => m.rank !== null && m.rank >= 1);
  const draw = (frame: ChartFrame) =>
    Plot.plot({
      ...base(frame, `Singular spectrum of ${model}'s task vector`),
      x: { label: spec.exact ? 'rank' : `rank (leading ${values.length} values)` },
      y: { label: 'σᵢ / σ₁ (log); dashed: cumulative energy', type: 'log', grid: true, domain: [1e-4, 1] },
      marks: [
        Plot.line(values, { x: 'rank', y: 'value', stroke: MODEL_COLORS[0], strokeWidth: 2 }),
        // The energy share drawn on the same log axis from 1e-4 to 1 would hide its shape, so it is
        // mapped linearly onto the upper three decades: 0 -> 1e-3, 1 -> 1.
        Plot.line(energy, {
          x: 'rank',
          y: (d: { value: number }) => 10 ** (3 * d.value - 3),
          stroke: '#2b8a3e',
          strokeWidth: 2,
          strokeDasharray: '6 4',
        }),
        Plot.ruleX(markers, { x: 'rank', stroke: '#5d6677', strokeDasharray: '3 3' }),
        Plot.text(markers, {
          x: 'rank',
          y: 1,
          text: (d: { rank: number; label: string }) => `${d.label} at rank ${d.rank}`,
          dx: 4,
          dy: 8,
          textAnchor: 'start',
        }),
        Plot.tip(
          values,
          Plot.pointerX({
            x: 'rank',
            y: 'value',
            title: (d: { rank: number; value: number }) =>
              `rank ${d.rank}: σ/σ₁ ${d.value.toPrecision(3)}, ${percent(spec.cumulativeEnergy[d.rank - 1], 1)} of the energy`,
          }),
        ),
      ],
    });
  return {
    draw,
    legend: [
      { label: 'σᵢ / σ₁', color: MODEL_COLORS[0] },
      { label: 'cumulative energy (0 at 1e-3, 100% at 1)', color: '#2b8a3e', dashed: true },
    ],
  };
}

/** The merged model's task vector as a share of System 2's, per layer and block. */
export function beforeAfterChart(rows: BeforeAfterRow[], merged: string, system2: string): ChartSpec {
  const data = rows
    .filter((r) => Number.isFinite(r.ratio))
    .map((r) => ({ layer: r.layer, block: r.block === 'mlp' ? 'MLP' : 'attention', ratio: r.ratio }));
  const draw = (frame: ChartFrame) =>
    Plot.plot({
      ...base(frame, `${merged}'s task vector as a share of ${system2}'s, per layer`),
      fx: { label: 'layer', padding: 0.15, tickFormat: 'd' },
      x: { axis: null, domain: BLOCKS },
      y: {
        label: `share of ${system2}'s change`,
        grid: true,
        zero: true,
        tickFormat: (v: number) => percent(v),
      },
      color: { domain: BLOCKS, range: BLOCK_COLORS, legend: false },
      marks: [
        Plot.barY(data, {
          fx: 'layer',
          x: 'block',
          y: 'ratio',
          fill: 'block',
          tip: true,
          title: (d: { layer: number; block: string; ratio: number }) =>
            `layer ${d.layer} ${d.block}: ${percent(d.ratio, 1)} of System 2's change`,
        }),
        Plot.ruleY([1], { stroke: '#5d6677', strokeDasharray: '4 3' }),
        Plot.ruleY([0]),
      ],
    });
  return { draw, legend: BLOCKS.map((label, b) => ({ label, color: BLOCK_COLORS[b] })) };
}
