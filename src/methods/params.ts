/**
 * Reading resolved recipe parameters with errors that say which parameter of which model is wrong.
 * The recipe layer fills in defaults; the spec's default is used again here only when a parameter is
 * absent, so a method can also be called directly (tests, the demo) with partial parameters.
 */
import { MergeMethodError, type ParamSpec, type ResolvedParams } from './types';

function findSpec(specs: readonly ParamSpec[], name: string): ParamSpec | undefined {
  return specs.find((spec) => spec.name === name);
}

/** Where a parameter comes from, for messages: `global` or the model's name. */
function owner(model: string | undefined): string {
  return model === undefined ? 'global parameter' : `parameter of model "${model}"`;
}

export function readNumber(
  method: string,
  params: ResolvedParams,
  specs: readonly ParamSpec[],
  name: string,
  model?: string,
): number {
  const value = params[name] ?? findSpec(specs, name)?.default;
  if (value === undefined) {
    throw new MergeMethodError(`${method}: ${owner(model)} "${name}" is required but not set`);
  }
  if (typeof value !== 'number' || Number.isNaN(value)) {
    throw new MergeMethodError(
      `${method}: ${owner(model)} "${name}" must be a number, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

export function readBoolean(
  method: string,
  params: ResolvedParams,
  specs: readonly ParamSpec[],
  name: string,
  model?: string,
): boolean {
  const value = params[name] ?? findSpec(specs, name)?.default;
  if (value === undefined) {
    throw new MergeMethodError(`${method}: ${owner(model)} "${name}" is required but not set`);
  }
  if (typeof value !== 'boolean') {
    throw new MergeMethodError(
      `${method}: ${owner(model)} "${name}" must be true or false, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/** Number of elements of a shape (1 for a scalar). */
export function elementCount(shape: readonly number[]): number {
  let count = 1;
  for (const dim of shape) count *= dim;
  return count;
}
