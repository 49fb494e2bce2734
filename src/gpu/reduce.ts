/**
 * Sums over stack rows on the GPU in the blocked order of src/methods/f32-reduce.ts, so that an L1
 * norm or a dot product has the same f32 bits as on the CPU. Level 0 runs per tile (tiles start at
 * multiples of the block size, so no block straddles two tiles); the upper levels run on the block
 * sums. Only the final sums are read back.
 */
import { REDUCTION_BLOCK } from '../methods/f32-reduce';
import { CommandBatch, readback, STORAGE_USAGE } from './commands';
import { type GpuContext, GpuLimitError } from './device';
import { KERNELS } from './kernels';
import { TILE_ALIGN, type TileSet } from './stack';

export type SumTerm = 'abs' | 'square' | 'dot';

export interface RowSum {
  readonly term: SumTerm;
  readonly row: number;
  /** Second row of a dot product. */
  readonly rowB?: number;
  /** Sum terms of (row - baseRow) (and rowB - baseRow): offsets from the base model. */
  readonly baseRow?: number;
  /** Divide the first (second) operand by this before multiplying, correctly rounded. */
  readonly divA?: number;
  readonly divB?: number;
}

const TERM_CODE: Record<SumTerm, number> = { abs: 0, square: 1, dot: 2 };
const IDENTITY_TERM = 3;
const NO_ROW = 0xffffffff;
const WORKGROUP = 64;

if (TILE_ALIGN % REDUCTION_BLOCK !== 0) throw new Error('tiles must start on reduction block boundaries');

/**
 * Blocked f32 sums of the requested terms over the stack's rows, one per segment of
 * `segmentLength` elements (default: the whole tensor is one segment). Returns [sum][segment].
 * Tiles must start on segment boundaries when segments are shorter than the tensor. The partial
 * sums of one call take at most `levelBytes` of GPU memory (more sums take more passes).
 */
export async function rowSums(
  ctx: GpuContext,
  stack: TileSet,
  sums: readonly RowSum[],
  segmentLength = stack.count,
  levelBytes = ctx.limits.maxBindingBytes,
): Promise<Float32Array> {
  const segments = stack.count === 0 ? 0 : Math.ceil(stack.count / segmentLength);
  const out = new Float32Array(sums.length * segments);
  if (sums.length === 0 || segments === 0) return out;
  const perSegment = Math.ceil(segmentLength / REDUCTION_BLOCK);
  const level0 = segments * perSegment;
  const perChunk = Math.floor(Math.min(ctx.limits.maxBindingBytes, levelBytes) / (level0 * 4));
  if (perChunk < 1) {
    throw new GpuLimitError(
      `A tensor of ${stack.count} elements has too many partial sums for one GPU binding.`,
    );
  }
  for (let first = 0; first < sums.length; first += perChunk) {
    const chunk = sums.slice(first, first + perChunk);
    out.set(await sumChunk(ctx, stack, chunk, segmentLength, segments), first * segments);
  }
  return out;
}

async function sumChunk(
  ctx: GpuContext,
  stack: TileSet,
  sums: readonly RowSum[],
  segmentLength: number,
  segments: number,
): Promise<Float32Array> {
  const s = sums.length;
  const whole = segments === 1;
  const width = Math.ceil(segmentLength / REDUCTION_BLOCK);
  // Level 0 outlives the tiles' batches: a streamed stack fills it one tile at a time.
  const level0 = ctx.pool.acquire(s * segments * width * 4, STORAGE_USAGE, 'row-sums.level0');
  try {
    return await sumLevels(ctx, stack, sums, segmentLength, segments, whole, width, level0);
  } finally {
    ctx.pool.release(level0);
  }
}

async function sumLevels(
  ctx: GpuContext,
  stack: TileSet,
  sums: readonly RowSum[],
  segmentLength: number,
  segments: number,
  whole: boolean,
  firstWidth: number,
  level0: GPUBuffer,
): Promise<Float32Array> {
  const s = sums.length;
  let width = firstWidth;
  let level = level0;
  const byTerm = new Map<SumTerm, number[]>();
  sums.forEach((r, k) => {
    const list = byTerm.get(r.term) ?? [];
    list.push(k);
    byTerm.set(r.term, list);
  });
  // Level 0, per tile: sum k's block sums go to [k][segment][block].
  await stack.visit('row-sums', (batch, tile) => {
    if (tile.count === 0) return;
    for (const [term, ks] of byTerm) {
      if (!whole && tile.start % segmentLength !== 0) {
        throw new Error(`tile at ${tile.start} does not start on a segment of ${segmentLength}`);
      }
      const firstBlock = whole ? tile.start / REDUCTION_BLOCK : (tile.start / segmentLength) * width;
      const table = reductionTable(
        ks.map((k) => ({ sum: sums[k], dstOffset: k * segments * width + firstBlock })),
      );
      const segLen = whole ? tile.count : segmentLength;
      const threads = Math.ceil(tile.count / segLen) * Math.ceil(segLen / REDUCTION_BLOCK);
      batch.dispatch({
        kernel: KERNELS.blockSum,
        overrides: { WORKGROUP_SIZE: WORKGROUP, TERM: TERM_CODE[term] },
        bindings: [
          params(tile.count, tile.stride, segLen),
          batch.upload(table, 'row-sums.table'),
          tile.buffer,
          level,
        ],
        workgroups: Math.ceil(threads / WORKGROUP),
        z: ks.length,
      });
    }
  });
  const batch = new CommandBatch(ctx, 'row-sums.levels');
  // Upper levels: re-sum runs of REDUCTION_BLOCK block sums per segment until one value is left.
  while (width > 1) {
    const next = Math.ceil(width / REDUCTION_BLOCK);
    const dst = batch.scratch(s * segments * next * 4, 'row-sums.level');
    const table = reductionTable(
      sums.map((_, k) => ({ sum: { term: 'abs', row: k }, dstOffset: k * segments * next, plain: true })),
    );
    batch.dispatch({
      kernel: KERNELS.blockSum,
      overrides: { WORKGROUP_SIZE: WORKGROUP, TERM: IDENTITY_TERM },
      bindings: [
        params(segments * width, segments * width, width),
        batch.upload(table, 'row-sums.table'),
        level,
        dst,
      ],
      workgroups: Math.ceil((segments * next) / WORKGROUP),
      z: s,
    });
    level = dst;
    width = next;
  }
  const read = readback(batch, level, 0, s * segments * 4);
  batch.submit();
  const bytes = await read();
  return new Float32Array(bytes.buffer, bytes.byteOffset, s * segments);
}

function reductionTable(
  entries: ReadonlyArray<{ sum: RowSum; dstOffset: number; plain?: boolean }>,
): Uint32Array {
  const table = new Uint32Array(entries.length * 8);
  const asFloat = new Float32Array(table.buffer);
  entries.forEach(({ sum, dstOffset, plain }, j) => {
    const o = j * 8;
    table[o] = sum.row;
    table[o + 1] = sum.rowB ?? sum.row;
    table[o + 2] = plain || sum.baseRow === undefined ? NO_ROW : sum.baseRow;
    table[o + 3] = dstOffset;
    asFloat[o + 4] = sum.divA ?? 1;
    asFloat[o + 5] = sum.divB ?? 1;
    table[o + 6] = (sum.divA !== undefined ? 1 : 0) | (sum.divB !== undefined ? 2 : 0);
  });
  return table;
}

function params(count: number, stride: number, segmentLength: number): Uint32Array {
  const u = new Uint32Array([count, stride, segmentLength, 0]);
  new Float32Array(u.buffer)[3] = -0;
  return u;
}
