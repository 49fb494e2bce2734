/**
 * Exact order statistics of |x| on the GPU by radix select: histograms of one digit of the f32 bit
 * pattern of |x| per pass (the bit order of non-negative floats is their numeric order), narrowing
 * to the bin that holds the wanted rank. Only the small histograms are read back. Ties at the
 * threshold are broken by flat index, lowest first, with a second radix select over the indices of
 * the elements equal to the threshold: that gives the exact cut of "keep the first j of the equal
 * ones in index order" without any scan over the tensor.
 */
import { CommandBatch, readback, STORAGE_USAGE } from './commands';
import type { GpuContext } from './device';
import { KERNELS } from './kernels';
import type { StackTile, TileSet } from './stack';

/** The element of a given rank, as (|x| bit pattern, flat index). */
export interface RankedElement {
  readonly absBits: number;
  /** Flat index, or null when no other element has the same |x| (then the index is never needed). */
  readonly index: number | null;
}

export interface RankQuery {
  /** Stack row to rank. */
  readonly row: number;
  /**
   * 0-based rank in the order: 'desc' = |x| descending, ties by index ascending;
   * 'asc' = |x| ascending, ties by index ascending. Must be in [0, count).
   */
  readonly rank: number;
  readonly order: 'asc' | 'desc';
}

export interface RadixOptions {
  /** Bits per pass: 8 (256 bins) or 11 (2048 bins, fewer passes, 8 KiB of workgroup memory). */
  readonly radixBits?: 8 | 11;
}

const WORKGROUP = 256;
const ITEMS_PER_THREAD = 16;

/** Digit positions (shift, bits) from the top for keys of `keyBits` bits. */
function digitPasses(keyBits: number, radixBits: number): Array<{ shift: number; bits: number }> {
  const out: Array<{ shift: number; bits: number }> = [];
  let top = keyBits;
  while (top > 0) {
    const bits = Math.min(radixBits, top);
    out.push({ shift: top - bits, bits });
    top -= bits;
  }
  return out;
}

interface SelectionState {
  prefixMask: number;
  prefixValue: number;
  remaining: number;
  /** Count of elements matching the prefix so far (after the last pass: equal to the threshold). */
  matching: number;
  target: number;
}

/**
 * For each query, the element at that rank. All queries advance together, one dispatch per tile per
 * pass, with z = query; histograms accumulate over the tiles of the stack.
 */
export async function selectRanks(
  ctx: GpuContext,
  stack: TileSet,
  queries: readonly RankQuery[],
  options: RadixOptions = {},
): Promise<RankedElement[]> {
  if (queries.length === 0) return [];
  for (const q of queries) {
    if (!(q.rank >= 0 && q.rank < stack.count && Number.isInteger(q.rank))) {
      throw new RangeError(`rank ${q.rank} is outside a tensor of ${stack.count} elements`);
    }
  }
  const radixBits = options.radixBits ?? (ctx.limits.maxWorkgroupStorageBytes >= 8192 ? 11 : 8);
  const bins = 1 << radixBits;
  const states: SelectionState[] = queries.map((q) => ({
    prefixMask: 0,
    prefixValue: 0,
    remaining: q.rank,
    matching: stack.count,
    target: 0,
  }));

  // Phase 1: the |x| bit pattern at each rank (31 bits: the sign is cleared).
  for (const { shift, bits } of digitPasses(31, radixBits)) {
    const hist = await histograms(ctx, stack, queries, states, 0, shift, bits, bins);
    queries.forEach((q, s) => {
      const st = states[s];
      const h = hist.subarray(s * bins, s * bins + (1 << bits));
      const digit = walk(h, st, q.order);
      st.prefixMask = (st.prefixMask | (((1 << bits) - 1) << shift)) >>> 0;
      st.prefixValue = (st.prefixValue | (digit << shift)) >>> 0;
    });
  }

  // Phase 2: among elements equal to the threshold, the index at the remaining rank (lowest first).
  const results: RankedElement[] = new Array(queries.length);
  const pending: number[] = [];
  states.forEach((st, s) => {
    st.target = st.prefixValue;
    if (st.matching === 1) results[s] = { absBits: st.target, index: null };
    else pending.push(s);
    st.prefixMask = 0;
    st.prefixValue = 0;
  });
  const indexQueries = pending.map((s) => ({ ...queries[s], order: 'asc' as const }));
  const indexStates = pending.map((s) => states[s]);
  if (pending.length > 0) {
    for (const { shift, bits } of digitPasses(32, radixBits)) {
      const hist = await histograms(ctx, stack, indexQueries, indexStates, 1, shift, bits, bins);
      indexStates.forEach((st, j) => {
        const h = hist.subarray(j * bins, j * bins + (1 << bits));
        const digit = walk(h, st, 'asc');
        st.prefixMask = (st.prefixMask | (((2 ** bits - 1) * 2 ** shift) >>> 0)) >>> 0;
        st.prefixValue = (st.prefixValue + digit * 2 ** shift) >>> 0;
      });
    }
  }
  pending.forEach((s, j) => {
    results[s] = { absBits: states[s].target, index: indexStates[j].prefixValue };
  });
  return results;
}

/** The digit holding rank `st.remaining`, walking bins in `order`; updates remaining and matching. */
function walk(h: Uint32Array, st: SelectionState, order: 'asc' | 'desc'): number {
  const n = h.length;
  for (let j = 0; j < n; j++) {
    const b = order === 'asc' ? j : n - 1 - j;
    if (st.remaining < h[b]) {
      st.matching = h[b];
      return b;
    }
    st.remaining -= h[b];
  }
  throw new Error(
    `radix select lost its rank (histogram total below ${st.remaining + 1}); the GPU miscounted`,
  );
}

async function histograms(
  ctx: GpuContext,
  stack: TileSet,
  queries: readonly RankQuery[],
  states: readonly SelectionState[],
  keyMode: 0 | 1,
  shift: number,
  bits: number,
  bins: number,
): Promise<Uint32Array> {
  const label = `radix.pass${keyMode}.${shift}`;
  const sel = new Uint32Array(queries.length * 4);
  queries.forEach((q, s) => {
    sel.set([q.row, states[s].prefixMask, states[s].prefixValue, states[s].target], s * 4);
  });
  const histBytes = queries.length * bins * 4;
  // The histograms and selections outlive the tiles' batches: a streamed stack visits one at a time.
  const hist = ctx.pool.acquire(histBytes, STORAGE_USAGE, 'radix.histograms');
  const selections = ctx.pool.acquire(sel.byteLength, STORAGE_USAGE, 'radix.selections');
  try {
    ctx.device.queue.writeBuffer(selections, 0, sel);
    const clear = new CommandBatch(ctx, `${label}.clear`);
    clear.clear(hist, 0, Math.ceil(histBytes / 4) * 4);
    clear.submit();
    await stack.visit(label, (batch, tile) => {
      if (tile.count === 0) return;
      dispatchHistogram(batch, tile, queries.length, selections, hist, shift, bits, bins, keyMode);
    });
    const batch = new CommandBatch(ctx, `${label}.read`);
    const read = readback(batch, hist, 0, histBytes);
    batch.submit();
    const bytes = await read();
    return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  } finally {
    ctx.pool.release(hist, selections);
  }
}

function dispatchHistogram(
  batch: CommandBatch,
  tile: StackTile,
  queries: number,
  selections: GPUBuffer,
  hist: GPUBuffer,
  shift: number,
  bits: number,
  bins: number,
  keyMode: 0 | 1,
): void {
  batch.dispatch({
    kernel: KERNELS.radixHistogram,
    overrides: { WORKGROUP_SIZE: WORKGROUP, ITEMS_PER_THREAD, RADIX_BINS: bins, KEY_MODE: keyMode },
    bindings: [
      new Uint32Array([tile.count, tile.stride, tile.start, shift, 2 ** bits - 1, 0, 0, 0]),
      selections,
      tile.buffer,
      hist,
    ],
    workgroups: Math.ceil(tile.count / (WORKGROUP * ITEMS_PER_THREAD)),
    z: queries,
  });
}
