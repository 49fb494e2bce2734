/**
 * Reuse of GPU buffers by usage and size class, so steady-state merging creates no buffers.
 *
 * A buffer goes back to the pool right after the command buffer using it is submitted: queue
 * order guarantees that later writes and dispatches see it only after that work.
 */

/** Sizes up to this are rounded to a power of two; above, to one of 8 steps per octave (<= 12.5% waste). */
// device.ts imports this module; the error class is only reached when a buffer is refused.
import { GpuBudgetError } from './device';

const SMALL_CLASS_LIMIT = 64 * 1024;

export function sizeClass(bytes: number): number {
  const size = Math.max(256, Math.ceil(bytes / 4) * 4);
  if (size <= SMALL_CLASS_LIMIT) return 2 ** Math.ceil(Math.log2(size));
  const octave = 2 ** Math.floor(Math.log2(size));
  const step = octave / 8;
  return Math.ceil(size / step) * step;
}

export class BufferPool {
  private readonly free = new Map<string, GPUBuffer[]>();
  private readonly order: GPUBuffer[] = [];
  private idleBytes = 0;
  private liveBytes = 0;
  private peak = 0;
  private created = 0;
  private live = new Set<GPUBuffer>();

  constructor(
    private readonly device: GPUDevice,
    private readonly label: string,
    /** Idle bytes kept; the least recently released buffers beyond this are destroyed. */
    private readonly maxIdleBytes: number,
    /** The largest buffer to create (the device's maxBufferSize less a margin). */
    private readonly maxBufferBytes = Number.POSITIVE_INFINITY,
    /** Device memory the pool's buffers (live and idle) may hold at once. */
    readonly budgetBytes = Number.POSITIVE_INFINITY,
  ) {}

  /** Bytes of the buffers the pool holds now, in use or idle. */
  get allocatedBytes(): number {
    return this.liveBytes + this.idleBytes;
  }

  /** Bytes of the buffers in use now (idle ones are given up when room is needed). */
  get inUseBytes(): number {
    return this.liveBytes;
  }

  /** The most bytes the pool ever held at once (tests check it against the budget). */
  get peakBytes(): number {
    return this.peak;
  }

  /** Buffers created so far (tests check that steady state creates none). */
  get createdCount(): number {
    return this.created;
  }

  /**
   * A buffer of at least `bytes` bytes with exactly `usage`. Its size is a size class, so pass the
   * wanted byte length explicitly when binding it.
   */
  acquire(bytes: number, usage: GPUBufferUsageFlags, label: string): GPUBuffer {
    let size = sizeClass(bytes);
    // Near the buffer size limit, rounding up to a class could ask for more than the device allows.
    if (size > this.maxBufferBytes) size = Math.ceil(bytes / 4) * 4;
    const key = `${usage}:${size}`;
    const list = this.free.get(key);
    const reused = list?.pop();
    if (reused) {
      this.idleBytes -= reused.size;
      this.order.splice(this.order.indexOf(reused), 1);
      reused.label = `${this.label}.${label}`;
      this.live.add(reused);
      this.liveBytes += reused.size;
      return reused;
    }
    // Idle buffers of other sizes make room first; what is in use is never taken.
    while (this.allocatedBytes + size > this.budgetBytes && this.order.length > 0) this.evictOldest();
    if (this.liveBytes + size > this.budgetBytes) {
      throw new GpuBudgetError(
        `${label}: a GPU buffer of ${size} bytes would take GPU memory to ${this.liveBytes + size} bytes, ` +
          `over the budget of ${this.budgetBytes} bytes; raise the GPU memory budget (--gpu-memory)`,
      );
    }
    this.created++;
    const buffer = this.device.createBuffer({ label: `${this.label}.${label}`, size, usage });
    this.live.add(buffer);
    this.liveBytes += size;
    this.peak = Math.max(this.peak, this.allocatedBytes);
    return buffer;
  }

  /** Return buffers for reuse. Call after the submit that last uses them (or when never used). */
  release(...buffers: GPUBuffer[]): void {
    for (const b of buffers) {
      if (!this.live.delete(b)) continue;
      this.liveBytes -= b.size;
      if (b.mapState !== 'unmapped') b.unmap();
      const key = `${b.usage}:${b.size}`;
      let list = this.free.get(key);
      if (!list) {
        list = [];
        this.free.set(key, list);
      }
      list.push(b);
      this.order.push(b);
      this.idleBytes += b.size;
    }
    while (this.idleBytes > this.maxIdleBytes && this.order.length > 0) this.evictOldest();
  }

  /** Destroys the least recently released idle buffer. */
  private evictOldest(): void {
    const victim = this.order.shift()!;
    const list = this.free.get(`${victim.usage}:${victim.size}`)!;
    list.splice(list.indexOf(victim), 1);
    this.idleBytes -= victim.size;
    victim.destroy();
  }

  /** Destroy idle buffers (e.g. between tensors of very different sizes). */
  trim(): void {
    for (const b of this.order) b.destroy();
    this.order.length = 0;
    this.free.clear();
    this.idleBytes = 0;
  }

  destroy(): void {
    this.trim();
    for (const b of this.live) b.destroy();
    this.live.clear();
    this.liveBytes = 0;
  }
}
