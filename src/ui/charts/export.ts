/**
 * Chart export: a chart is one SVG element drawn by Observable Plot, so the SVG file is its markup
 * (with the namespace and the page's font made explicit) and the PNG is that SVG rasterised on a
 * canvas at a pixel ratio fit for slides.
 */

/** Font of the page, written into exported files so they look the same outside it. */
const EXPORT_FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';

export class ChartExportError extends Error {
  override name = 'ChartExportError';
}

export interface ExportLegendItem {
  label: string;
  color: string;
  dashed?: boolean;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
const LEGEND_ROW = 20;

/**
 * A standalone SVG document of `svg`: namespaces, size and a white background set, and the legend
 * drawn below the chart (on the page it is HTML beside the SVG).
 */
export function svgDocument(svg: SVGSVGElement, legend: readonly ExportLegendItem[] = []): string {
  const { width, height } = svgSize(svg);
  const chart = svg.cloneNode(true) as SVGSVGElement;
  // Tooltips exist only under the pointer; a file shows the chart at rest.
  for (const tip of chart.querySelectorAll('[data-chart-tip], [aria-label="tip"]')) tip.remove();
  chart.setAttribute('width', String(width));
  chart.setAttribute('height', String(height));
  chart.setAttribute('x', '0');
  chart.setAttribute('y', '0');

  const rows = legendRows(legend, width);
  const total = height + (rows.length ? rows.length * LEGEND_ROW + 8 : 0);
  const doc = document.createElementNS(SVG_NS, 'svg');
  doc.setAttribute('xmlns', SVG_NS);
  doc.setAttribute('width', String(width));
  doc.setAttribute('height', String(total));
  doc.setAttribute('viewBox', `0 0 ${width} ${total}`);
  doc.setAttribute('font-family', EXPORT_FONT);
  doc.setAttribute('font-size', '12');
  const background = document.createElementNS(SVG_NS, 'rect');
  background.setAttribute('width', '100%');
  background.setAttribute('height', '100%');
  background.setAttribute('fill', '#ffffff');
  doc.append(background, chart);
  rows.forEach((row, r) => {
    for (const { item, x } of row) {
      const y = height + 8 + r * LEGEND_ROW + LEGEND_ROW / 2;
      const swatch = document.createElementNS(SVG_NS, 'line');
      for (const [k, v] of Object.entries({ x1: x, x2: x + 16, y1: y, y2: y }))
        swatch.setAttribute(k, String(v));
      swatch.setAttribute('stroke', item.color);
      swatch.setAttribute('stroke-width', '4');
      if (item.dashed) swatch.setAttribute('stroke-dasharray', '5 3');
      const text = document.createElementNS(SVG_NS, 'text');
      text.setAttribute('x', String(x + 21));
      text.setAttribute('y', String(y + 4));
      text.setAttribute('fill', '#1d2330');
      text.textContent = item.label;
      doc.append(swatch, text);
    }
  });
  return `<?xml version="1.0" encoding="UTF-8"?>\n${new XMLSerializer().serializeToString(doc)}`;
}

/** Legend items laid out left to right, wrapping at `width` (text width estimated from its length). */
function legendRows(
  legend: readonly ExportLegendItem[],
  width: number,
): { item: ExportLegendItem; x: number }[][] {
  const rows: { item: ExportLegendItem; x: number }[][] = [];
  let row: { item: ExportLegendItem; x: number }[] = [];
  let x = 8;
  for (const item of legend) {
    const w = 21 + item.label.length * 6.5 + 16;
    if (row.length && x + w > width) {
      rows.push(row);
      row = [];
      x = 8;
    }
    row.push({ item, x });
    x += w;
  }
  if (row.length) rows.push(row);
  return rows;
}

function svgSize(svg: SVGSVGElement): { width: number; height: number } {
  const box = svg.viewBox.baseVal;
  const width = Number(svg.getAttribute('width')) || box?.width || svg.clientWidth;
  const height = Number(svg.getAttribute('height')) || box?.height || svg.clientHeight;
  if (!(width > 0 && height > 0))
    throw new ChartExportError('The chart has no size yet; export it once it is drawn.');
  return { width, height };
}

/** The chart as a PNG, `scale` pixels per SVG unit (2 keeps text sharp on a projector). */
export async function svgToPng(
  svg: SVGSVGElement,
  legend: readonly ExportLegendItem[] = [],
  scale = 2,
): Promise<Blob> {
  const markup = svgDocument(svg, legend);
  const size = /<svg[^>]*\swidth="([\d.]+)"[^>]*\sheight="([\d.]+)"/.exec(markup);
  const width = Number(size?.[1]);
  const height = Number(size?.[2]);
  const url = URL.createObjectURL(new Blob([markup], { type: 'image/svg+xml' }));
  try {
    const image = new Image();
    image.decoding = 'sync';
    await new Promise<void>((resolve, reject) => {
      image.onload = () => resolve();
      image.onerror = () => reject(new ChartExportError('The browser could not draw the chart as an image.'));
      image.src = url;
    });
    const canvas = document.createElement('canvas');
    canvas.width = Math.round(width * scale);
    canvas.height = Math.round(height * scale);
    const context = canvas.getContext('2d');
    if (!context) throw new ChartExportError('This browser gives no 2-D canvas to draw the PNG on.');
    context.fillStyle = '#ffffff';
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.drawImage(image, 0, 0, canvas.width, canvas.height);
    return await new Promise<Blob>((resolve, reject) =>
      canvas.toBlob(
        (blob) => (blob ? resolve(blob) : reject(new ChartExportError('The PNG could not be encoded.'))),
        'image/png',
      ),
    );
  } finally {
    URL.revokeObjectURL(url);
  }
}

/** Saves a Blob under `fileName` through a temporary object URL (revoked once the click is handled). */
export function saveBlob(blob: Blob, fileName: string): void {
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = fileName;
  link.style.display = 'none';
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 0);
}

/** A file name stem from a chart title: lower case, dashes, nothing a file system objects to. */
export function fileStem(title: string): string {
  const stem = title
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  return stem.slice(0, 80) || 'chart';
}
