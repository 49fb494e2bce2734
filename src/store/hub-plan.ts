/**
 * What a hub download would bring, known before any weight is fetched: the files a model import
 * takes and their sizes (the hub's file list), and the model's config.json (a few kB), from which the
 * memory a model needs is estimated. The guided experiment shows this first.
 */
import { downloadFile, listFiles } from '@huggingface/hub';
import { isModelFile } from './import-folder';
import { DEFAULT_HUB_URL, HubDownloadError, isRepoId } from './import-hub';

export interface HubModelPlan {
  repo: string;
  revision: string;
  files: { name: string; size: number }[];
  /** Sum of the files' sizes: what the library will hold. */
  bytes: number;
  /** Bytes of the *.safetensors files: the weights. */
  weightBytes: number;
  config: ModelShape;
}

/** The config.json facts that size a decoder-only model. */
export interface ModelShape {
  architecture?: string;
  hiddenSize: number;
  vocabSize: number;
  numLayers: number;
  intermediateSize: number;
  tieWordEmbeddings: boolean;
  /** Bytes per weight of the stored dtype (2 for bf16 / f16, 4 for f32). */
  bytesPerWeight: number;
}

/** Bytes of the largest single tensor (the embedding, or an MLP matrix in very wide models). */
export function largestTensorBytes(shape: ModelShape): number {
  const embedding = shape.vocabSize * shape.hiddenSize;
  const mlp = shape.intermediateSize * shape.hiddenSize;
  return Math.max(embedding, mlp) * shape.bytesPerWeight;
}

const DTYPE_BYTES: Record<string, number> = { bfloat16: 2, float16: 2, float32: 4 };

export function modelShape(config: Record<string, unknown>, what: string): ModelShape {
  const int = (key: string): number => {
    const v = config[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
      throw new HubDownloadError(
        `${what}/config.json: '${key}' is ${JSON.stringify(v)}, not a positive integer`,
      );
    }
    return v;
  };
  const dtype = String(config.torch_dtype ?? config.dtype ?? 'bfloat16');
  return {
    architecture: Array.isArray(config.architectures) ? String(config.architectures[0]) : undefined,
    hiddenSize: int('hidden_size'),
    vocabSize: int('vocab_size'),
    numLayers: int('num_hidden_layers'),
    intermediateSize: int('intermediate_size'),
    tieWordEmbeddings: config.tie_word_embeddings === true,
    bytesPerWeight: DTYPE_BYTES[dtype] ?? 2,
  };
}

export async function planHubModel(
  repo: string,
  revision: string,
  hubUrl = DEFAULT_HUB_URL,
  signal?: AbortSignal,
): Promise<HubModelPlan> {
  if (!isRepoId(repo)) throw new HubDownloadError(`'${repo}' is not a hub repo id (owner/name)`);
  const what = `${repo}@${revision}`;
  const fetcher: typeof fetch = (input, init) => fetch(input, { ...init, signal });
  const files: { name: string; size: number }[] = [];
  try {
    for await (const entry of listFiles({ repo, revision, hubUrl, fetch: fetcher })) {
      if (entry.type === 'file' && isModelFile(entry.path)) {
        files.push({ name: entry.path, size: entry.lfs?.size ?? entry.size });
      }
    }
  } catch (e) {
    throw new HubDownloadError(`${what}: the file list could not be read (${(e as Error).message})`);
  }
  if (!files.some((f) => f.name === 'config.json')) {
    throw new HubDownloadError(`${what}: the repo has no config.json at its top level`);
  }
  let config: Record<string, unknown>;
  try {
    const blob = await downloadFile({ repo, revision, path: 'config.json', hubUrl, fetch: fetcher });
    if (!blob) throw new Error('not found');
    config = JSON.parse(await blob.text());
  } catch (e) {
    throw new HubDownloadError(`${what}/config.json could not be read (${(e as Error).message})`);
  }
  return {
    repo,
    revision,
    files,
    bytes: files.reduce((s, f) => s + f.size, 0),
    weightBytes: files.filter((f) => f.name.endsWith('.safetensors')).reduce((s, f) => s + f.size, 0),
    config: modelShape(config, what),
  };
}
