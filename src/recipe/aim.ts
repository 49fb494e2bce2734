/**
 * The `aim:` block: activation-informed merging on top of the recipe's `merge_method` (an l2s-merge
 * extension of mergekit's YAML; mergekit itself would ignore it).
 *
 * ```yaml
 * merge_method: ties          # the method underneath
 * aim:
 *   omega: 0.4                # default 0.4
 *   calibration:              # default {source: builtin}
 *     source: hub             # builtin | file | hub
 *     dataset: simplescaling/s1K
 *     config: default         # hub only, default "default"
 *     split: train            # hub only, default "train"
 *     field: [question, solution]  # hub and .jsonl: one field or a list joined by "\n"
 *     path: calib.jsonl       # file only, relative to the recipe
 *     samples: 100            # default 100
 *     block_size: 512         # default 512
 *     seed: 42                # default 42
 *     sha256: <64 hex>        # optional: the calibration text must hash to this
 *   statistics: stats.safetensors  # optional: saved statistics to use instead of calibrating
 * ```
 */

export type CalibrationSource =
  | { readonly kind: 'builtin' }
  | { readonly kind: 'file'; readonly path: string; readonly field?: readonly string[] }
  | {
      readonly kind: 'hub';
      readonly dataset: string;
      readonly config: string;
      readonly split: string;
      readonly field: readonly string[];
    };

export interface CalibrationSettings {
  readonly source: CalibrationSource;
  /** Samples taken (fewer when the source has fewer usable ones). */
  readonly samples: number;
  readonly blockSize: number;
  /** Seed of the sample order (counter-based generator). */
  readonly seed: number;
  /** When set, the text used must hash to this (hex SHA-256); written into the output's recipe. */
  readonly sha256?: string;
}

export interface AimSettings {
  readonly omega: number;
  readonly calibration: CalibrationSettings;
  /** Saved statistics (aim_statistics.safetensors), relative to the recipe; replaces the calibration run. */
  readonly statistics?: string;
}

export const CALIBRATION_DEFAULTS = { samples: 100, blockSize: 512, seed: 42 } as const;
export const HUB_CALIBRATION_DEFAULTS = { config: 'default', split: 'train' } as const;

type Fail = (path: (string | number)[], detail: string) => never;

function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function describeValue(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  if (Array.isArray(v)) return 'a list';
  if (isMapping(v)) return 'a mapping';
  return String(v);
}

function onlyKeys(v: Record<string, unknown>, keys: readonly string[], path: string[], fail: Fail) {
  for (const key of Object.keys(v)) {
    if (!keys.includes(key)) fail([...path, key], `unknown key ${key}; accepted: ${keys.join(', ')}`);
  }
}

function text(v: unknown, path: string[], what: string, fail: Fail): string {
  if (typeof v !== 'string' || v.trim() === '')
    fail(path, `${what} must be a non-empty string, not ${describeValue(v)}`);
  return v;
}

function integer(v: unknown, path: string[], min: number, max: number, fail: Fail): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    fail(path, `must be an integer from ${min} to ${max}, not ${describeValue(v)}`);
  return v;
}

function fields(v: unknown, path: string[], fail: Fail): string[] {
  if (typeof v === 'string') return [text(v, path, 'field', fail)];
  if (!Array.isArray(v) || v.length === 0)
    fail(path, `field must be a column name or a non-empty list of them, not ${describeValue(v)}`);
  return v.map((f, i) => text(f, [...path, String(i)], 'field', fail));
}

const SOURCE_KEYS = {
  builtin: [],
  file: ['path', 'field'],
  hub: ['dataset', 'config', 'split', 'field'],
} as const;
const COMMON_KEYS = ['source', 'samples', 'block_size', 'seed', 'sha256'];

function readSource(v: Record<string, unknown>, path: string[], fail: Fail): CalibrationSource {
  const kind = v.source ?? 'builtin';
  if (kind !== 'builtin' && kind !== 'file' && kind !== 'hub')
    fail([...path, 'source'], `must be builtin, file or hub, not ${describeValue(kind)}`);
  onlyKeys(v, [...COMMON_KEYS, ...SOURCE_KEYS[kind]], path, fail);
  if (kind === 'builtin') return { kind };
  if (kind === 'file') {
    const file = text(v.path, [...path, 'path'], 'path (the calibration file, .txt or .jsonl)', fail);
    const isJsonl = /\.jsonl$/i.test(file);
    if (isJsonl && v.field === undefined)
      fail([...path, 'field'], 'a .jsonl calibration file needs field: the key holding each sample');
    if (!isJsonl && v.field !== undefined)
      fail([...path, 'field'], 'field applies to .jsonl files only; a text file is split at blank lines');
    return v.field === undefined
      ? { kind, path: file }
      : { kind, path: file, field: fields(v.field, [...path, 'field'], fail) };
  }
  const dataset = text(
    v.dataset,
    [...path, 'dataset'],
    'dataset (a hub dataset id, e.g. simplescaling/s1K)',
    fail,
  );
  if (v.field === undefined)
    fail([...path, 'field'], 'a hub calibration set needs field: the column(s) to use');
  return {
    kind,
    dataset,
    config:
      v.config === undefined
        ? HUB_CALIBRATION_DEFAULTS.config
        : text(v.config, [...path, 'config'], 'config', fail),
    split:
      v.split === undefined
        ? HUB_CALIBRATION_DEFAULTS.split
        : text(v.split, [...path, 'split'], 'split', fail),
    field: fields(v.field, [...path, 'field'], fail),
  };
}

export function readCalibrationBlock(v: unknown, path: string[], fail: Fail): CalibrationSettings {
  if (v === undefined || v === null) return { source: { kind: 'builtin' }, ...CALIBRATION_DEFAULTS };
  if (!isMapping(v)) fail(path, `calibration must be a mapping, not ${describeValue(v)}`);
  const source = readSource(v, path, fail);
  const settings: { -readonly [K in keyof CalibrationSettings]: CalibrationSettings[K] } = {
    source,
    samples:
      v.samples === undefined
        ? CALIBRATION_DEFAULTS.samples
        : integer(v.samples, [...path, 'samples'], 1, 1e6, fail),
    blockSize:
      v.block_size === undefined
        ? CALIBRATION_DEFAULTS.blockSize
        : integer(v.block_size, [...path, 'block_size'], 1, 1 << 20, fail),
    seed:
      v.seed === undefined
        ? CALIBRATION_DEFAULTS.seed
        : integer(v.seed, [...path, 'seed'], 0, 0xffffffff, fail),
  };
  if (v.sha256 !== undefined) {
    if (typeof v.sha256 !== 'string' || !/^[0-9a-f]{64}$/i.test(v.sha256))
      fail([...path, 'sha256'], `must be 64 hex digits (a SHA-256), not ${describeValue(v.sha256)}`);
    settings.sha256 = v.sha256.toLowerCase();
  }
  return settings;
}

/** Reads the `aim:` block; `fail` throws a RecipeError at the given YAML path. */
export function readAimBlock(v: unknown, path: string[], fail: Fail): AimSettings {
  if (!isMapping(v)) fail(path, `aim must be a mapping like {omega: 0.4}, not ${describeValue(v)}`);
  onlyKeys(v, ['omega', 'calibration', 'statistics'], path, fail);
  let omega = 0.4;
  if (v.omega !== undefined) {
    if (typeof v.omega !== 'number' || !Number.isFinite(v.omega) || v.omega < 0 || v.omega > 1)
      fail(
        [...path, 'omega'],
        `must be a number from 0 to 1 (the paper uses 0.4), not ${describeValue(v.omega)}`,
      );
    omega = v.omega;
  }
  const calibration = readCalibrationBlock(v.calibration, [...path, 'calibration'], fail);
  if (v.statistics === undefined || v.statistics === null) return { omega, calibration };
  const statistics = text(
    v.statistics,
    [...path, 'statistics'],
    'statistics (a saved aim_statistics.safetensors)',
    fail,
  );
  return { omega, calibration, statistics };
}

function fieldValue(f: readonly string[]): string | string[] {
  return f.length === 1 ? f[0] : [...f];
}

/** The `aim:` block as YAML data, every default written out so the output's recipe reproduces the run. */
export function aimBlockValue(aim: AimSettings): Record<string, unknown> {
  const c = aim.calibration;
  const calibration: Record<string, unknown> = { source: c.source.kind };
  if (c.source.kind === 'file') {
    calibration.path = c.source.path;
    if (c.source.field) calibration.field = fieldValue(c.source.field);
  } else if (c.source.kind === 'hub') {
    calibration.dataset = c.source.dataset;
    calibration.config = c.source.config;
    calibration.split = c.source.split;
    calibration.field = fieldValue(c.source.field);
  }
  calibration.samples = c.samples;
  calibration.block_size = c.blockSize;
  calibration.seed = c.seed;
  if (c.sha256 !== undefined) calibration.sha256 = c.sha256;
  const out: Record<string, unknown> = { omega: aim.omega, calibration };
  if (aim.statistics !== undefined) out.statistics = aim.statistics;
  return out;
}
