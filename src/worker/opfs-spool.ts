/**
 * Where a merge streamed from the hub keeps the bytes of a tensor it reads in several passes
 * (src/engine/read-spool.ts): a spool of up to SPOOL_MEMORY_BYTES in memory, a larger one as a
 * temporary file in the origin private file system, `hub-spool/<run id>/<uuid>.spool`, written and
 * read through a sync access handle (the merge runs in a dedicated worker). A spool holds one
 * tensor input at most (a 7B model's embedding in bf16: 1.1 GB), and a tensor's spools live while
 * that tensor is merged: each file is removed when its tensor ends. The run's folder goes when the
 * run ends, after a Cancel (removeRunSpoolWithin, once the terminated worker let go of its files),
 * and at the next start for a run that is not under way (a closed tab, a crash).
 */
import {
  memorySpoolStore,
  SPOOL_MEMORY_BYTES,
  type SpoolFile,
  SpoolSpaceError,
  type SpoolStore,
} from '../engine/read-spool';

/** The folder of the origin private file system that holds the spools, one subfolder per run. */
export const SPOOL_DIR = 'hub-spool';

interface SyncAccessHandle {
  read(buffer: BufferSource, options?: { at?: number }): number;
  write(buffer: BufferSource, options?: { at?: number }): number;
  close(): void;
}

async function spoolRoot(): Promise<FileSystemDirectoryHandle> {
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle(SPOOL_DIR, { create: true });
}

/**
 * A run's spool store: spools of up to `memoryBytes` (tests lower it) in memory, the others as
 * files under `hub-spool/<runId>/`.
 */
export function opfsSpoolStore(runId: string, memoryBytes = SPOOL_MEMORY_BYTES): SpoolStore {
  const memory = memorySpoolStore();
  return {
    async create(file, tensor, bytes) {
      if (bytes <= Math.min(memoryBytes, SPOOL_MEMORY_BYTES)) return memory.create(file, tensor, bytes);
      const estimate = await navigator.storage.estimate();
      const free = (estimate.quota ?? Number.POSITIVE_INFINITY) - (estimate.usage ?? 0);
      if (free < bytes) throw new SpoolSpaceError(file, tensor, bytes, free);
      const folder = await (await spoolRoot()).getDirectoryHandle(runId, { create: true });
      const name = `${crypto.randomUUID()}.spool`;
      const handle = await folder.getFileHandle(name, { create: true });
      const access = await (
        handle as unknown as { createSyncAccessHandle(): Promise<SyncAccessHandle> }
      ).createSyncAccessHandle();
      let open = true;
      const spool: SpoolFile = {
        async write(at, data) {
          if (access.write(data as BufferSource, { at }) !== data.byteLength) {
            // The browser took part of the bytes: its storage is full.
            throw new SpoolSpaceError(file, tensor, bytes);
          }
        },
        async read(at, length) {
          const out = new Uint8Array(length);
          const got = access.read(out, { at });
          if (got !== length)
            throw new Error(`${file}: the spool of tensor ${tensor} is short (${got} of ${length} bytes)`);
          return out;
        },
        async remove() {
          if (open) access.close();
          open = false;
          await folder.removeEntry(name).catch(() => undefined);
        },
      };
      return spool;
    },
  };
}

/** Removes the spool folder of a run that ended here (its files are closed by then). */
export async function removeRunSpool(runId: string): Promise<void> {
  await (await spoolRoot()).removeEntry(runId, { recursive: true }).catch(() => undefined);
}

/**
 * Removes the spool folder of a run whose worker was terminated (Cancel), retrying while that
 * worker's access handles still hold its files; gives up silently after `waitMs` (the next start
 * removes what is left).
 */
export async function removeRunSpoolWithin(runId: string, waitMs: number): Promise<void> {
  const root = await spoolRoot();
  const deadline = performance.now() + waitMs;
  for (let delay = 20; ; delay = Math.min(delay * 2, 500)) {
    try {
      await root.removeEntry(runId, { recursive: true });
      return;
    } catch (e) {
      if (e instanceof DOMException && e.name === 'NotFoundError') return;
      if (performance.now() >= deadline) return;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** Removes the spools of every run not in `activeRunIds` (left by a closed tab or a crash). */
export async function removeAbandonedSpools(activeRunIds: ReadonlySet<string>): Promise<string[]> {
  const root = await spoolRoot();
  const names: string[] = [];
  for await (const name of (root as unknown as { keys(): AsyncIterable<string> }).keys()) names.push(name);
  const removed: string[] = [];
  for (const name of names) {
    if (activeRunIds.has(name)) continue;
    try {
      await root.removeEntry(name, { recursive: true });
      removed.push(name);
    } catch {
      // Still held by a worker that is going away: the next start removes it.
    }
  }
  return removed;
}
