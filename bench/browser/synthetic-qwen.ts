/**
 * The synthetic Qwen2.5-0.5B-shaped models of bench/run.mjs, made in memory as Blobs: the same
 * generator and seeds, so the bytes equal the files bench/run.mjs writes for the same layer count.
 * Values are produced a chunk at a time, so making a model never holds a whole tensor in f32.
 */
import { type TinyQwenShape, tinyQwenTensorShapes } from '../../src/demo/tiny-qwen';
import type { ModelFiles } from '../../src/engine/io';
import { blobByteSource } from '../../src/formats/byte-source';
import { encodeFromF32 } from '../../src/formats/dtype';
import { planShards, ShardWriter, SINGLE_FILE_NAME } from '../../src/formats/shard-writer';

export const QWEN25_05B: TinyQwenShape = {
  hiddenSize: 896,
  intermediateSize: 4864,
  layers: 24,
  heads: 14,
  kvHeads: 2,
  vocabSize: 151936,
};

/** Elements generated and encoded at a time. */
const CHUNK_ELEMENTS = 1 << 20;
/** Written bytes are gathered into Blobs of about this size, so the JS heap never holds a model. */
const BLOB_PART_BYTES = 64 << 20;
/** sqrt(12): uniform noise on [-0.5, 0.5) times this has unit standard deviation. */
const UNIFORM_TO_UNIT_STD = 3.4641;

export class SyntheticModelError extends Error {
  override name = 'SyntheticModelError';
}

/** xorshift32, the stream of bench/run.mjs's `fill`, kept as state so it can run chunk by chunk. */
class Xorshift32 {
  private x: number;
  constructor(seed: number) {
    this.x = seed >>> 0 || 1;
  }
  /** Uniform on [-0.5, 0.5). */
  next(): number {
    let x = this.x;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.x = x;
    return x / 4294967296 - 0.5;
  }
}

/** Output of a ShardWriter gathered into a Blob. */
class BlobFile {
  private readonly parts: Blob[] = [];
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;

  write(bytes: Uint8Array): void {
    // Safe to keep without a copy: every part is a fresh encoding or the layout's fixed header.
    this.pending.push(bytes);
    this.pendingBytes += bytes.byteLength;
    if (this.pendingBytes >= BLOB_PART_BYTES) this.seal();
  }

  private seal(): void {
    if (this.pending.length === 0) return;
    this.parts.push(new Blob(this.pending as Uint8Array<ArrayBuffer>[]));
    this.pending = [];
    this.pendingBytes = 0;
  }

  blob(): Blob {
    this.seal();
    return new Blob(this.parts);
  }
}

/**
 * One synthetic model: the base when `deltaSeed` is undefined, else the base plus noise of a tenth
 * of its scale (a fine-tune's task vector), exactly as bench/lib.mjs's `writeSyntheticModel`.
 */
export async function syntheticQwenModel(
  name: string,
  shape: TinyQwenShape,
  deltaSeed?: number,
): Promise<ModelFiles> {
  const tensors = tinyQwenTensorShapes(shape, true);
  const layout = planShards(tensors, Number.MAX_SAFE_INTEGER);
  const file = new BlobFile();
  const writer = new ShardWriter(layout, async () => ({
    write: async (b) => file.write(b),
    close: async () => {},
  }));
  const chunk = new Float32Array(CHUNK_ELEMENTS);
  let h = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const fanIn = t.shape[t.shape.length - 1];
    const std = t.shape.length === 1 ? 0.02 : 1 / Math.sqrt(fanIn);
    const deltaStd = std * 0.1;
    h = (h * 31 + n) >>> 0;
    const base = new Xorshift32(h ^ 0x5bd1e995);
    const delta = deltaSeed === undefined ? undefined : new Xorshift32(h ^ deltaSeed);
    writer.beginTensor(t.name);
    for (let start = 0; start < n; start += CHUNK_ELEMENTS) {
      const values = chunk.subarray(0, Math.min(CHUNK_ELEMENTS, n - start));
      for (let i = 0; i < values.length; i++) values[i] = 0 + base.next() * std * UNIFORM_TO_UNIT_STD;
      if (delta) {
        for (let i = 0; i < values.length; i++) {
          values[i] = values[i] + delta.next() * deltaStd * UNIFORM_TO_UNIT_STD;
        }
      }
      await writer.writeTensorPart(encodeFromF32(values, 'BF16'));
    }
    await writer.endTensor();
  }
  await writer.finish();
  const config = {
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    hidden_size: shape.hiddenSize,
    intermediate_size: shape.intermediateSize,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    vocab_size: shape.vocabSize,
    tie_word_embeddings: true,
    torch_dtype: 'bfloat16',
  };
  const blobs = new Map<string, Blob>([
    ['config.json', new Blob([JSON.stringify(config, null, 2)], { type: 'application/json' })],
    [SINGLE_FILE_NAME, file.blob()],
  ]);
  return {
    name,
    files: () => [...blobs.keys()],
    async open(fileName) {
      const blob = blobs.get(fileName);
      if (!blob) throw new SyntheticModelError(`${name}/${fileName}: the synthetic model has no such file`);
      return blobByteSource(blob, `${name}/${fileName}`);
    },
  };
}

/** Bytes of all tensors of one model of this shape (for sizing messages). */
export function syntheticModelBytes(shape: TinyQwenShape): number {
  return tinyQwenTensorShapes(shape, true).reduce((s, t) => s + 2 * t.shape.reduce((a, b) => a * b, 1), 0);
}
