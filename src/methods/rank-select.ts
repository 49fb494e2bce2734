/**
 * Ordering tensor elements by magnitude, exactly and reproducibly, without sorting whole tensors.
 *
 * The order: elements are compared by |x| and equal magnitudes by flat index, lowest first, in both
 * ascending and descending order (a stable order). |x| is compared through its f32 bit pattern with the
 * sign bit cleared, which orders non-negative floats like the numbers they hold; -0 and +0 are equal;
 * every NaN gets the one key 0x7FC00000, above +Inf. So NaN counts as the largest magnitude, as in
 * torch.sort/argsort, which place NaN after +Inf in ascending order.
 *
 * Selection of the r-th element is a radix select on the 32-bit keys: a histogram of the high 16 bits
 * finds the bucket holding rank r, a histogram of the low 16 bits within that bucket finds the key. Two
 * passes over the data, O(n), no sort, no copy of the tensor.
 */

/** Key of every NaN: above +Inf (0x7F800000), so NaN magnitudes sort last ascending, first descending. */
export const NAN_MAGNITUDE_KEY = 0x7fc00000;

/** The magnitude key of an f32 given its bit pattern (u32 or int32). */
export function magnitudeKey(bits: number): number {
  const abs = bits & 0x7fffffff;
  return abs > 0x7f800000 ? NAN_MAGNITUDE_KEY : abs;
}

export type RankOrder = 'ascending' | 'descending';

function bitsOf(values: Float32Array): Uint32Array {
  return new Uint32Array(values.buffer, values.byteOffset, values.length);
}

interface Selected {
  /** Order key (magnitude key, bit-inverted for descending) of the element at the selected rank. */
  readonly key: number;
  /** How many elements have an order key strictly before it. */
  readonly before: number;
}

/** The element of 1-based rank r (1 <= r <= n) in the order of (magnitudeKey ^ flip) >>> 0. */
function selectRank(bits: Uint32Array, rank: number, flip: number): Selected {
  const high = new Uint32Array(65536);
  for (let i = 0; i < bits.length; i++) {
    high[((magnitudeKey(bits[i]) ^ flip) >>> 0) >>> 16]++;
  }
  let before = 0;
  let highBucket = 0;
  while (before + high[highBucket] < rank) before += high[highBucket++];
  const low = new Uint32Array(65536);
  for (let i = 0; i < bits.length; i++) {
    const key = (magnitudeKey(bits[i]) ^ flip) >>> 0;
    if (key >>> 16 === highBucket) low[key & 0xffff]++;
  }
  let lowBucket = 0;
  while (before + low[lowBucket] < rank) before += low[lowBucket++];
  return { key: ((highBucket << 16) | lowBucket) >>> 0, before };
}

/** The first `count` elements of the order, as a key threshold plus how many ties at it are taken. */
interface Prefix {
  readonly all: boolean;
  readonly key: number;
  readonly tiesTaken: number;
}

function prefixOf(bits: Uint32Array, count: number, flip: number): Prefix {
  if (count <= 0) return { all: false, key: 0, tiesTaken: 0 };
  if (count >= bits.length) return { all: true, key: 0, tiesTaken: 0 };
  const selected = selectRank(bits, count, flip);
  return { all: false, key: selected.key, tiesTaken: count - selected.before };
}

/**
 * mask[i] = 1 iff element i's 0-based position in the stable magnitude order lies in [from, to);
 * positions outside [0, n] are clamped. With 'descending', [0, k) are the k largest magnitudes, ties
 * to the lowest indices; with 'ascending', [0, k) are the k smallest, ties to the lowest indices.
 */
export function magnitudeRankRangeMask(
  values: Float32Array,
  from: number,
  to: number,
  order: RankOrder,
): Uint8Array {
  const n = values.length;
  const mask = new Uint8Array(n);
  const start = Math.max(0, Math.min(n, from));
  const end = Math.max(0, Math.min(n, to));
  if (start >= end) return mask;
  const bits = bitsOf(values);
  const flip = order === 'descending' ? 0xffffffff : 0;
  const upTo = prefixOf(bits, end, flip);
  const below = prefixOf(bits, start, flip);
  let upToTies = 0;
  let belowTies = 0;
  for (let i = 0; i < n; i++) {
    const key = (magnitudeKey(bits[i]) ^ flip) >>> 0;
    let inUpTo = upTo.all || key < upTo.key;
    if (!inUpTo && key === upTo.key) inUpTo = upToTies++ < upTo.tiesTaken;
    let inBelow = below.all || key < below.key;
    if (!inBelow && key === below.key && start > 0) inBelow = belowTies++ < below.tiesTaken;
    mask[i] = inUpTo && !inBelow ? 1 : 0;
  }
  return mask;
}

/** Largest row length whose (key, position) pairs pack exactly into a double: key * 2^21 + j < 2^53. */
const PACKED_SORT_MAX = 1 << 21;

/**
 * 0-based ascending ranks of |x| within one strided fiber: element j is x[offset + j * stride] for
 * j in [0, count); ranks[j] is its position in the stable ascending magnitude order (equal
 * magnitudes: lower j first). Used by DELLA, which ranks magnitudes within each row.
 */
export function fiberMagnitudeRanks(
  values: Float32Array,
  offset: number,
  count: number,
  stride: number,
  ranks: Uint32Array,
): void {
  const bits = bitsOf(values);
  if (count <= PACKED_SORT_MAX) {
    const packed = new Float64Array(count);
    for (let j = 0; j < count; j++) {
      packed[j] = magnitudeKey(bits[offset + j * stride]) * PACKED_SORT_MAX + j;
    }
    packed.sort();
    for (let position = 0; position < count; position++) {
      ranks[packed[position] % PACKED_SORT_MAX] = position;
    }
    return;
  }
  const order = new Uint32Array(count);
  const keys = new Uint32Array(count);
  for (let j = 0; j < count; j++) {
    order[j] = j;
    keys[j] = magnitudeKey(bits[offset + j * stride]);
  }
  order.sort((a, b) => keys[a] - keys[b] || a - b);
  for (let position = 0; position < count; position++) ranks[order[position]] = position;
}
