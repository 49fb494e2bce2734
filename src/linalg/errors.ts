/** A matrix whose length or shape does not match what an operation was told. */
export class LinalgShapeError extends Error {
  override name = 'LinalgShapeError';
}

/** Arguments outside an operation's contract (a negative rank, a fraction outside [0, 1]). */
export class LinalgArgumentError extends Error {
  override name = 'LinalgArgumentError';
}
