/**
 * All tensors of one model, across its safetensors shards, as one name -> location map.
 *
 * Which files: `model.safetensors.index.json` when present (its weight_map is checked against the
 * shards' own headers), else `model.safetensors`, else every `*.safetensors` file at the model root.
 * Every tensor in a referenced shard is included, as transformers loads whole shards; a name found in
 * two shards is an error, since which copy a loader uses would be arbitrary.
 */
import type { ModelFiles } from '../engine/io';
import type { ByteSource } from './byte-source';
import { jsonDepthOver, MAX_JSON_DEPTH, shortJson } from './json-text';
import { readSafetensorsHeader, readTensorBytes, type TensorInfo } from './safetensors';

export const MODEL_INDEX_FILE = 'model.safetensors.index.json';
const SINGLE_FILE = 'model.safetensors';

/**
 * Largest index JSON we read. Real ones are well under 10 MB (one line per tensor); a bigger file is
 * not an index, and reading it whole would only waste memory.
 */
export const MAX_INDEX_BYTES = 100_000_000;

/**
 * Most tensors one model may have, over all its shards. The largest published MoE checkpoints have
 * about 150,000 (Kimi K2: 384 experts x 61 layers, with fp8 scales); each entry costs a few hundred
 * bytes of memory, so this bounds what a hostile set of headers can make us hold.
 */
export const MAX_MODEL_TENSORS = 300_000;

export class ModelIndexError extends Error {
  override name = 'ModelIndexError';
  readonly model: string;
  readonly file?: string;
  readonly tensor?: string;

  constructor(model: string, detail: string, where: { file?: string; tensor?: string } = {}) {
    const place = where.file === undefined ? model : `${model}/${where.file}`;
    super(`${place}: ${where.tensor === undefined ? '' : `tensor '${where.tensor}': `}${detail}`);
    this.model = model;
    this.file = where.file;
    this.tensor = where.tensor;
  }
}

export interface ModelTensorIndex {
  model: string;
  /** Tensor name -> location; `TensorInfo.file` is the model-relative file name, a key of `sources`. */
  tensors: Map<string, TensorInfo>;
  /** Model-relative file name -> its bytes. */
  sources: Map<string, ByteSource>;
}

export async function readModelTensors(model: ModelFiles): Promise<ModelTensorIndex> {
  const files = model.files();
  const index: ModelTensorIndex = { model: model.name, tensors: new Map(), sources: new Map() };

  if (files.includes(MODEL_INDEX_FILE)) {
    const weightMap = await readWeightMap(model, files);
    const shardFiles = [...new Set(weightMap.values())];
    for (const file of shardFiles) await addShard(model, file, index);
    for (const [tensor, file] of weightMap) {
      const found = index.tensors.get(tensor);
      if (!found || found.file !== file) {
        throw new ModelIndexError(
          model.name,
          `${MODEL_INDEX_FILE} places it in ${file}, but that shard's header does not contain it`,
          { file, tensor },
        );
      }
    }
    return index;
  }

  const shardFiles = files.includes(SINGLE_FILE)
    ? [SINGLE_FILE]
    : files.filter((f) => !f.includes('/') && f.endsWith('.safetensors')).sort();
  if (shardFiles.length === 0) {
    throw new ModelIndexError(
      model.name,
      `no safetensors weights found (looked for ${MODEL_INDEX_FILE}, ${SINGLE_FILE} and *.safetensors)`,
    );
  }
  for (const file of shardFiles) await addShard(model, file, index);
  return index;
}

/** The tensor's raw bytes, from whichever shard holds it. */
export async function readModelTensorBytes(index: ModelTensorIndex, name: string): Promise<Uint8Array> {
  const info = index.tensors.get(name);
  if (!info) throw new ModelIndexError(index.model, 'no such tensor in the model', { tensor: name });
  const source = index.sources.get(info.file);
  if (!source)
    throw new ModelIndexError(index.model, 'its shard is not open', { file: info.file, tensor: name });
  return readTensorBytes(source, info);
}

async function readWeightMap(model: ModelFiles, files: readonly string[]): Promise<Map<string, string>> {
  const fail = (detail: string, tensor?: string) =>
    new ModelIndexError(model.name, detail, { file: MODEL_INDEX_FILE, tensor });
  const source = await model.open(MODEL_INDEX_FILE);
  if (source.size > MAX_INDEX_BYTES) {
    throw fail(`is ${source.size} bytes, over the ${MAX_INDEX_BYTES}-byte limit for an index`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(await source.read(0, source.size));
  } catch (e) {
    throw fail(`is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (jsonDepthOver(text) !== undefined) {
    throw fail(`nests JSON deeper than ${MAX_JSON_DEPTH} levels; an index nests 2, so the file is corrupt`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw fail(`is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) throw fail('must be a JSON object');
  const raw = json.weight_map;
  if (!isPlainObject(raw)) throw fail('weight_map must be an object mapping tensor names to shard files');

  const entries = Object.entries(raw);
  if (entries.length > MAX_MODEL_TENSORS) {
    throw fail(
      `weight_map lists ${entries.length} tensors, over the limit of ${MAX_MODEL_TENSORS} for one model`,
    );
  }
  const available = new Set(files);
  const weightMap = new Map<string, string>();
  for (const [tensor, file] of entries) {
    if (typeof file !== 'string')
      throw fail(`weight_map value must be a file name, found ${shortJson(file)}`, tensor);
    if (!available.has(file)) throw fail(`weight_map refers to ${file}, which is not in the model`, tensor);
    weightMap.set(tensor, file);
  }
  return weightMap;
}

async function addShard(model: ModelFiles, file: string, index: ModelTensorIndex): Promise<void> {
  const source = await model.open(file);
  index.sources.set(file, source);
  const header = await readSafetensorsHeader(source);
  if (index.tensors.size + header.tensors.size > MAX_MODEL_TENSORS) {
    throw new ModelIndexError(
      model.name,
      `the shards hold more than ${MAX_MODEL_TENSORS} tensors (${index.tensors.size + header.tensors.size} so far), ` +
        'over the limit for one model; the headers are corrupt',
      { file },
    );
  }
  for (const [name, info] of header.tensors) {
    const earlier = index.tensors.get(name);
    if (earlier) {
      throw new ModelIndexError(model.name, `is also in ${earlier.file}; a tensor must live in one shard`, {
        file,
        tensor: name,
      });
    }
    index.tensors.set(name, { ...info, file });
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
