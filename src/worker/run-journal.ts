/**
 * The merge journal: one durable record per merge under way, so a run cut short by a reload or a
 * crash can continue from its last finished tensor. The record is written when the merge starts,
 * its `tensorsDone` after each tensor is written and flushed, and it is deleted when the run ends
 * in any way the page sees (commit, cancel, error). A record that outlives its tab marks a run to
 * resume. It lives in a database of its own, apart from the model library, whose clean-up removes
 * every key it does not know.
 */
import type { ShardLayout } from '../formats/shard-writer';
import { idbKeyValueStore, type KeyValueStore } from '../store/kv';
import type { BackendChoice } from './backend';
import type { FolderOutputTarget } from './folder-output';

export const RUN_JOURNAL_DB_NAME = 'l2s-runs';
const RECORD_PREFIX = 'run/';
/** Runs cancelled (their worker terminated) whose leftovers may not be removed yet. */
const CANCELLED_PREFIX = 'cancelled/';

/**
 * A model as the run found it: in the library (an id that changed means the model was replaced), or
 * streamed from the hub at a pinned commit, which a resumed run reads again.
 */
export interface JournalModel {
  name: string;
  id: string;
  /** Set for a model read straight from the hub (`RunJournalRecord.hubUrl`) at this commit sha. */
  commit?: string;
  /**
   * A streamed model the run also keeps in the library; a resumed run goes on with the copy's
   * pieces stored before the reload (`RunJournalRecord.copyImports`).
   */
  keepCopy?: boolean;
}

export interface RunJournalRecord {
  runId: string;
  recipeText: string;
  seed: number;
  device: BackendChoice;
  /** CPU kernel threads asked for (engine.worker.ts MergeRequest; absent: auto). */
  cpuThreads?: 'auto' | 1 | 2;
  /** GPU memory budget in bytes (absent: the default from the adapter's limits). */
  gpuMemory?: number;
  outShardSize?: number;
  startedAt: number;
  tensorsDone: number;
  tensorsTotal: number;
  models: JournalModel[];
  /** The hub the streamed models come from (no token: that is held in memory only). */
  hubUrl?: string;
  /**
   * Set for a run writing into a folder on the user's computer. The handle is kept here, so a
   * resumed run reopens its temporary files there (after the page asked for permission again).
   */
  folder?: FolderOutputTarget;
  /**
   * Why a run into a folder cannot continue (its partial files gone or changed), found by a
   * Resume; the run is then offered to start again or discard, its folder left to the user.
   */
  resumeProblem?: string;
  /**
   * The library imports of the copies this run keeps (hub-copy.ts), so that a Cancel, which ends the
   * run's worker, can remove them (and their pieces) at once.
   */
  copyImports?: { repo: string; importId: string }[];
}

export class RunJournal {
  constructor(private readonly kv: KeyValueStore = idbKeyValueStore(RUN_JOURNAL_DB_NAME)) {}

  async begin(record: RunJournalRecord): Promise<void> {
    await this.kv.write([[RECORD_PREFIX + record.runId, record]]);
  }

  async get(runId: string): Promise<RunJournalRecord | undefined> {
    return (await this.kv.getMany<RunJournalRecord>([RECORD_PREFIX + runId]))[0];
  }

  /** Every recorded run, oldest first. */
  async list(): Promise<RunJournalRecord[]> {
    const ks = (await this.kv.keys()).filter((k) => k.startsWith(RECORD_PREFIX));
    const records = (await this.kv.getMany<RunJournalRecord>(ks)).filter(
      (r): r is RunJournalRecord => r !== undefined,
    );
    return records.sort((a, b) => a.startedAt - b.startedAt || a.runId.localeCompare(b.runId));
  }

  /** Records progress; a run removed meanwhile (discarded from another tab) stays removed. */
  async setTensorsDone(runId: string, tensorsDone: number): Promise<void> {
    const record = await this.get(runId);
    if (!record) return;
    await this.kv.write([[RECORD_PREFIX + runId, { ...record, tensorsDone }]]);
  }

  /** Marks a run that cannot continue (see `RunJournalRecord.resumeProblem`). */
  async setResumeProblem(runId: string, resumeProblem: string): Promise<void> {
    const record = await this.get(runId);
    if (!record) return;
    await this.kv.write([[RECORD_PREFIX + runId, { ...record, resumeProblem }]]);
  }

  /** Records the run's copies as their imports began; a run removed meanwhile stays removed. */
  async setCopyImports(runId: string, copyImports: { repo: string; importId: string }[]): Promise<void> {
    const record = await this.get(runId);
    if (!record) return;
    await this.kv.write([[RECORD_PREFIX + runId, { ...record, copyImports }]]);
  }

  async remove(runId: string): Promise<void> {
    await this.kv.write([], [RECORD_PREFIX + runId]);
  }

  /** Kept apart from the record, which the run's own worker may still be rewriting. */
  async markCancelled(runId: string): Promise<void> {
    await this.kv.write([[CANCELLED_PREFIX + runId, Date.now()]]);
  }

  async cancelledRuns(): Promise<string[]> {
    return (await this.kv.keys())
      .filter((k) => k.startsWith(CANCELLED_PREFIX))
      .map((k) => k.slice(CANCELLED_PREFIX.length));
  }

  async clearCancelled(runId: string): Promise<void> {
    await this.kv.write([], [CANCELLED_PREFIX + runId]);
  }
}

/**
 * Why a partial output cannot hold the first `tensorsDone` tensors of `layout`, or undefined when it
 * can: every shard before the one in progress must be whole, and the one in progress must hold its
 * header and its finished tensors. Longer is fine (a tensor under way when the run stopped).
 */
export function partialOutputShortfall(
  layout: ShardLayout,
  tensorsDone: number,
  fileSizes: ReadonlyMap<string, number>,
): string | undefined {
  let tensorsLeft = tensorsDone;
  for (const shard of layout.shards) {
    if (tensorsLeft <= 0) break;
    const finished = shard.tensors.slice(0, tensorsLeft);
    tensorsLeft -= finished.length;
    const needed = shard.headerBytes.byteLength + finished.reduce((a, t) => a + t.byteLength, 0);
    const held = fileSizes.get(shard.file);
    if (held === undefined) return `${shard.file} is missing from its partial output`;
    if (held < needed) {
      return `${shard.file} holds ${held} bytes, fewer than the ${needed} its ${finished.length} finished tensors need`;
    }
  }
  if (tensorsLeft > 0) return `the output plans fewer than ${tensorsDone} tensors`;
  return undefined;
}
