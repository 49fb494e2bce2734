/**
 * Sharded safetensors output. Shapes and dtypes are known from the merge plan before any tensor is
 * computed, so every shard's header is serialized up front and each file is written strictly
 * front to back: header, then tensors in order. Nothing is buffered beyond the tensor in hand.
 */
import type { FileSink } from '../engine/io';
import { DTYPE_BYTES, type DType, isDType } from './dtype';

export const SINGLE_FILE_NAME = 'model.safetensors';
export const INDEX_FILE_NAME = 'model.safetensors.index.json';

/** safetensors recommends padding the header so the data section starts 8-byte aligned. */
const HEADER_ALIGNMENT = 8;
const LENGTH_PREFIX_BYTES = 8;

export class ShardWriteError extends Error {
  override name = 'ShardWriteError';
  readonly file?: string;
  readonly tensor?: string;

  constructor(message: string, where: { file?: string; tensor?: string } = {}) {
    super(message);
    this.file = where.file;
    this.tensor = where.tensor;
  }
}

export interface PlannedTensor {
  name: string;
  dtype: DType;
  shape: number[];
}

export interface ShardTensor extends PlannedTensor {
  byteLength: number;
}

export interface Shard {
  file: string;
  /** Everything before the first tensor: the u64 length prefix and the space-padded JSON header. */
  headerBytes: Uint8Array;
  /** In file order; their bytes follow the header back to back. */
  tensors: ShardTensor[];
  /** Size of the whole file: headerBytes plus every tensor's bytes. */
  byteLength: number;
}

export interface ShardLayout {
  shards: Shard[];
  /** Sum of tensor bytes over all shards (the index's `total_size`). */
  totalTensorBytes: number;
  /** Text of `model.safetensors.index.json`; present only when there is more than one shard. */
  indexJson?: string;
}

/**
 * Splits tensors, in the given order, into shards as mergekit's TensorWriter does: a tensor starts a
 * new shard when the current shard holds something and adding the tensor's bytes would exceed
 * `maxShardBytes`. A single tensor larger than the limit gets a shard of its own. A limit of 0 means
 * no limit (mergekit only splits when the limit is positive). One shard is named `model.safetensors`
 * with no index; N > 1 shards are `model-0000i-of-0000N.safetensors` plus the index.
 */
export function planShards(tensors: PlannedTensor[], maxShardBytes: number): ShardLayout {
  if (!(maxShardBytes >= 0) || !Number.isSafeInteger(maxShardBytes)) {
    throw new ShardWriteError(`shard size ${maxShardBytes} must be a whole number of bytes (0 for no limit)`);
  }
  const groups: ShardTensor[][] = [[]];
  let currentBytes = 0;
  const seen = new Set<string>();
  let totalTensorBytes = 0;
  for (const t of tensors) {
    if (seen.has(t.name))
      throw new ShardWriteError(`tensor '${t.name}' is planned twice`, { tensor: t.name });
    seen.add(t.name);
    const byteLength = plannedByteLength(t);
    const current = groups[groups.length - 1];
    if (current.length > 0 && maxShardBytes > 0 && currentBytes + byteLength > maxShardBytes) {
      groups.push([]);
      currentBytes = 0;
    }
    groups[groups.length - 1].push({ name: t.name, dtype: t.dtype, shape: t.shape.slice(), byteLength });
    currentBytes += byteLength;
    totalTensorBytes += byteLength;
  }
  if (!Number.isSafeInteger(totalTensorBytes))
    throw new ShardWriteError('the output is too large to address');

  const count = groups.length;
  const shards = groups.map((group, i): Shard => {
    const file = count === 1 ? SINGLE_FILE_NAME : shardFileName(i + 1, count);
    const headerBytes = serializeHeader(group);
    const dataBytes = group.reduce((sum, t) => sum + t.byteLength, 0);
    return { file, headerBytes, tensors: group, byteLength: headerBytes.byteLength + dataBytes };
  });
  const layout: ShardLayout = { shards, totalTensorBytes };
  if (count > 1) layout.indexJson = serializeIndex(shards, totalTensorBytes);
  return layout;
}

/** `model-00001-of-00003.safetensors`, the Hugging Face convention. */
export function shardFileName(index: number, count: number): string {
  const pad = (n: number) => String(n).padStart(5, '0');
  return `model-${pad(index)}-of-${pad(count)}.safetensors`;
}

function plannedByteLength(t: PlannedTensor): number {
  if (!isDType(t.dtype))
    throw new ShardWriteError(`tensor '${t.name}': unknown dtype ${t.dtype}`, { tensor: t.name });
  let bytes = DTYPE_BYTES[t.dtype];
  for (const dim of t.shape) {
    if (!Number.isSafeInteger(dim) || dim < 0) {
      throw new ShardWriteError(
        `tensor '${t.name}': shape ${JSON.stringify(t.shape)} has an invalid dimension`,
        {
          tensor: t.name,
        },
      );
    }
    bytes *= dim;
  }
  if (!Number.isSafeInteger(bytes)) {
    throw new ShardWriteError(`tensor '${t.name}': shape ${JSON.stringify(t.shape)} is too large`, {
      tensor: t.name,
    });
  }
  return bytes;
}

/**
 * The JSON is assembled by hand, not from an object, because JavaScript objects list integer-like
 * keys (a tensor named "0") first, which would reorder the tensors.
 */
function serializeHeader(tensors: ShardTensor[]): Uint8Array {
  const entries = ['"__metadata__":{"format":"pt"}'];
  let offset = 0;
  for (const t of tensors) {
    const end = offset + t.byteLength;
    entries.push(
      `${JSON.stringify(t.name)}:{"dtype":"${t.dtype}","shape":${JSON.stringify(t.shape)},"data_offsets":[${offset},${end}]}`,
    );
    offset = end;
  }
  const json = new TextEncoder().encode(`{${entries.join(',')}}`);
  const padded = Math.ceil(json.byteLength / HEADER_ALIGNMENT) * HEADER_ALIGNMENT;
  const bytes = new Uint8Array(LENGTH_PREFIX_BYTES + padded).fill(0x20, LENGTH_PREFIX_BYTES);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(padded), true);
  bytes.set(json, LENGTH_PREFIX_BYTES);
  return bytes;
}

function serializeIndex(shards: Shard[], totalTensorBytes: number): string {
  const lines: string[] = [];
  for (const shard of shards) {
    for (const t of shard.tensors) lines.push(`    ${JSON.stringify(t.name)}: ${JSON.stringify(shard.file)}`);
  }
  return `{\n  "metadata": {\n    "total_size": ${totalTensorBytes}\n  },\n  "weight_map": {\n${lines.join(',\n')}\n  }\n}\n`;
}

/**
 * Writes a planned layout through `createFile`. `writeTensor` must be called once per tensor in
 * layout order; calls may be issued without awaiting the previous one (writes are queued), which
 * lets the engine compute the next tensor while this one is written.
 */
export class ShardWriter {
  private readonly order: { shard: number; index: number; tensor: ShardTensor }[] = [];
  private next = 0;
  private finished = false;
  private openSink?: FileSink;
  private current?: { slot: { shard: number; index: number; tensor: ShardTensor }; written: number };
  private readonly written: string[] = [];
  /** Serializes file operations so that files are written front to back. */
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly layout: ShardLayout,
    private readonly createFile: (name: string) => Promise<FileSink>,
  ) {
    layout.shards.forEach((shard, s) => {
      shard.tensors.forEach((tensor, index) => {
        this.order.push({ shard: s, index, tensor });
      });
    });
  }

  /**
   * Continues an interrupted output after its first `tensorsDone` tensors: earlier shards are taken
   * as complete, and the shard in progress is reopened with `reopen(file, keepBytes)`, which must
   * cut the file to `keepBytes` (its header and finished tensors) and append from there.
   */
  async resumeAt(
    tensorsDone: number,
    reopen: (file: string, keepBytes: number) => Promise<FileSink>,
  ): Promise<void> {
    if (this.next !== 0 || this.current || this.finished)
      throw new ShardWriteError('resumeAt() after writing began');
    if (!Number.isInteger(tensorsDone) || tensorsDone < 0 || tensorsDone > this.order.length) {
      throw new ShardWriteError(`cannot resume after ${tensorsDone} of ${this.order.length} tensors`);
    }
    const slot = this.order[tensorsDone] as (typeof this.order)[number] | undefined;
    const lastShard = slot ? slot.shard : this.layout.shards.length;
    for (let s = 0; s < lastShard; s++) this.written.push(this.layout.shards[s].file);
    if (slot && slot.index > 0) {
      const shard = this.layout.shards[slot.shard];
      const keep =
        shard.headerBytes.byteLength +
        shard.tensors.slice(0, slot.index).reduce((a, t) => a + t.byteLength, 0);
      this.openSink = await reopen(shard.file, keep);
      this.written.push(shard.file);
    }
    this.next = tensorsDone;
  }

  /** Waits for queued writes and asks the open file to persist them (before recording progress). */
  flush(): Promise<void> {
    return this.enqueue(async () => {
      await this.openSink?.flush?.();
    });
  }

  /** Files written so far, in order. */
  get files(): readonly string[] {
    return this.written;
  }

  writeTensor(name: string, bytes: Uint8Array): Promise<void> {
    const slot = this.order[this.next];
    if (
      !this.finished &&
      !this.current &&
      slot?.tensor.name === name &&
      bytes.byteLength !== slot.tensor.byteLength
    ) {
      // Refused before anything is queued, so a corrected retry is still possible.
      return Promise.reject(
        new ShardWriteError(
          `tensor '${name}' has ${bytes.byteLength} bytes, but its plan (${slot.tensor.dtype} ` +
            `${JSON.stringify(slot.tensor.shape)}) needs ${slot.tensor.byteLength}`,
          { file: this.layout.shards[slot.shard].file, tensor: name },
        ),
      );
    }
    try {
      this.beginTensor(name);
    } catch (e) {
      return Promise.reject(e);
    }
    return Promise.all([this.writeTensorPart(bytes), this.endTensor()]).then(() => {});
  }

  /**
   * Starts streaming one tensor in parts (a tensor larger than memory is merged and written a
   * chunk at a time); `writeTensorPart` then `endTensor` complete it.
   */
  beginTensor(name: string): void {
    if (this.finished) throw new ShardWriteError(`tensor '${name}' written after finish()`, { tensor: name });
    if (this.current) {
      throw new ShardWriteError(
        `tensor '${name}' begun before '${this.current.slot.tensor.name}' was ended`,
        {
          tensor: name,
        },
      );
    }
    const slot = this.order[this.next];
    if (!slot) {
      throw new ShardWriteError(
        `tensor '${name}' is not in the output plan (all planned tensors are written)`,
        {
          tensor: name,
        },
      );
    }
    const shard = this.layout.shards[slot.shard];
    if (slot.tensor.name !== name) {
      const planned = this.order.some((o) => o.tensor.name === name);
      throw new ShardWriteError(
        planned
          ? `tensor '${name}' written out of order: '${slot.tensor.name}' comes next in ${shard.file}`
          : `tensor '${name}' is not in the output plan ('${slot.tensor.name}' comes next in ${shard.file})`,
        { file: shard.file, tensor: name },
      );
    }
    this.current = { slot, written: 0 };
    if (slot.index === 0) this.enqueue(() => this.openShard(shard)).catch(() => {});
  }

  writeTensorPart(bytes: Uint8Array): Promise<void> {
    const cur = this.current;
    if (!cur) return Promise.reject(new ShardWriteError('tensor bytes written with no tensor begun'));
    const { tensor } = cur.slot;
    if (cur.written + bytes.byteLength > tensor.byteLength) {
      const file = this.layout.shards[cur.slot.shard].file;
      return Promise.reject(
        new ShardWriteError(
          `tensor '${tensor.name}' has more than the ${tensor.byteLength} bytes its plan ` +
            `(${tensor.dtype} ${JSON.stringify(tensor.shape)}) needs`,
          { file, tensor: tensor.name },
        ),
      );
    }
    cur.written += bytes.byteLength;
    return this.enqueue(() => this.openSink!.write(bytes));
  }

  endTensor(): Promise<void> {
    const cur = this.current;
    if (!cur) return Promise.reject(new ShardWriteError('endTensor() with no tensor begun'));
    const { slot } = cur;
    const shard = this.layout.shards[slot.shard];
    this.current = undefined;
    if (cur.written !== slot.tensor.byteLength) {
      return Promise.reject(
        new ShardWriteError(
          `tensor '${slot.tensor.name}' has ${cur.written} bytes, but its plan (${slot.tensor.dtype} ` +
            `${JSON.stringify(slot.tensor.shape)}) needs ${slot.tensor.byteLength}`,
          { file: shard.file, tensor: slot.tensor.name },
        ),
      );
    }
    this.next++;
    if (slot.index !== shard.tensors.length - 1) return this.queue;
    return this.enqueue(() => this.closeShard());
  }

  /** Waits for queued writes, writes the index when sharded, and returns every file written. */
  async finish(): Promise<string[]> {
    if (this.finished) throw new ShardWriteError('finish() called twice');
    if (this.next < this.order.length) {
      const missing = this.order.length - this.next;
      const slot = this.order[this.next];
      throw new ShardWriteError(
        `${missing} planned tensor${missing === 1 ? '' : 's'} not written, starting with ` +
          `'${slot.tensor.name}' in ${this.layout.shards[slot.shard].file}`,
        { file: this.layout.shards[slot.shard].file, tensor: slot.tensor.name },
      );
    }
    this.finished = true;
    await this.enqueue(async () => {
      // A shard without tensors (an empty plan) is still a valid file: header only.
      for (const shard of this.layout.shards) {
        if (shard.tensors.length > 0) continue;
        await this.openShard(shard);
        await this.closeShard();
      }
      if (this.layout.indexJson !== undefined) {
        const sink = await this.createFile(INDEX_FILE_NAME);
        await sink.write(new TextEncoder().encode(this.layout.indexJson));
        await sink.close();
        this.written.push(INDEX_FILE_NAME);
      }
    });
    return this.written.slice();
  }

  private enqueue(op: () => Promise<void>): Promise<void> {
    // Once one operation fails, every later one fails with the same error: a file with a hole in
    // it must never be completed.
    this.queue = this.queue.then(op);
    return this.queue;
  }

  private async openShard(shard: Shard): Promise<void> {
    this.openSink = await this.createFile(shard.file);
    this.written.push(shard.file);
    await this.openSink.write(shard.headerBytes);
  }

  private async closeShard(): Promise<void> {
    const sink = this.openSink!;
    this.openSink = undefined;
    await sink.close();
  }
}
