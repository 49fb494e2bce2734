/**
 * safetensors header parsing with hard limits.
 *
 * Layout: 8 bytes little-endian u64 N, then N bytes of UTF-8 JSON
 * `{"__metadata__": {...}, "<name>": {"dtype", "shape", "data_offsets": [begin, end]}, ...}`,
 * then the data section; offsets are relative to the data section's start (8 + N).
 * Files come from users and the network, so every field is checked before it is trusted, and no
 * value read from the file can make us allocate more than the file's own size or loop unboundedly.
 */
import type { ByteSource } from './byte-source';
import { DTYPE_BYTES, type DType, isDType } from './dtype';
import { jsonDepthOver, MAX_JSON_DEPTH, shortJson } from './json-text';

/** Bytes of the u64 header-length prefix. */
const LENGTH_PREFIX_BYTES = 8;

/**
 * Largest JSON header we read. Real headers are a few hundred KB even for MoE models with tens of
 * thousands of tensors; the reference implementation refuses beyond 100 MB, so a corrupt or hostile
 * length cannot make us read (and allocate) the whole file as "header".
 */
export const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = '__metadata__';

/** A safetensors file that is malformed or inconsistent; permanent: rereading will not help. */
export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
  readonly file: string;
  readonly tensor?: string;

  constructor(file: string, detail: string, tensor?: string) {
    super(tensor === undefined ? `${file}: ${detail}` : `${file}: tensor '${tensor}': ${detail}`);
    this.file = file;
    this.tensor = tensor;
  }
}

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** absolute byte offset in the file */
  offset: number;
  byteLength: number;
  /** The file holding the tensor (the source's name, or a model-relative file name in a model index). */
  file: string;
}

export interface SafetensorsHeader {
  file: string;
  /** Bytes of the JSON header, not counting the 8-byte length prefix. */
  headerByteLength: number;
  /** Absolute offset of the data section: 8 + headerByteLength. */
  dataOffset: number;
  /** In header order. */
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

export async function readSafetensorsHeader(source: ByteSource): Promise<SafetensorsHeader> {
  const file = source.name;
  const fail = (detail: string, tensor?: string) => new SafetensorsError(file, detail, tensor);

  if (source.size < LENGTH_PREFIX_BYTES) {
    throw fail(
      `file is ${source.size} bytes, too short for a safetensors file (it must start with an 8-byte header length)`,
    );
  }
  const prefix = await source.read(0, LENGTH_PREFIX_BYTES);
  const headerLength = new DataView(prefix.buffer, prefix.byteOffset, LENGTH_PREFIX_BYTES).getBigUint64(
    0,
    true,
  );
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw fail(
      `header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit; the file is not safetensors or is corrupt`,
    );
  }
  const headerByteLength = Number(headerLength);
  const dataOffset = LENGTH_PREFIX_BYTES + headerByteLength;
  if (dataOffset > source.size) {
    throw fail(
      `header length ${headerByteLength} runs past the end of the file (${source.size} bytes); the file is truncated`,
    );
  }

  const headerBytes = await source.read(LENGTH_PREFIX_BYTES, headerByteLength);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw fail('header is not valid UTF-8');
  }
  const depth = jsonDepthOver(text);
  if (depth !== undefined) {
    throw fail(
      `header nests JSON deeper than ${MAX_JSON_DEPTH} levels; a safetensors header nests 3, so the file is corrupt or not safetensors`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) throw fail(`header must be a JSON object, found ${describeJson(json)}`);

  const metadata = parseMetadata(json[METADATA_KEY], fail);
  const dataByteLength = source.size - dataOffset;
  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(json)) {
    if (name === METADATA_KEY) continue;
    tensors.set(name, parseTensorEntry(name, entry, dataOffset, dataByteLength, file, fail));
  }
  checkNoOverlap(tensors, dataOffset, fail);
  return { file, headerByteLength, dataOffset, tensors, metadata };
}

/** The tensor's raw little-endian bytes. */
export async function readTensorBytes(source: ByteSource, info: TensorInfo): Promise<Uint8Array> {
  if (info.offset < 0 || info.byteLength < 0 || info.offset + info.byteLength > source.size) {
    throw new SafetensorsError(
      source.name,
      `bytes ${info.offset}..${info.offset + info.byteLength} lie outside the file (${source.size} bytes); ` +
        'the file changed since its header was read',
      info.name,
    );
  }
  return source.read(info.offset, info.byteLength);
}

type Fail = (detail: string, tensor?: string) => SafetensorsError;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describeJson(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${shortJson(v, 40)}`;
  return `${typeof v} ${String(v)}`;
}

function parseMetadata(raw: unknown, fail: Fail): Record<string, string> {
  if (raw === undefined) return {};
  if (!isPlainObject(raw))
    throw fail(`${METADATA_KEY} must be an object of strings, found ${describeJson(raw)}`);
  const metadata: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (typeof value !== 'string') {
      throw fail(`${METADATA_KEY} entry '${key}' must be a string, found ${describeJson(value)}`);
    }
    // defineProperty so a key such as `__proto__` stays plain data.
    Object.defineProperty(metadata, key, { value, enumerable: true, writable: true, configurable: true });
  }
  return metadata;
}

function parseTensorEntry(
  name: string,
  entry: unknown,
  dataOffset: number,
  dataByteLength: number,
  file: string,
  fail: Fail,
): TensorInfo {
  if (!isPlainObject(entry)) throw fail(`entry must be an object, found ${describeJson(entry)}`, name);

  const dtype = entry.dtype;
  if (typeof dtype !== 'string' || !isDType(dtype)) {
    throw fail(`unknown dtype ${shortJson(dtype)} (known: ${Object.keys(DTYPE_BYTES).join(', ')})`, name);
  }

  const shape = entry.shape;
  if (!Array.isArray(shape)) throw fail(`shape must be an array, found ${describeJson(shape)}`, name);
  for (const [axis, dim] of shape.entries()) {
    if (typeof dim !== 'number' || !Number.isSafeInteger(dim) || dim < 0) {
      throw fail(`shape ${shortJson(shape)}: dimension ${axis} must be a non-negative integer`, name);
    }
  }

  const offsets = entry.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2) {
    throw fail(`data_offsets must be [begin, end], found ${shortJson(offsets)}`, name);
  }
  const [begin, end] = offsets as unknown[];
  if (typeof begin !== 'number' || typeof end !== 'number' || !Number.isSafeInteger(begin)) {
    throw fail(`data_offsets ${shortJson(offsets)} must be integers`, name);
  }
  if (!Number.isSafeInteger(end) || begin < 0 || end < begin) {
    throw fail(`data_offsets ${shortJson(offsets)} must satisfy 0 <= begin <= end`, name);
  }

  const byteLength = end - begin;
  const expected = expectedByteLength(shape as number[], DTYPE_BYTES[dtype]);
  if (expected !== byteLength) {
    const want = expected === undefined ? 'more bytes than any file can hold' : `${expected} bytes`;
    throw fail(
      `shape ${shortJson(shape)} of ${dtype} needs ${want}, but data_offsets ${shortJson(offsets)} span ${byteLength}`,
      name,
    );
  }
  if (end > dataByteLength) {
    throw fail(
      `data_offsets ${shortJson(offsets)} run past the end of the data section ` +
        `(${dataByteLength} bytes after the header); the file is truncated`,
      name,
    );
  }
  return { name, dtype, shape: shape.slice() as number[], offset: dataOffset + begin, byteLength, file };
}

/** product(shape) * elementBytes, or undefined when that is not a safe integer. */
function expectedByteLength(shape: number[], elementBytes: number): number | undefined {
  if (shape.includes(0)) return 0;
  let bytes = elementBytes;
  for (const dim of shape) {
    bytes *= dim;
    if (bytes > Number.MAX_SAFE_INTEGER) return undefined;
  }
  return bytes;
}

/** Two tensors sharing bytes would alias silently; zero-size tensors own no bytes and may sit anywhere. */
function checkNoOverlap(tensors: Map<string, TensorInfo>, dataOffset: number, fail: Fail): void {
  const byStart = [...tensors.values()].filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1];
    const cur = byStart[i];
    if (cur.offset < prev.offset + prev.byteLength) {
      const range = (t: TensorInfo) => `[${t.offset - dataOffset}, ${t.offset - dataOffset + t.byteLength}]`;
      throw fail(`data_offsets ${range(cur)} overlap tensor '${prev.name}' at ${range(prev)}`, cur.name);
    }
  }
}
