/** Dense linear algebra on row-major f32 matrices for the SVD family of merge methods. */

export { LinalgArgumentError, LinalgShapeError } from './errors.js';
export { type GaussianKey, gaussianMatrix } from './gaussian.js';
export { jacobiSvd, type SvdResult } from './jacobi-svd.js';
export { matmul, matmulTransA, matmulTransB, transpose } from './matmul.js';
export {
  choleskyUpper,
  householderQr,
  invertUpper,
  multiplyUpper,
  orthonormalize,
  type QrResult,
} from './qr.js';
export {
  emptyFactors,
  exactSvd,
  type LowRankFactors,
  leadingColumns,
  lowRankOperands,
  lowRankProduct,
  polarFactor,
  polarRotation,
  RSVD_DEFAULT_OVERSAMPLE,
  RSVD_DEFAULT_POWER_ITERATIONS,
  type RsvdDimensions,
  type RsvdOptions,
  rsvd,
  rsvdDimensions,
} from './rsvd.js';
export {
  cumulativeEnergy,
  energyKept,
  energyRank,
  frobeniusNormSquared,
  leadingEnergy,
  numericalRank,
} from './spectrum.js';
