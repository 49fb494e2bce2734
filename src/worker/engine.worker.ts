/**
 * The engine and the model library in a module Web Worker, so the page never blocks.
 *
 * comlink cannot carry an AbortSignal, so every long call takes a run id and `cancel(runId)` aborts
 * it; progress callbacks arrive as comlink proxies. Errors keep their `name` across the boundary
 * (comlink copies it), and the page branches on it.
 *
 * Merges are journaled (run-journal.ts) so that a run cut short by a reload or a crash resumes
 * from its last finished tensor. A run under way holds a Web Lock named after it: the lock goes
 * when its worker goes, so another tab (or this one after a reload) can tell a run that is still
 * going from one that was cut short.
 */
import * as Comlink from 'comlink';
import { makeTinyTrio } from '../demo/tiny-qwen';
import type { ModelFiles, ModelResolver, OutputTarget } from '../engine/io';
import {
  MergeError,
  type MergeProgress,
  type PreparedMerge,
  prepareMerge,
  runMerge,
  type TensorPlacement,
} from '../engine/merge';
import { RangeSpool, type SpoolingSource, type SpoolStore } from '../engine/read-spool';
import type { ByteSource } from '../formats/byte-source';
import { formatBytes } from '../formats/size';
import { adapterName, softwareAdapterReason } from '../gpu/select-backend';
import {
  type InspectProgress,
  inspectSpectrum,
  inspectTaskVectors,
  type SpectrumInspection,
  type TaskVectorInspection,
} from '../inspect/inspect-models';
import { aimStatisticsForRecipe } from '../model/calibration';
import type { MergePlan } from '../plan/plan';
import { parseHubModelRef, parseRecipe } from '../recipe';
import type { MergeRecipe, ParameterSetting } from '../recipe/recipe';
import type { HttpRangeSource } from '../store/http-range-source';
import { HubCopy } from '../store/hub-copy';
import { type HubModelFiles, openHubModel, pinHubRevision } from '../store/hub-model';
import { type HubModelPlan, planHubModel } from '../store/hub-plan';
import {
  DuplicateModelError,
  type FolderFile,
  findSameModel,
  type ImportProgress,
  importFolder,
  selectModelFiles,
} from '../store/import-folder';
import { HubDownloadError, importFromHub, resumeHubImport } from '../store/import-hub';
import { idbKeyValueStore } from '../store/kv';
import { MAX_CHUNK_BYTES, ModelLibrary, ModelNotFoundError, type ModelRecord } from '../store/library';
import { folderPermission } from '../store/linked-folder';
import { type BackendChoice, type SelectedBackend, selectWorkerBackend } from './backend';
import {
  createFolderOutput,
  type FolderOutput,
  type FolderOutputTarget,
  folderOutputState,
  openFolderOutput,
  partialFolderFiles,
  removePartialFolderOutput,
} from './folder-output';
import { BrowserCpuThreads, cpuThreadCount } from './kernel-threads';
import {
  createOpfsOutput,
  deleteOutput,
  listOutputs,
  type OpfsOutput,
  openOpfsOutput,
  outputDirectoryState,
  outputFiles,
  outputIsFinished,
  paceWrites,
  partialRunFiles,
  removeAbandonedRuns,
  removePartialRun,
  removePartialRunWithin,
  repairOutputs,
  stallCommitsAfter,
} from './opfs-output';
import { opfsSpoolStore, removeAbandonedSpools, removeRunSpool, removeRunSpoolWithin } from './opfs-spool';
import { partialOutputShortfall, RunJournal, type RunJournalRecord } from './run-journal';

/** Settings from the page's URL that every engine worker of the page takes (see `configure`). */
export interface EngineOptions {
  chunkBytes?: number;
  stallCommitAfterFiles?: number;
  /** Tests: each write of merged bytes waits this long (see paceWrites). */
  paceWritesMs?: number;
  /**
   * Tests: a finished merge waits this long after its output is committed before it answers, so a
   * Cancel pressed in that moment can be tested.
   */
  holdReplyMs?: number;
  /**
   * Tests of the hub stream's spool: the bytes of a tensor's inputs the CPU keeps in memory across
   * its passes, and the largest spool held in memory rather than in OPFS (default 32 MiB and
   * 16 MiB), so that small models exercise both (see read-spool.ts).
   */
  streamCacheBytes?: number;
}

let holdReplyMs = 0;
let streamCacheBytes: number | undefined;

export interface MergeRequest {
  recipeText: string;
  seed: number;
  outShardSize?: number;
  device: BackendChoice;
  /** GPU memory the merge may hold, in bytes (default: from the adapter's limits). */
  gpuMemory?: number;
  /** Dataset viewer for AIM's hub calibration sets (default the Hugging Face one). */
  datasetsEndpoint?: string;
  /** CPU kernel threads (kernel-threads.ts cpuThreadCount; default auto). */
  cpuThreads?: 'auto' | 1 | 2;
  /** Write the output into a new subfolder of a folder the user picked, instead of browser storage. */
  outputFolder?: FolderOutputTarget;
  /** Recipe models read straight from the hub by Range requests, nothing stored (see hub-model.ts). */
  hubStream?: HubStreamRequest;
}

/** Hub repos a merge streams instead of reading them from the library. */
export interface HubStreamRequest {
  hubUrl: string;
  /** Held only for this call. */
  accessToken?: string;
  /** Repo ids, as the recipe names them; each is pinned to the commit its `revision` is at now. */
  repos: string[];
  /** Default `main`. */
  revision?: string;
  /**
   * Repos (of `repos`) whose streamed bytes are also kept: when the merge ends the rest is fetched
   * and the model is added to the library, verified against the hub's hashes (see hub-copy.ts).
   */
  keepCopy?: string[];
}

/** How keeping a streamed repo in the library ended, after the merge itself succeeded. */
export interface HubCopyOutcome {
  repo: string;
  /** The library name it got (set when the copy is in the library). */
  name?: string;
  error?: string;
  errorName?: string;
}

/** A merge's header-only check: what it would merge, or every problem found. */
export interface MergeCheck {
  ok: boolean;
  /** The validation's message (a PlanError lists every problem); absent when ok. */
  error?: string;
  errorName?: string;
  tensors?: number;
  models?: number;
  /** Bytes of tensor data the merge would read. */
  inputBytes?: number;
}

export interface MergeProgressEvent {
  tensorsDone: number;
  tensorsTotal: number;
  bytesDone: number;
  bytesTotal: number;
  /** Input bytes read so far: moves inside a large tensor, which is read a chunk of rows at a time. */
  inputBytesDone: number;
  inputBytesTotal: number;
  tensor?: string;
  /** Since this run (or this resumption) began. */
  elapsedMs: number;
  /** Output bytes that were already written when this run began (non-zero when resumed). */
  bytesResumed: number;
  /** Where the math runs. */
  backend: 'cpu' | 'gpu';
}

export interface MergeOutcome {
  outputId: string;
  files: { name: string; size: number }[];
  tensors: number;
  bytesWritten: number;
  backend: 'cpu' | 'gpu';
  /** Threads the CPU kernels ran on: 1, the merge worker itself; 2, two kernel workers. */
  cpuThreads: number;
  /** Tensors merged on the kernel workers (the rest in the merge worker). */
  tensorsOnThreads: number;
  /** Tensors merged on the GPU and on the CPU, and why any left the GPU. */
  placement: TensorPlacement;
  elapsedMs: number;
  /** Set when the output went to a folder on the user's computer: `picked-folder/subfolder`. */
  folder?: string;
  /** Streamed repos kept in the library (MergeRequest.hubStream.keepCopy), each's outcome. */
  copies?: HubCopyOutcome[];
}

export interface HubRequest {
  repo: string;
  revision: string;
  hubUrl: string;
  /** Held only for this call. */
  accessToken?: string;
}

/** Task vectors of library models against a base, for the Inspect view. */
export interface InspectRequest {
  base: string;
  models: string[];
  /** The model (one of `models`) whose TIES trimming is measured. */
  focus: string;
  /** TIES density settings, tried in order per tensor (the model's, the recipe's, a fallback number). */
  density: ParameterSetting[];
}

export interface SpectrumRequest {
  base: string;
  model: string;
  tensor: string;
}

/** An interrupted merge that cannot continue; its partial output has been discarded. */
export class ResumeError extends Error {
  override name = 'ResumeError';
}

/** The run is going on in another tab (it holds the run's lock). */
export class RunInUseError extends Error {
  override name = 'RunInUseError';
}

/** A merge cut short by a reload or a crash, as its journal recorded it. */
export type InterruptedRun = RunJournalRecord;

let library = new ModelLibrary(idbKeyValueStore());
const journal = new RunJournal();
const runs = new Map<string, AbortController>();
/** Progress events are sent at most this often; a tensor of a tiny model takes microseconds. */
const PROGRESS_INTERVAL_MS = 100;

function throttle<T>(send: ((value: T) => void) | undefined): { push(value: T): void; flush(): void } {
  let last = 0;
  let pending: T | undefined;
  return {
    push(value) {
      pending = value;
      const now = performance.now();
      if (now - last >= PROGRESS_INTERVAL_MS) {
        last = now;
        send?.(value);
        pending = undefined;
      }
    },
    flush() {
      if (pending !== undefined) send?.(pending);
      pending = undefined;
    },
  };
}

async function withRun<T>(runId: string, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  if (runs.has(runId)) throw new Error(`run ${runId} is already under way`);
  const controller = new AbortController();
  runs.set(runId, controller);
  try {
    return await work(controller.signal);
  } finally {
    runs.delete(runId);
  }
}

const libraryResolver: ModelResolver = async (reference) => {
  try {
    return await library.openModel({ name: reference });
  } catch (e) {
    if (e instanceof ModelNotFoundError) {
      throw new ModelNotFoundError(`${e.message}. Import ${reference} (folder or hub) before merging.`);
    }
    throw e;
  }
};

/** Streamed hub models of one run: repo -> commit, read from `hubUrl`. */
interface HubStreams {
  hubUrl: string;
  accessToken?: string;
  commits: Map<string, string>;
  /** References whose streamed bytes are kept in the library as well. */
  keepCopy: Set<string>;
  /** A resumed run's copies begun before the reload: reference -> library import id. */
  earlierCopies?: Map<string, string>;
}

/** Pins each streamed repo to the commit its revision is at now, so a resumed run reads the same bytes. */
async function pinStreams(request: HubStreamRequest, signal: AbortSignal): Promise<HubStreams> {
  const access = { hubUrl: request.hubUrl, accessToken: request.accessToken, signal };
  const commits = new Map<string, string>();
  for (const reference of new Set(request.repos)) {
    // `org/name@revision` as mergekit writes it pins that revision; a plain id pins `revision`.
    const ref = parseHubModelRef(reference);
    if (!ref)
      throw new HubDownloadError(`'${reference}' is not a hub repo id (owner/name or owner/name@revision)`);
    commits.set(
      reference,
      await pinHubRevision(ref.repo, ref.revision ?? request.revision ?? 'main', access),
    );
  }
  return {
    hubUrl: request.hubUrl,
    accessToken: request.accessToken,
    commits,
    keepCopy: new Set((request.keepCopy ?? []).filter((r) => commits.has(r))),
  };
}

/**
 * The models of one run: streamed hub repos at their pinned commits (each listed once per run),
 * every other reference from the library.
 */
function runResolver(
  hub: HubStreams | undefined,
  signal: AbortSignal,
  onLog?: (line: string) => void,
  /** A merge keeps the copies `hub.keepCopy` asks for; a header check never does. */
  keepCopies = false,
  /** A merge's run: tensors it reads in several passes are spooled under its id (opfs-spool.ts). */
  spoolRunId?: string,
): RunResolver {
  const opened = new Map<string, Promise<ModelFiles>>();
  const traffic: HubTraffic = { sources: [], spooledReads: 0 };
  const spoolStore = spoolRunId && hub ? opfsSpoolStore(spoolRunId, streamCacheBytes) : undefined;
  const copies: RunCopy[] = [];
  const resolver: RunResolver = async (reference) => {
    const commit = hub?.commits.get(reference);
    if (!hub || !commit) return libraryResolver(reference);
    let model = opened.get(reference);
    if (!model) {
      const copying = keepCopies && hub.keepCopy.has(reference);
      const runCopy: RunCopy = { reference };
      model = openHubModel(parseHubModelRef(reference)?.repo ?? reference, commit, {
        hubUrl: hub.hubUrl,
        accessToken: hub.accessToken,
        signal,
        onFetched: copying ? (file, start, bytes) => runCopy.copy?.record(file, start, bytes) : undefined,
      }).then(async (m) => {
        let kept = '';
        if (copying) {
          copies.push(runCopy);
          try {
            // Named as the recipe names it, `@revision` included, so the recipe finds it next time.
            const earlier = hub.earlierCopies?.get(reference);
            if (earlier) {
              const resumed = await HubCopy.resume(library, m, earlier, reference);
              runCopy.copy = resumed.copy;
              kept = resumed.restartedBecause
                ? `; the copy starts again: ${resumed.restartedBecause}`
                : `; the copy goes on from ${formatBytes(resumed.bytesKept)} stored before the reload, not fetched again`;
            } else {
              runCopy.copy = await HubCopy.begin(library, m, reference);
            }
          } catch (e) {
            // The merge does not depend on the copy: it goes on, and the outcome says why there is none.
            runCopy.error = e as Error;
          }
        }
        onLog?.(
          `${reference}: streamed from the hub at commit ${commit.slice(0, 12)} ` +
            `(${formatBytes(m.weightBytes)} of weights, ` +
            (copying
              ? `a copy is kept in the library: what the merge reads is stored, the rest fetched when it ends${kept})`
              : 'read again by every run; nothing stored)'),
        );
        const spools: RunSpools | undefined = spoolStore && {
          store: spoolStore,
          copy: () => (runCopy.copy && !runCopy.copy.error ? runCopy.copy : undefined),
          onLog,
        };
        const copy = runCopy.copy;
        return watchHubReads(
          m,
          traffic,
          () => {
            resolver.hubReadFailed = true;
          },
          spools,
          // What the copy already holds (stored before a reload) is read from it, not from the hub.
          copy && ((file, source) => copy.readThrough(file, source)),
        );
      });
      opened.set(reference, model);
      model.catch(() => opened.delete(reference));
    }
    return model;
  };
  resolver.hubReadFailed = false;
  resolver.copies = copies;
  resolver.hubTraffic = () => ({
    requests: traffic.sources.reduce((n, s) => n + s.requests, 0),
    bytes: traffic.sources.reduce((n, s) => n + s.bytesFetched, 0),
    spooledReads: traffic.spooledReads,
  });
  resolver.removeSpools = async () => {
    if (spoolRunId && spoolStore) await removeRunSpool(spoolRunId);
  };
  return resolver;
}

/** How a run's streamed models spool the tensors it reads in several passes (read-spool.ts). */
interface RunSpools {
  store: SpoolStore;
  /** The copy kept in the library, while it holds what the merge read: later passes read it there. */
  copy: () => HubCopy | undefined;
  onLog?: (line: string) => void;
}

/** A streamed model the run keeps in the library: its copy, or why it could not begin. */
interface RunCopy {
  reference: string;
  copy?: HubCopy;
  error?: Error;
}

/**
 * Completes the run's copies after the merge succeeded, one by one; a copy's failure is reported,
 * never thrown (the merge's output is already committed).
 */
async function finishCopies(
  copies: readonly RunCopy[],
  onLog?: (line: string) => void,
): Promise<HubCopyOutcome[]> {
  const outcomes: HubCopyOutcome[] = [];
  for (const c of copies) {
    let error = c.error;
    let name: string | undefined;
    if (c.copy) {
      onLog?.(
        `${c.reference}: completing the copy in the library (fetching the bytes the merge did not read)`,
      );
      try {
        name = (await c.copy.finish()).name;
        onLog?.(
          `${c.reference}: the copy is in the library as ${name}, every file checked against the hub's hashes`,
        );
      } catch (e) {
        error = e as Error;
      }
    }
    if (error) onLog?.(`${c.reference}: the copy was not kept: ${error.name}: ${error.message}`);
    outcomes.push(
      error
        ? { repo: c.reference, error: error.message, errorName: error.name }
        : { repo: c.reference, name },
    );
  }
  return outcomes;
}

/** A run that failed or was cancelled leaves no copy: every piece and unfinished import goes. */
async function discardCopies(copies: readonly RunCopy[] | undefined): Promise<void> {
  for (const c of copies ?? []) await c.copy?.discard().catch(() => undefined);
}

/** `work` on a run's models; if it fails, the copies those models began are removed. */
async function withCopiesDiscardedOnFailure<T>(resolver: RunResolver, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    await discardCopies(resolver.copies);
    throw e;
  }
}

/** The range sources a run opened on the hub, for the cost it reports. */
interface HubTraffic {
  sources: { readonly requests: number; readonly bytesFetched: number }[];
  /** Bytes later passes read from a spool (or the library copy) instead of the hub. */
  spooledReads: number;
}

/** A run's models; `hubReadFailed` is set once a streamed model's read failed after its retries. */
type RunResolver = ModelResolver & {
  hubReadFailed?: boolean;
  /** Range requests and bytes read from the hub so far, and bytes read again from spools. */
  hubTraffic?: () => { requests: number; bytes: number; spooledReads: number };
  /** Removes the run's spool folder (each spool is removed as its tensor ends). */
  removeSpools?: () => Promise<void>;
  /** Streamed models kept in the library too, as they were opened. */
  copies?: RunCopy[];
};

/**
 * The model with every source reporting a hub read that failed for good (HubRangeError), and its
 * weight files offering the engine a spool for tensors it reads in several passes (read-spool.ts).
 */
function watchHubReads(
  model: HubModelFiles,
  traffic: HubTraffic,
  onFailure: () => void,
  spools?: RunSpools,
  readThrough?: (file: string, source: ByteSource) => ByteSource,
): ModelFiles {
  return {
    name: model.name,
    files: () => model.files(),
    async open(file) {
      const source = await model.open(file);
      if ('bytesFetched' in source) traffic.sources.push(source as HttpRangeSource);
      const fetched: ByteSource = {
        name: source.name,
        size: source.size,
        read: (offset, length) =>
          source.read(offset, length).catch((e: unknown) => {
            if ((e as Error).name === 'HubRangeError') onFailure();
            throw e;
          }),
      };
      const watched = readThrough ? readThrough(file, fetched) : fetched;
      if (!spools || !file.endsWith('.safetensors')) return watched;
      const spooling: SpoolingSource = {
        ...watched,
        async openSpool(request) {
          const copy = spools.copy();
          if (copy) return copy.spoolFor(file, watched, (bytes) => (traffic.spooledReads += bytes));
          const spool = new RangeSpool({
            source: watched,
            request,
            store: spools.store,
            onLog: spools.onLog,
          });
          return {
            read: (offset, length, keep) => spool.read(offset, length, keep),
            keep: (offset, bytes) => spool.keep(offset, bytes),
            close: async () => {
              traffic.spooledReads += spool.reused;
              await spool.close();
            },
          };
        },
      };
      return spooling;
    },
  };
}

/** The hub streams a journal record names, for resuming it. */
function recordStreams(record: RunJournalRecord, accessToken?: string): HubStreams | undefined {
  const streamed = record.models.filter((m) => m.commit);
  if (streamed.length === 0 || !record.hubUrl) return undefined;
  return {
    hubUrl: record.hubUrl,
    accessToken,
    commits: new Map(streamed.map((m) => [m.name, m.commit!])),
    keepCopy: new Set(streamed.filter((m) => m.keepCopy).map((m) => m.name)),
    earlierCopies: new Map((record.copyImports ?? []).map((c) => [c.repo, c.importId])),
  };
}

/** Failures reaching a streamed model on the hub: not a reason to discard a run. */
const HUB_READ_ERRORS = new Set(['HubDownloadError', 'HubRangeError', 'HubAccessError']);

const RUN_LOCK_PREFIX = 'l2s-merge-run:';
/** How long a cancelled run's terminated worker may take to let go of its lock and files. */
const CANCEL_WAIT_MS = 15_000;

/** Runs `work` holding the run's lock; refuses when another tab holds it. */
async function holdingRunLock<T>(runId: string, work: () => Promise<T>): Promise<T> {
  return navigator.locks.request(RUN_LOCK_PREFIX + runId, { ifAvailable: true }, async (lock) => {
    if (!lock)
      throw new RunInUseError(`the merge ${runId} is running in another tab; finish or cancel it there`);
    return work();
  }) as Promise<T>;
}

/** Runs under way anywhere in this origin (any tab, any worker). */
async function lockedRunIds(): Promise<Set<string>> {
  const { held = [] } = await navigator.locks.query();
  return new Set(
    held
      .map((l) => l.name ?? '')
      .filter((name) => name.startsWith(RUN_LOCK_PREFIX))
      .map((name) => name.slice(RUN_LOCK_PREFIX.length)),
  );
}

/**
 * The models a plan reads: library models with their ids, so a resumption can tell a replaced model,
 * and streamed hub models with their pinned commits.
 */
async function planModels(plan: MergePlan, hub?: HubStreams): Promise<RunJournalRecord['models']> {
  const inLibrary = await library.list();
  return plan.models.map((m) => {
    const commit = hub?.commits.get(m.reference);
    if (commit) {
      const keepCopy = hub?.keepCopy.has(m.reference) ? { keepCopy: true } : {};
      return { name: m.reference, id: `hub@${commit}`, commit, ...keepCopy };
    }
    const found = inLibrary.find((r) => r.name === m.reference);
    if (!found) throw new ModelNotFoundError(`model '${m.reference}' is not in the library`);
    return { name: m.reference, id: found.id };
  });
}

/**
 * Why an interrupted run cannot continue, or undefined when it can: every model it read is still in
 * the library as it was, the plan is the same, and the partial shards hold at least the bytes of the
 * tensors the journal counts as written.
 */
async function resumeObstacle(
  record: RunJournalRecord,
  recipe: MergeRecipe,
  resolveModel: ModelResolver,
): Promise<{ obstacle: string } | { prepared: PreparedMerge }> {
  const inLibrary = await library.list();
  for (const m of record.models) {
    if (m.commit) continue;
    const found = inLibrary.find((r) => r.name === m.name);
    if (!found) return { obstacle: `model '${m.name}' is no longer in the library` };
    if (found.id !== m.id) {
      return { obstacle: `model '${m.name}' was replaced in the library after the merge began` };
    }
  }
  const prepared = await prepareMerge(recipe, resolveModel, record.outShardSize);
  const { plan } = prepared;
  if (plan.tensors.length !== record.tensorsTotal) {
    return {
      obstacle: `the recipe now plans ${plan.tensors.length} tensors, not the ${record.tensorsTotal} the run began with`,
    };
  }
  const files = record.folder ? await partialFolderFiles(record.folder) : await partialRunFiles(record.runId);
  if (!files) {
    return {
      obstacle: record.folder
        ? `the folder ${record.folder.parent.name}/${record.folder.name} is gone`
        : 'its partial output is gone from the browser storage',
    };
  }
  const shortfall = partialOutputShortfall(
    plan.layout,
    record.tensorsDone,
    new Map(files.map((f) => [f.name, f.size])),
  );
  return shortfall ? { obstacle: shortfall } : { prepared };
}

/**
 * Removes an interrupted run's leftovers. A run into a folder has its partial subfolder removed too;
 * that needs the folder's permission, which only the page can ask for, so clean-up at start-up
 * (`mustRemoveFolder` false) leaves the subfolder where the permission is not there.
 */
async function discardInterrupted(runId: string, mustRemoveFolder = false): Promise<void> {
  const record = await journal.get(runId);
  const folder = record?.folder;
  // The library copies the run was keeping cannot be completed without it.
  for (const c of record?.copyImports ?? []) await library.discardPendingImport(c.importId);
  if (folder) {
    await removePartialFolderOutput(folder, mustRemoveFolder ? CANCEL_WAIT_MS : 0).catch((e) => {
      if (mustRemoveFolder) throw e;
    });
  }
  // An unfinished output folder beside a partial one is a commit cut short (files half moved).
  if ((await partialRunFiles(runId)) && !(await outputIsFinished(runId))) await deleteOutput(runId);
  await removePartialRun(runId);
  await journal.remove(runId);
}

/**
 * Runs a journaled merge into `output` from `record.tensorsDone`. The record is kept up to date
 * after each tensor and removed when the run ends here in any way: on commit, and on cancel or
 * error, where the engine has already discarded the output. Only a run cut off with its worker
 * (reload, crash) leaves its record behind.
 */
async function journaledMerge(
  record: RunJournalRecord,
  recipe: MergeRecipe,
  /** The header-only plan the run was validated with (read once: runMerge does not read it again). */
  prepared: PreparedMerge,
  output: OpfsOutput | FolderOutput,
  selected: SelectedBackend,
  signal: AbortSignal,
  onProgress?: (p: MergeProgressEvent) => void,
  onLog?: (line: string) => void,
  datasetsEndpoint?: string,
  resolveModel: RunResolver = libraryResolver,
): Promise<MergeOutcome> {
  const progress = throttle(onProgress);
  const started = performance.now();
  // The copies began as the plan opened their models; Cancel (which ends this worker) finds them here.
  const copyImports = (resolveModel.copies ?? []).flatMap((c) =>
    c.copy ? [{ repo: c.reference, importId: c.copy.importId }] : [],
  );
  if (copyImports.length > 0) await journal.setCopyImports(record.runId, copyImports);
  // AIM: the calibration pass on the base model, in this worker, before any tensor is merged. It is
  // deterministic, so a resumed run recomputes the same statistics.
  let aimStatistics: Awaited<ReturnType<typeof aimStatisticsForRecipe>>;
  try {
    aimStatistics = await aimStatisticsForRecipe(recipe, {
      resolveModel,
      device: record.device,
      datasetsEndpoint,
      signal,
      notice: (line) => onLog?.(line),
      onProgress: (p) => {
        if (p.blocksDone === 0) onLog?.(`AIM calibration: ${p.blocksTotal} blocks on the base model`);
        else
          onLog?.(
            `AIM calibration: block ${p.blocksDone}/${p.blocksTotal}, ` +
              `${Math.round((p.tokensDone / Math.max(p.elapsedMs, 1)) * 1000)} tokens/s, ETA ${Math.round((p.etaMs ?? 0) / 1000)} s`,
          );
      },
    });
  } catch (e) {
    selected.dispose();
    await output.abort().catch(() => undefined);
    await journal.remove(record.runId).catch(() => undefined);
    await discardCopies(resolveModel.copies);
    throw e;
  }
  let bytesResumed: number | undefined;
  const forward = (p: MergeProgress) => {
    bytesResumed ??= p.bytesDone;
    progress.push({
      tensorsDone: p.tensorsDone,
      tensorsTotal: p.tensorsTotal,
      bytesDone: p.bytesDone,
      bytesTotal: p.bytesTotal,
      inputBytesDone: p.inputBytesDone,
      inputBytesTotal: p.inputBytesTotal,
      tensor: p.tensor,
      elapsedMs: p.elapsedMs,
      bytesResumed,
      backend: selected.backend.kind,
    });
  };
  const threadCount =
    selected.backend.kind === 'cpu'
      ? cpuThreadCount(record.cpuThreads, navigator.hardwareConcurrency ?? 1)
      : 1;
  // Terminated with the run, and with this worker when Cancel terminates it.
  const cpuThreads = threadCount > 1 ? BrowserCpuThreads.start(threadCount) : undefined;
  // A streamed model the hub stopped serving (after the retries) leaves the merge resumable: its
  // partial output, journal record and the copies it keeps are kept, as after a reload.
  let keptForResume = false;
  const target: OutputTarget = {
    createFile: (name) => output.createFile(name),
    reopenFile: output.reopenFile && ((name, keep) => output.reopenFile!(name, keep)),
    commit: () => output.commit(),
    abort: async () => {
      if (resolveModel.hubReadFailed && !signal.aborted) keptForResume = true;
      else await output.abort();
    },
  };
  try {
    const result = await runMerge({
      recipe,
      prepared,
      aimStatistics,
      cpuThreads,
      resolveModel,
      output: target,
      seed: record.seed,
      outShardSize: record.outShardSize,
      backend: selected.backend,
      signal,
      resume: record.tensorsDone > 0 ? { tensorsDone: record.tensorsDone } : undefined,
      // A folder's stream keeps its bytes in a swap file until a checkpoint: count only what a reload keeps.
      onTensorWritten: (n) =>
        'durable' in output && !output.durable() ? undefined : journal.setTensorsDone(record.runId, n),
      onProgress: forward,
      onLog,
      cachedInputBytes: streamCacheBytes,
    });
    progress.flush();
    const hubRead = resolveModel.hubTraffic?.();
    if (hubRead && hubRead.requests > 0) {
      onLog?.(
        `read ${formatBytes(hubRead.bytes)} from the hub in ${hubRead.requests} range requests` +
          (hubRead.spooledReads > 0
            ? ` (each byte once: later passes read ${formatBytes(hubRead.spooledReads)} again from the temporary spool)`
            : ''),
      );
    }
    const inFolder = 'target' in output ? output.target : undefined;
    const files = inFolder
      ? await (output as FolderOutput).files()
      : (await outputFiles(record.runId)).map((f) => ({ name: f.name, size: f.size }));
    const copies = resolveModel.copies?.length ? await finishCopies(resolveModel.copies, onLog) : undefined;
    if (holdReplyMs > 0) await new Promise((resolve) => setTimeout(resolve, holdReplyMs));
    return {
      copies,
      outputId: inFolder ? '' : record.runId,
      folder: inFolder && `${inFolder.parent.name}/${inFolder.name}`,
      files,
      tensors: result.tensors,
      bytesWritten: result.bytesWritten,
      backend: result.backend,
      cpuThreads: threadCount,
      tensorsOnThreads: cpuThreads?.tensorsStarted ?? 0,
      placement: result.placement,
      elapsedMs: performance.now() - started,
    };
  } catch (e) {
    if (!keptForResume) {
      await discardCopies(resolveModel.copies);
      throw e;
    }
    throw new MergeError(
      `${(e as Error).message}. The merge so far is kept: Resume continues after its last finished tensor once the hub answers again`,
      undefined,
      { cause: e },
    );
  } finally {
    cpuThreads?.close();
    selected.dispose();
    await resolveModel.removeSpools?.().catch(() => undefined);
    // A record left by a failed delete points at no partial output; cleanUp drops it later.
    if (!keptForResume) await journal.remove(record.runId).catch(() => undefined);
  }
}

/** What Cancel left of a run (removeCancelledRun). */
export interface CancelledRunRemoval {
  /** The folder (`parent/name`) of an output committed before the worker stopped. */
  keptFolder?: string;
  /** The browser-storage output committed before the worker stopped. */
  keptOutput?: string;
  /** Streamed repos whose unfinished library copy was removed. */
  copiesCancelled: string[];
}

const api = {
  /**
   * Chunk size for new imports (tests use small chunks to exercise boundaries and resumption), and
   * for the crash tests a commit that stops after moving `stallCommitAfterFiles` files.
   */
  async configure(options: EngineOptions): Promise<void> {
    library = new ModelLibrary(library.kv, options.chunkBytes ?? MAX_CHUNK_BYTES);
    stallCommitsAfter(options.stallCommitAfterFiles);
    paceWrites(options.paceWritesMs);
    holdReplyMs = options.holdReplyMs ?? 0;
    streamCacheBytes = options.streamCacheBytes;
  },

  /**
   * Leftovers from a closed tab: commits cut short (their files go back to the run, which can then
   * be resumed), deletes cut short, outputs of earlier versions (given a manifest), runs whose commit finished but not its clean-up, partial runs nothing can resume
   * (no journal record), journal records whose partial output is gone, folder imports that cannot
   * continue.
   */
  async cleanUp(): Promise<{
    runs: string[];
    outputs: Awaited<ReturnType<typeof repairOutputs>>;
    keys: number;
  }> {
    const active = new Set([...runs.keys(), ...(await lockedRunIds())]);
    const repaired = await repairOutputs([...active]);
    // A run cancelled in a tab that closed before its files were removed is removed now.
    for (const runId of await journal.cancelledRuns()) {
      if (active.has(runId)) continue;
      await discardInterrupted(runId);
      // An output its run committed before the Cancel is the merge's result, as removeCancelledRun keeps it.
      if (!(await outputIsFinished(runId))) await deleteOutput(runId);
      await journal.clearCancelled(runId);
    }
    let records = await journal.list();
    for (const r of records) {
      if (active.has(r.runId)) continue;
      // A run into a folder whose files all have their final names committed before the tab closed.
      const finished = r.folder
        ? (await folderOutputState(r.folder).catch(() => 'unreadable')) === 'finished'
        : await outputIsFinished(r.runId);
      if (!finished) continue;
      await removePartialRun(r.runId);
      await journal.remove(r.runId);
    }
    records = await journal.list();
    const removed = await removeAbandonedRuns([...active, ...records.map((r) => r.runId)]);
    // Spools of runs not under way (a closed tab, a crash): a resumed run fetches its tensor afresh.
    await removeAbandonedSpools(active);
    for (const r of records) {
      if (r.folder) continue;
      if (!active.has(r.runId) && !(await partialRunFiles(r.runId))) await journal.remove(r.runId);
    }
    // The copies interrupted runs keep go on when those runs are resumed.
    const copies = (await journal.list()).flatMap((r) => (r.copyImports ?? []).map((c) => c.importId));
    return { runs: removed, outputs: repaired, keys: await library.removeAbandoned(copies) };
  },

  listModels: () => library.list(),
  pendingImports: () => library.pendingImports(),
  deleteModel: (id: string) => library.delete(id),
  /** Adds a folder on the user's computer as a model read in place (nothing is copied). */
  linkFolder: (handle: FileSystemDirectoryHandle) => library.link(handle),
  /** Accepts a linked folder's files as they are now. */
  relinkModel: (id: string) => library.relink(id),
  discardImport: async (id: string) => (await library.resumeImport(id)).abort(),

  async importFolder(
    runId: string,
    folder: string,
    files: FolderFile[],
    onProgress?: (p: ImportProgress) => void,
  ): Promise<ModelRecord> {
    const progress = throttle(onProgress);
    return withRun(runId, async (signal) => {
      const same = await findSameModel(library, selectModelFiles(folder, files));
      if (same) {
        throw new DuplicateModelError(
          `${folder} is already in the library as ${same.name} (the same files, sizes and bytes); nothing was stored`,
        );
      }
      return importFolder(library, folder, files, { signal, onProgress: (p) => progress.push(p) }).finally(
        () => progress.flush(),
      );
    });
  },

  async importHub(
    runId: string,
    request: HubRequest,
    onProgress?: (p: ImportProgress) => void,
  ): Promise<ModelRecord> {
    const progress = throttle(onProgress);
    return withRun(runId, (signal) =>
      importFromHub(library, request.repo, request.revision, {
        hubUrl: request.hubUrl,
        accessToken: request.accessToken,
        signal,
        onProgress: (p) => progress.push(p),
      }).finally(() => progress.flush()),
    );
  },

  async resumeHub(
    runId: string,
    importId: string,
    access: { hubUrl: string; accessToken?: string },
    onProgress?: (p: ImportProgress) => void,
  ): Promise<ModelRecord> {
    const progress = throttle(onProgress);
    return withRun(runId, (signal) =>
      resumeHubImport(library, importId, { ...access, signal, onProgress: (p) => progress.push(p) }).finally(
        () => progress.flush(),
      ),
    );
  },

  /** A hub model's files, sizes and shape, read before anything large is downloaded. */
  async planHub(
    runId: string,
    request: { repo: string; revision: string; hubUrl: string },
  ): Promise<HubModelPlan> {
    return withRun(runId, (signal) => planHubModel(request.repo, request.revision, request.hubUrl, signal));
  },

  /** The built-in tiny models (synthetic: generated deterministically, random weights) and a TIES recipe. */
  async loadDemo(runId: string): Promise<{ models: string[] }> {
    return withRun(runId, async (signal) => {
      const present = new Set((await library.list()).map((m) => m.name));
      const names: string[] = [];
      for (const model of await makeTinyTrio()) {
        names.push(model.name);
        if (present.has(model.name)) continue;
        const files = [...model.files].map(([name, bytes]) => ({
          name,
          blob: new Blob([bytes as BlobPart]),
        }));
        await importFolder(library, model.name, files, { signal, source: { kind: 'demo' } });
      }
      return { models: names };
    });
  },

  /** What the page says about WebGPU; `software` is set when auto would merge on the CPU, and why. */
  async gpuStatus(): Promise<{ available: boolean; adapter?: string; software?: string }> {
    if (!('gpu' in navigator) || !navigator.gpu) return { available: false };
    const adapter = await navigator.gpu
      .requestAdapter({ powerPreference: 'high-performance' })
      .catch(() => null);
    if (!adapter) return { available: false };
    return { available: true, adapter: adapterName(adapter), software: softwareAdapterReason(adapter) };
  },

  async merge(
    runId: string,
    request: MergeRequest,
    onProgress?: (p: MergeProgressEvent) => void,
    onLog?: (line: string) => void,
  ): Promise<MergeOutcome> {
    return withRun(runId, (signal) =>
      holdingRunLock(runId, async () => {
        const recipe = parseRecipe(request.recipeText, 'recipe');
        const hub = request.hubStream?.repos.length ? await pinStreams(request.hubStream, signal) : undefined;
        const resolveModel = runResolver(hub, signal, onLog, true, runId);
        return withCopiesDiscardedOnFailure(resolveModel, async () => {
          // The header-only validation: every problem of every model, before any tensor data is read.
          const prepared = await prepareMerge(recipe, resolveModel, request.outShardSize);
          const { plan } = prepared;
          const record: RunJournalRecord = {
            runId,
            recipeText: request.recipeText,
            seed: request.seed,
            device: request.device,
            cpuThreads: request.cpuThreads,
            gpuMemory: request.gpuMemory,
            outShardSize: request.outShardSize,
            startedAt: Date.now(),
            tensorsDone: 0,
            tensorsTotal: plan.tensors.length,
            models: await planModels(plan, hub),
            hubUrl: hub?.hubUrl,
            folder: request.outputFolder,
          };
          const selected = await selectWorkerBackend(
            request.device,
            recipe.mergeMethod,
            (line) => onLog?.(line),
            request.gpuMemory,
          );
          let output: OpfsOutput | FolderOutput | undefined;
          try {
            output = request.outputFolder
              ? await createFolderOutput(request.outputFolder)
              : await createOpfsOutput(runId);
            await journal.begin(record);
          } catch (e) {
            selected.dispose();
            if (request.outputFolder) await output?.abort();
            else await removePartialRun(runId);
            throw e;
          }
          return journaledMerge(
            record,
            recipe,
            prepared,
            output,
            selected,
            signal,
            onProgress,
            onLog,
            request.datasetsEndpoint,
            resolveModel,
          );
        });
      }),
    );
  },

  /**
   * The header-only validation a merge starts with, on its own: models opened (hub repos streamed
   * as the merge would), headers read, the plan made; no tensor data is read and nothing is written.
   */
  async checkMerge(runId: string, request: MergeRequest): Promise<MergeCheck> {
    return withRun(runId, async (signal) => {
      try {
        const recipe = parseRecipe(request.recipeText, 'recipe');
        const hub = request.hubStream?.repos.length ? await pinStreams(request.hubStream, signal) : undefined;
        const { plan } = await prepareMerge(recipe, runResolver(hub, signal), request.outShardSize);
        return {
          ok: true,
          tensors: plan.tensors.length,
          models: plan.models.length,
          inputBytes: plan.totalInputBytes,
        };
      } catch (e) {
        const error = e as Error;
        return { ok: false, error: error.message, errorName: error.name };
      }
    });
  },

  /** Merges cut short by a reload or a crash that can be resumed or discarded, oldest first. */
  async interruptedRuns(): Promise<InterruptedRun[]> {
    const active = new Set([...runs.keys(), ...(await lockedRunIds())]);
    const cancelled = new Set(await journal.cancelledRuns());
    const found: InterruptedRun[] = [];
    for (const record of await journal.list()) {
      if (active.has(record.runId) || cancelled.has(record.runId)) continue;
      // A run into a folder is listed even where its files cannot be checked without the folder's permission.
      if (record.folder || (await partialRunFiles(record.runId))) found.push(record);
    }
    return found;
  },

  /**
   * Continues an interrupted merge from its last finished tensor into the same output; the result
   * is the same as an uninterrupted run's (browser storage, or the temporary files of a folder on
   * the user's computer). When the run cannot continue (a model was deleted or replaced, the
   * partial files are short or gone) a ResumeError says why; a run in browser storage has its
   * leftovers discarded, a run into a folder is kept, marked, to be started again or discarded.
   */
  async resume(
    runId: string,
    onProgress?: (p: MergeProgressEvent) => void,
    onLog?: (line: string) => void,
    hubAccess?: { accessToken?: string },
  ): Promise<MergeOutcome> {
    return withRun(runId, (signal) =>
      holdingRunLock(runId, async () => {
        const record = await journal.get(runId);
        if (!record) throw new ResumeError(`there is no interrupted merge ${runId} to resume`);
        const folder = record.folder;
        const where = folder && `${folder.parent.name}/${folder.name}`;
        if (folder && record.resumeProblem) {
          throw new ResumeError(
            `the merge into ${where} cannot continue: ${record.resumeProblem}. Start it again (its partial files are removed first) or discard it.`,
          );
        }
        // Only the page can ask for the folder's permission (it does on Resume); refused, the run stays.
        if (folder && (await folderPermission(folder.parent, 'readwrite')) !== 'granted') {
          throw new ResumeError(
            `the browser did not allow writing into ${folder.parent.name}, so the merge into ${where} was not resumed; press Resume again and allow it`,
          );
        }
        const cannot = async (why: string): Promise<never> => {
          if (folder) {
            // The user's folder is theirs to clean: the run stays listed, to start again or discard.
            await journal.setResumeProblem(runId, why);
            throw new ResumeError(
              `the merge into ${where} cannot continue: ${why}. Start it again (its partial files are removed first) or discard it.`,
            );
          }
          await discardInterrupted(runId);
          throw new ResumeError(
            `the interrupted merge cannot continue: ${why}. Its partial output was discarded; run the merge again.`,
          );
        };
        // Streamed models are read again from the hub at the commits the run began with. A copy kept
        // in the library goes on from the pieces it stored before the reload (hub-copy.ts).
        const resolveModel = runResolver(
          recordStreams(record, hubAccess?.accessToken),
          signal,
          onLog,
          true,
          runId,
        );
        return withCopiesDiscardedOnFailure(resolveModel, async () => {
          let recipe: MergeRecipe;
          let check: Awaited<ReturnType<typeof resumeObstacle>>;
          try {
            recipe = parseRecipe(record.recipeText, 'recipe');
            check = await resumeObstacle(record, recipe, resolveModel);
          } catch (e) {
            // The hub out of reach or refusing the token may come back: keep the run to resume later.
            if (HUB_READ_ERRORS.has((e as Error).name)) throw e;
            return cannot((e as Error).message);
          }
          if ('obstacle' in check) return cannot(check.obstacle);
          const { prepared } = check;
          // A backend that is missing now may come back (another tab held the GPU): keep the run.
          const selected = await selectWorkerBackend(
            record.device,
            recipe.mergeMethod,
            (line) => onLog?.(line),
            record.gpuMemory,
          );
          let output: OpfsOutput | FolderOutput;
          try {
            output = folder ? await openFolderOutput(folder) : await openOpfsOutput(runId);
          } catch (e) {
            selected.dispose();
            return cannot((e as Error).message);
          }
          return journaledMerge(
            record,
            recipe,
            prepared,
            output,
            selected,
            signal,
            onProgress,
            onLog,
            undefined,
            resolveModel,
          );
        });
      }),
    );
  },

  /** Deletes an interrupted merge's partial output and its journal record. */
  async discardRun(runId: string): Promise<void> {
    if (runs.has(runId)) throw new RunInUseError(`the merge ${runId} is under way; cancel it instead`);
    await holdingRunLock(runId, () => discardInterrupted(runId, true));
  },

  /** Per-layer task-vector norms, sign conflicts and TIES' kept share, read tensor by tensor. */
  async inspect(
    runId: string,
    request: InspectRequest,
    onProgress?: (p: InspectProgress) => void,
  ): Promise<TaskVectorInspection> {
    const progress = throttle(onProgress);
    return withRun(runId, async (signal) => {
      const base = await library.openModel({ name: request.base });
      const models = await Promise.all(request.models.map((name) => library.openModel({ name })));
      return inspectTaskVectors({
        base,
        models,
        focus: request.models.indexOf(request.focus),
        density: request.density,
        signal,
        onProgress: (p) => progress.push(p),
      }).finally(() => progress.flush());
    });
  },

  /** The singular spectrum of one model's task vector for one 2-D tensor. */
  async inspectSpectrum(runId: string, request: SpectrumRequest): Promise<SpectrumInspection> {
    return withRun(runId, async (signal) => {
      const [base, model] = await Promise.all([
        library.openModel({ name: request.base }),
        library.openModel({ name: request.model }),
      ]);
      return inspectSpectrum({ base, model, tensor: request.tensor, signal });
    });
  },

  cancel(runId: string): void {
    runs.get(runId)?.abort();
  },

  /** Merges under way in any tab of this origin (each holds its run's Web Lock). */
  runsUnderWay: async (): Promise<string[]> => [...(await lockedRunIds())],

  /**
   * Removes what a merge whose worker was terminated (Cancel) left: its partial output, the
   * unfinished imports of the copies it was keeping (with their pieces, so none lingers under
   * "Unfinished downloads"), its journal record. The run is marked cancelled first, so that if this
   * tab closes before the files are removed the next start removes them instead of offering a
   * resume. Waits for the terminated worker's lock and file handles to go. A merge whose output was
   * committed before the worker stopped (while it completed its copies, or just before it answered)
   * keeps that output: the answer names it, in a folder or in browser storage.
   */
  async removeCancelledRun(runId: string, folder?: FolderOutputTarget): Promise<CancelledRunRemoval> {
    await journal.markCancelled(runId);
    const removal: CancelledRunRemoval = { copiesCancelled: [] };
    await navigator.locks.request(
      RUN_LOCK_PREFIX + runId,
      { signal: AbortSignal.timeout(CANCEL_WAIT_MS) },
      async () => {
        const record = await journal.get(runId);
        if (folder) {
          if ((await removePartialFolderOutput(folder, CANCEL_WAIT_MS)) === 'kept') {
            removal.keptFolder = `${folder.parent.name}/${folder.name}`;
          }
        } else if (await outputIsFinished(runId)) {
          removal.keptOutput = runId;
        }
        await removePartialRunWithin(runId, CANCEL_WAIT_MS);
        await removeRunSpoolWithin(runId, CANCEL_WAIT_MS);
        if (!removal.keptOutput) await deleteOutput(runId);
        for (const c of record?.copyImports ?? []) {
          if (await library.discardPendingImport(c.importId)) removal.copiesCancelled.push(c.repo);
        }
        await journal.remove(runId);
        await journal.clearCancelled(runId);
      },
    );
    return removal;
  },

  listOutputs,
  deleteOutput,
  outputDirectoryState,

  /** Copies a finished output into the library as a model (source: merge). */
  async addOutputToLibrary(runId: string, outputId: string, name: string): Promise<ModelRecord> {
    return withRun(runId, async (signal) => {
      const files = await outputFiles(outputId);
      const recipe = await files.find((f) => f.name === 'mergekit_config.yml')?.text();
      return importFolder(
        library,
        name,
        files.map((f) => ({ name: f.name, blob: f })),
        { signal, source: { kind: 'merge', recipe } },
      );
    });
  },
};

export type EngineApi = typeof api;

Comlink.expose(api);
