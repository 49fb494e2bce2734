/**
 * Dense matrix products on row-major Float32Array with explicit shapes.
 *
 * Every product accumulates in f64 and rounds to f32 once per output element, so the result does
 * not depend on the blocking below (a GPU port that accumulates in f32 differs by rounding only).
 *
 * Blocking: the shared dimension (or the output rows, for A^T*B) is cut into panels whose f64
 * accumulator plus input panel stay inside a typical 256 KiB L2 cache; within a panel the inner loop
 * is a contiguous axpy over an output row, unrolled four ways over the shared index so each
 * accumulator element is loaded and stored once per four multiply-adds.
 */

import { LinalgShapeError } from './errors.js';

/** Bytes of f64 accumulator plus f32 input a panel may use; sized for a 256 KiB L2. */
const PANEL_BYTES = 192 * 1024;

function checkLength(what: string, array: ArrayLike<number>, rows: number, cols: number): void {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new LinalgShapeError(`${what}: shape ${rows}x${cols} is not a pair of non-negative integers`);
  }
  if (array.length !== rows * cols) {
    throw new LinalgShapeError(
      `${what}: expected ${rows}x${cols} = ${rows * cols} values, got ${array.length}`,
    );
  }
}

/** Rows of the shared dimension per panel so that `panelRows * width` f32 inputs fit the panel budget. */
function panelRows(width: number): number {
  return Math.max(16, Math.floor(PANEL_BYTES / 2 / (4 * Math.max(1, width))));
}

function roundToF32(acc: Float64Array): Float32Array {
  return Float32Array.from(acc);
}

/**
 * C (m x n) += A (m x k) * B (k x n) into the f64 accumulator `acc`, for shared indices [p0, p1).
 * Contiguous axpy over C's row; four shared indices per pass.
 */
function accumulateRows(
  a: Float32Array,
  b: Float32Array,
  acc: Float64Array,
  m: number,
  k: number,
  n: number,
  p0: number,
  p1: number,
): void {
  for (let i = 0; i < m; i++) {
    const aRow = i * k;
    const cRow = i * n;
    let p = p0;
    for (; p + 3 < p1; p += 4) {
      const a0 = a[aRow + p];
      const a1 = a[aRow + p + 1];
      const a2 = a[aRow + p + 2];
      const a3 = a[aRow + p + 3];
      if (a0 === 0 && a1 === 0 && a2 === 0 && a3 === 0) continue;
      const b0 = p * n;
      const b1 = b0 + n;
      const b2 = b1 + n;
      const b3 = b2 + n;
      for (let j = 0; j < n; j++) {
        acc[cRow + j] += a0 * b[b0 + j] + a1 * b[b1 + j] + a2 * b[b2 + j] + a3 * b[b3 + j];
      }
    }
    for (; p < p1; p++) {
      const a0 = a[aRow + p];
      if (a0 === 0) continue;
      const b0 = p * n;
      for (let j = 0; j < n; j++) acc[cRow + j] += a0 * b[b0 + j];
    }
  }
}

/** C = A * B with A m x k and B k x n; returns C (m x n). */
export function matmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number): Float32Array {
  checkLength('matmul A', a, m, k);
  checkLength('matmul B', b, k, n);
  const acc = new Float64Array(m * n);
  const step = panelRows(n);
  for (let p0 = 0; p0 < k; p0 += step) accumulateRows(a, b, acc, m, k, n, p0, Math.min(k, p0 + step));
  return roundToF32(acc);
}

/**
 * C = A^T * B with A k x m and B k x n (both stored row-major as given); returns C (m x n).
 * Output rows are cut into panels so that a panel of the f64 accumulator stays in cache while every
 * row of A and B streams past it once.
 */
export function matmulTransA(
  a: Float32Array,
  b: Float32Array,
  k: number,
  m: number,
  n: number,
): Float32Array {
  checkLength('matmulTransA A', a, k, m);
  checkLength('matmulTransA B', b, k, n);
  const acc = new Float64Array(m * n);
  const step = Math.max(8, Math.floor(PANEL_BYTES / (8 * Math.max(1, n))));
  for (let j0 = 0; j0 < m; j0 += step) {
    const j1 = Math.min(m, j0 + step);
    let p = 0;
    for (; p + 3 < k; p += 4) {
      const a0 = p * m;
      const a1 = a0 + m;
      const a2 = a1 + m;
      const a3 = a2 + m;
      const b0 = p * n;
      const b1 = b0 + n;
      const b2 = b1 + n;
      const b3 = b2 + n;
      for (let j = j0; j < j1; j++) {
        const s0 = a[a0 + j];
        const s1 = a[a1 + j];
        const s2 = a[a2 + j];
        const s3 = a[a3 + j];
        if (s0 === 0 && s1 === 0 && s2 === 0 && s3 === 0) continue;
        const cRow = j * n;
        for (let c = 0; c < n; c++) {
          acc[cRow + c] += s0 * b[b0 + c] + s1 * b[b1 + c] + s2 * b[b2 + c] + s3 * b[b3 + c];
        }
      }
    }
    for (; p < k; p++) {
      const aRow = p * m;
      const bRow = p * n;
      for (let j = j0; j < j1; j++) {
        const s = a[aRow + j];
        if (s === 0) continue;
        const cRow = j * n;
        for (let c = 0; c < n; c++) acc[cRow + c] += s * b[bRow + c];
      }
    }
  }
  return roundToF32(acc);
}

/** Transpose of a rows x cols row-major matrix (cols x rows). */
export function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  checkLength('transpose', a, rows, cols);
  const t = new Float32Array(rows * cols);
  const tile = 32;
  for (let i0 = 0; i0 < rows; i0 += tile) {
    const i1 = Math.min(rows, i0 + tile);
    for (let j0 = 0; j0 < cols; j0 += tile) {
      const j1 = Math.min(cols, j0 + tile);
      for (let i = i0; i < i1; i++) for (let j = j0; j < j1; j++) t[j * rows + i] = a[i * cols + j];
    }
  }
  return t;
}

/**
 * C = A * B^T with A m x k and B n x k; returns C (m x n). Computed as A * (B^T) after an explicit
 * transpose of B, so the inner loop stays a contiguous axpy (B is the small factor in every use here).
 */
export function matmulTransB(
  a: Float32Array,
  b: Float32Array,
  m: number,
  k: number,
  n: number,
): Float32Array {
  checkLength('matmulTransB A', a, m, k);
  checkLength('matmulTransB B', b, n, k);
  return matmul(a, transpose(b, n, k), m, k, n);
}
