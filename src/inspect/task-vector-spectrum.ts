/**
 * The singular spectrum of one 2-D task vector: how fast its singular values decay, and the rank
 * that holds 90% and 99% of its energy (sum of squared singular values = ||delta||_F^2). A fast decay
 * is what lets the low-rank merge methods keep a task vector's effect from a few directions.
 *
 * Small matrices get the exact Jacobi SVD; larger ones the leading values from the randomized SVD,
 * with energy shares taken against the exact ||delta||_F^2, so a rank beyond the computed values is
 * reported as unknown rather than guessed.
 */
import {
  cumulativeEnergy,
  energyRank,
  frobeniusNormSquared,
  jacobiSvd,
  LinalgShapeError,
  rsvd,
} from '../linalg';

/** Largest min(rows, cols) given the exact SVD: Jacobi costs O(sweeps * r^2 * c), about a second here. */
export const EXACT_SPECTRUM_MAX_RANK = 256;
/** Singular values computed for larger matrices (randomized SVD with oversampling and power iterations). */
export const LEADING_SPECTRUM_RANK = 128;

export interface TaskVectorSpectrum {
  readonly rows: number;
  readonly cols: number;
  /** Singular values, descending; all min(rows, cols) of them when `exact`, else the leading ones. */
  readonly singularValues: Float64Array;
  /** singularValues / the largest one (all zeros for a zero matrix). */
  readonly normalized: Float64Array;
  /** Entry i: share of the total energy held by the first i + 1 singular values. */
  readonly cumulativeEnergy: Float64Array;
  /** ||delta||_F^2. */
  readonly totalEnergy: number;
  /** Smallest rank holding 90% / 99% of the energy; null when beyond the computed values. */
  readonly rank90: number | null;
  readonly rank99: number | null;
  readonly exact: boolean;
}

/** Smallest rank holding `share` of the energy, or null when the computed values fall short of it. */
function rankFor(s: Float64Array, cumulative: Float64Array, share: number, total: number, exact: boolean) {
  if (total <= 0) return 0;
  const rank = energyRank(s, share, total);
  if (exact) return rank;
  // energyRank answers s.length when even all computed values fall short.
  const reached = rank > 0 && cumulative[rank - 1] >= share * (1 - 1e-12);
  return reached ? rank : null;
}

/** Spectrum of a rows x cols row-major matrix; `name` keys the randomized SVD's test matrix. */
export function taskVectorSpectrum(
  delta: Float32Array,
  rows: number,
  cols: number,
  name = '',
): TaskVectorSpectrum {
  if (!(Number.isInteger(rows) && Number.isInteger(cols) && rows > 0 && cols > 0)) {
    throw new LinalgShapeError(`a spectrum needs a matrix with rows and columns, got ${rows}x${cols}`);
  }
  if (delta.length !== rows * cols) {
    throw new LinalgShapeError(
      `spectrum of ${rows}x${cols} expects ${rows * cols} values, got ${delta.length}`,
    );
  }
  const total = frobeniusNormSquared(delta);
  const exact = Math.min(rows, cols) <= EXACT_SPECTRUM_MAX_RANK;
  const s = exact
    ? jacobiSvd(delta, rows, cols).S
    : rsvd(delta, rows, cols, LEADING_SPECTRUM_RANK, { seed: 0, name }).S;
  const largest = s[0] ?? 0;
  const normalized = s.map((v) => (largest > 0 ? v / largest : 0));
  const cumulative = cumulativeEnergy(s, exact ? undefined : total);
  return {
    rows,
    cols,
    singularValues: s,
    normalized,
    cumulativeEnergy: cumulative,
    totalEnergy: total,
    rank90: rankFor(s, cumulative, 0.9, total, exact),
    rank99: rankFor(s, cumulative, 0.99, total, exact),
    exact,
  };
}
