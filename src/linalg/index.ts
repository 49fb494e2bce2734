/** Dense linear algebra on row-major f32 matrices for the SVD family of merge methods. */

export { LinalgArgumentError, LinalgShapeError } from './errors.js';
export { type GaussianKey, gaussianMatrix } from './gaussian.js';
export { jacobiSvd, type SvdResult } from './jacobi-svd.js';
export { matmul, matmulTransA, matmulTransB, transpose } from './matmul.js';
export { householderQr, orthonormalize, type QrResult } from './qr.js';
export {
  exactSvd,
  type LowRankFactors,
  lowRankProduct,
  polarFactor,
  RSVD_DEFAULT_OVERSAMPLE,
  RSVD_DEFAULT_POWER_ITERATIONS,
  type RsvdOptions,
  rsvd,
} from './rsvd.js';
export {
  cumulativeEnergy,
  energyKept,
  energyRank,
  frobeniusNormSquared,
  leadingEnergy,
  numericalRank,
} from './spectrum.js';
