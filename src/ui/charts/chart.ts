/**
 * <l2s-chart>: one Observable Plot chart with its legend and export buttons (PNG for slides, SVG for
 * print). The owner passes a `spec`: `draw` returns the Plot element and is called again whenever the
 * spec, the width or the font size changes, so charts follow their data and their box. The legend is
 * the chart's own (not Plot's HTML one) so that the exported files carry it too.
 */
import { css, html, LitElement, nothing, type PropertyValues } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import { fileStem, saveBlob, svgDocument, svgToPng } from './export';

/** What a chart draws into: its width in CSS pixels and the font size the page wants. */
export interface ChartFrame {
  width: number;
  fontSize: number;
  /** The most height the owner gives the chart (a lesson step fits one screen). */
  maxHeight?: number;
}

export type ChartDraw = (frame: ChartFrame) => SVGSVGElement | HTMLElement;

export interface LegendItem {
  label: string;
  color: string;
  dashed?: boolean;
}

export interface ChartSpec {
  draw: ChartDraw;
  legend: LegendItem[];
}

/**
 * One image to assistive technology: Plot labels its inner mark groups with aria-label, which ARIA
 * does not allow on generic elements; the chart's own label (and its caption beside it) speak for it.
 * Tooltip groups keep a data attribute, so exports can leave them out.
 */
function accessibleChart(svg: SVGSVGElement | undefined): void {
  if (!svg) return;
  svg.setAttribute('role', 'img');
  for (const el of svg.querySelectorAll('[aria-label]')) {
    if (el.getAttribute('aria-label') === 'tip') el.setAttribute('data-chart-tip', '');
    el.removeAttribute('aria-label');
  }
}

@customElement('l2s-chart')
export class L2sChart extends LitElement {
  static override styles = css`
    :host {
      display: block;
      min-width: 0;
    }
    .plot :is(svg) {
      max-width: 100%;
      height: auto;
      display: block;
    }
    .legend {
      display: flex;
      flex-wrap: wrap;
      gap: 2px 14px;
      color: #1d2330;
    }
    .swatch {
      display: inline-block;
      width: 16px;
      height: 4px;
      vertical-align: middle;
      margin-right: 5px;
    }
    .swatch.dashed {
      background: repeating-linear-gradient(90deg, currentColor 0 5px, transparent 5px 8px) !important;
    }
    .actions {
      display: flex;
      gap: 6px;
      justify-content: flex-end;
      margin-top: 2px;
    }
    .actions button {
      font: inherit;
      font-size: 12px;
      padding: 1px 8px;
    }
    .error {
      color: #a4161a;
      font-size: 12px;
    }
  `;

  @property({ attribute: false }) spec?: ChartSpec;
  /** Names the exported files and labels the buttons for screen readers. */
  @property({ attribute: 'chart-title' }) chartTitle = 'chart';
  /** Font size of axes and labels (presenter mode raises it). */
  @property({ type: Number, attribute: 'font-size' }) fontSize = 12;
  /** Upper bound on the chart's height in CSS pixels (0: the chart's own choice). */
  @property({ type: Number, attribute: 'max-height' }) maxHeight = 0;
  /** Hides the export buttons (a lesson step shows them only on request). */
  @property({ type: Boolean, attribute: 'no-export' }) noExport = false;

  @state() private width = 0;
  @state() private exportError = '';
  private node?: SVGSVGElement | HTMLElement;
  private resize?: ResizeObserver;

  override connectedCallback(): void {
    super.connectedCallback();
    this.resize = new ResizeObserver((entries) => {
      const width = Math.floor(entries[0]?.contentRect.width ?? 0);
      // Redraw only for real changes: a scrollbar appearing must not loop.
      if (width > 0 && Math.abs(width - this.width) > 8) this.width = width;
    });
    this.resize.observe(this);
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    this.resize?.disconnect();
  }

  protected override willUpdate(changed: PropertyValues): void {
    const redraw = ['spec', 'width', 'fontSize', 'maxHeight'].some((k) => changed.has(k));
    if (redraw && this.spec && this.width > 0) {
      this.node = this.spec.draw({
        width: this.width,
        fontSize: this.fontSize,
        maxHeight: this.maxHeight || undefined,
      });
      accessibleChart(this.svg);
    }
  }

  /** The chart's SVG (Plot returns a figure when it adds a legend; the SVG is inside). */
  get svg(): SVGSVGElement | undefined {
    const node = this.node;
    if (!node) return undefined;
    return node instanceof SVGSVGElement ? node : (node.querySelector('svg') ?? undefined);
  }

  private async export(kind: 'png' | 'svg'): Promise<void> {
    const svg = this.svg;
    if (!svg) return;
    this.exportError = '';
    try {
      const blob =
        kind === 'svg'
          ? new Blob([svgDocument(svg, this.spec?.legend)], { type: 'image/svg+xml' })
          : await svgToPng(svg, this.spec?.legend);
      saveBlob(blob, `${fileStem(this.chartTitle)}.${kind}`);
    } catch (e) {
      this.exportError = (e as Error).message;
    }
  }

  override render() {
    const legend = this.spec?.legend ?? [];
    return html`<div class="plot" data-testid="chart" data-title=${this.chartTitle}>${this.node ?? nothing}</div>
      ${
        legend.length
          ? html`<div class="legend" style="font-size: ${this.fontSize}px">
            ${legend.map(
              (item) =>
                html`<span
                  ><span
                    class="swatch ${item.dashed ? 'dashed' : ''}"
                    style="color: ${item.color}; background: ${item.dashed ? 'none' : item.color}"
                  ></span
                  >${item.label}</span
                >`,
            )}
          </div>`
          : nothing
      }
      ${
        this.noExport || !this.node
          ? nothing
          : html`<div class="actions">
            <button data-testid="chart-png" aria-label="Save ${this.chartTitle} as PNG" @click=${() => this.export('png')}>
              PNG
            </button>
            <button data-testid="chart-svg" aria-label="Save ${this.chartTitle} as SVG" @click=${() => this.export('svg')}>
              SVG
            </button>
          </div>`
      }
      ${this.exportError ? html`<div class="error" role="alert">${this.exportError}</div>` : nothing}`;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'l2s-chart': L2sChart;
  }
}
