/** Bad command-line arguments of a subcommand (exit code 2, with the usage text). */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** A prompt or questions file that cannot be read. */
export class InputFileError extends Error {
  override name = 'InputFileError';
}
