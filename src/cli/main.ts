/**
 * `l2s-merge CONFIG.yml OUT_DIR [--seed N] [--out-shard-size SIZE] [--device auto|cpu|gpu]
 *   [--gpu-memory SIZE] [--force] [--hub-endpoint URL] [--offline]`,
 * and the subcommands `l2s-merge generate ...` (src/cli/generate.ts) and `l2s-merge eval ...` (src/cli/eval.ts).
 *
 * Exit 0 on success; otherwise one line on stderr that names the file and tensor at fault.
 */
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_OUT_SHARD_SIZE, placementSummary, prepareMerge, runMerge } from '../engine/merge';
import { parseByteSize } from '../formats/size';
import { MIN_MEMORY_BUDGET } from '../gpu/device';
import { aimStatisticsForRecipe } from '../model/calibration';
import type { FileLock } from '../node/file-lock';
import { NodeCpuThreads } from '../node/kernel-threads';
import { folderResolver } from '../node/model-folder';
import { outputDir } from '../node/output-dir';
import { nodeGpu } from '../node/webgpu';
import { parseRecipe } from '../recipe';
import { type DeviceChoice, selectBackend } from './backend';
import { UsageError } from './errors';
import { EVAL_USAGE, evalMain } from './eval';
import { failureText } from './fatal';
import { GENERATE_USAGE, generateMain } from './generate';
import { cliHubSettings, HUB_OPTIONS, HUB_USAGE } from './hub-options';
import { guardOutputDir } from './output-guard';
import { calibrationReporter, downloadReporter, progressReporter } from './progress';
import { readRecipeFile } from './recipe-file';
import { cancelOnSignals } from './signals';

export { installFatalHandlers } from './fatal';

export const USAGE = `usage: l2s-merge CONFIG.yml OUT_DIR [options]
       l2s-merge generate MODEL_DIR --prompt TEXT [options]   (see l2s-merge generate --help)
       l2s-merge eval MODEL_DIR... --questions FILE.jsonl     (see l2s-merge eval --help)

Merge models as a mergekit YAML recipe describes and write the result to OUT_DIR.
Models are folders (relative to CONFIG.yml) or hub ids (org/name, or org/name@revision with a
branch, tag or commit sha), downloaded into the Hugging Face cache when not already there.

options:
  --seed N               seed of DARE/DELLA's random masks (default 0); same seed, same bytes
  --out-shard-size SIZE  largest output shard, e.g. 500M, 2B (default 5B)
  --device auto|cpu|gpu  where the math runs (default auto: a hardware GPU through WebGPU, else the
                         CPU, saying why; gpu also takes a software adapter such as SwiftShader)
  --gpu-memory SIZE      GPU memory the merge may use, e.g. 3B, 500M (default: from the GPU's
                         limits); larger tensors stream through the GPU a tile at a time
  --threads N            CPU threads for the merge kernels, 1 to 64 (default 2 with 4 or more cores, else 1;
                         1 runs them on the main thread)
  --force                replace OUT_DIR when it holds an earlier l2s-merge output
  --allow-nonfinite      write the output even when merged tensors hold Inf or NaN
  --datasets-endpoint URL  dataset viewer for AIM's hub calibration sets
                         (default $L2S_DATASETS_ENDPOINT, else https://datasets-server.huggingface.co)
${HUB_USAGE}  --quiet                no progress output
  -h, --help             this help
`;

interface CliArgs {
  config: string;
  outDir: string;
  seed: number;
  outShardSize: number;
  device: DeviceChoice;
  gpuMemory?: number;
  threads: number;
  force: boolean;
  quiet: boolean;
  datasetsEndpoint?: string;
  allowNonFinite: boolean;
  hubFlags: Record<string, string | boolean | undefined>;
}

function parseCli(argv: string[]): CliArgs | 'help' {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        seed: { type: 'string' },
        'out-shard-size': { type: 'string' },
        device: { type: 'string' },
        'gpu-memory': { type: 'string' },
        threads: { type: 'string' },
        force: { type: 'boolean' },
        'datasets-endpoint': { type: 'string' },
        quiet: { type: 'boolean' },
        'allow-nonfinite': { type: 'boolean' },
        ...HUB_OPTIONS,
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const v = parsed.values as Record<string, string | boolean | undefined>;
  if (v.help) return 'help';
  if (parsed.positionals.length !== 2) {
    throw new UsageError(`expected CONFIG.yml and OUT_DIR, got ${parsed.positionals.length} argument(s)`);
  }
  const seedText = (v.seed as string | undefined) ?? '0';
  if (!/^\d+$/.test(seedText) || Number(seedText) > 0xffffffff) {
    throw new UsageError(`--seed must be an integer from 0 to 4294967295, got ${seedText}`);
  }
  const device = ((v.device as string | undefined) ?? 'auto') as DeviceChoice;
  if (!['auto', 'cpu', 'gpu'].includes(device))
    throw new UsageError(`--device must be auto, cpu or gpu, got ${device}`);
  // Measured on 2 shared cores (README, Benchmarks), a second kernel thread gains no wall time and
  // costs CPU time (the main thread reads and writes too); with 4 or more cores it has one of its own.
  const threadsText = (v.threads as string | undefined) ?? String(availableParallelism() >= 4 ? 2 : 1);
  if (!/^\d+$/.test(threadsText) || Number(threadsText) < 1 || Number(threadsText) > 64)
    throw new UsageError(`--threads must be an integer from 1 to 64, got ${threadsText}`);
  let outShardSize = DEFAULT_OUT_SHARD_SIZE;
  if (v['out-shard-size'] !== undefined) {
    try {
      outShardSize = parseByteSize(v['out-shard-size'] as string);
    } catch (e) {
      throw new UsageError(`--out-shard-size: ${(e as Error).message}`);
    }
  }
  let gpuMemory: number | undefined;
  if (v['gpu-memory'] !== undefined) {
    try {
      gpuMemory = parseByteSize(v['gpu-memory'] as string);
    } catch (e) {
      throw new UsageError(`--gpu-memory: ${(e as Error).message}`);
    }
    if (gpuMemory < MIN_MEMORY_BUDGET) {
      throw new UsageError(`--gpu-memory must be at least 16M (16 million bytes), got ${gpuMemory}`);
    }
  }
  return {
    config: parsed.positionals[0],
    outDir: parsed.positionals[1],
    seed: Number(seedText),
    outShardSize,
    device,
    gpuMemory,
    threads: Number(threadsText),
    force: Boolean(v.force),
    quiet: Boolean(v.quiet),
    datasetsEndpoint: (v['datasets-endpoint'] as string | undefined) ?? process.env.L2S_DATASETS_ENDPOINT,
    allowNonFinite: Boolean(v['allow-nonfinite']),
    hubFlags: { 'hub-endpoint': v['hub-endpoint'], offline: v.offline },
  };
}

export { EVAL_USAGE, GENERATE_USAGE };

export async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'generate') return generateMain(argv.slice(1));
  if (argv[0] === 'eval') return evalMain(argv.slice(1));
  const stderr = process.stderr;
  let args: CliArgs | 'help';
  try {
    args = parseCli(argv);
  } catch (e) {
    stderr.write(`l2s-merge: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (args === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  const controller = new AbortController();
  const say = (line: string) => stderr.write(`l2s-merge: ${line}\n`);
  const removeSignalHandlers = cancelOnSignals(controller, say);
  let resolver: ReturnType<typeof folderResolver> | undefined;
  let backend: Awaited<ReturnType<typeof selectBackend>> | undefined;
  let threads: NodeCpuThreads | undefined;
  let outputLock: FileLock | undefined;
  try {
    const recipe = parseRecipe(await readRecipeFile(args.config), args.config);
    resolver = folderResolver(dirname(resolve(args.config)), {
      settings: await cliHubSettings(args.hubFlags),
      options: {
        signal: controller.signal,
        onProgress: args.quiet ? undefined : downloadReporter(stderr),
        notice: say,
      },
    });
    // Hub models are found in the cache or downloaded here, before anything else is checked.
    outputLock = await guardOutputDir({
      outDir: args.outDir,
      force: args.force,
      recipe,
      recipeFile: args.config,
      locate: resolver.locate,
      log: say,
    });
    // The header-only validation (every problem of every model at once) before any device is opened,
    // so a recipe that cannot merge fails with its PlanError alone; runMerge reuses this plan.
    const prepared = await prepareMerge(recipe, resolver, args.outShardSize);
    backend = await selectBackend(
      args.device,
      recipe.mergeMethod,
      (line) => stderr.write(`l2s-merge: ${line}\n`),
      args.gpuMemory,
    );
    // AIM: the calibration pass on the base model comes before the merge (or saved statistics),
    // after the plan was checked, so a recipe that cannot merge fails before the long pass.
    const recipeDir = dirname(resolve(args.config));
    const aimStatistics = await aimStatisticsForRecipe(recipe, {
      resolveModel: resolver,
      readRecipeFile: async (path) => new Uint8Array(await readFile(resolve(recipeDir, path))),
      device: args.device,
      gpu: () => nodeGpu(),
      datasetsEndpoint: args.datasetsEndpoint,
      signal: controller.signal,
      onProgress: args.quiet ? undefined : calibrationReporter(stderr),
      notice: (line) => stderr.write(`l2s-merge: ${line}\n`),
    });
    const output = await outputDir(args.outDir, { force: args.force });
    // Started only for the CPU (a GPU backend leaves the CPU kernels to its fallback), and where the
    // threads' script is built (the bundle has it; an in-process run from source does not).
    if (args.threads > 1 && backend.backend.kind === 'cpu' && NodeCpuThreads.available())
      threads = NodeCpuThreads.start(args.threads);
    const result = await runMerge({
      aimStatistics,
      recipe,
      prepared,
      resolveModel: resolver,
      output,
      seed: args.seed,
      outShardSize: args.outShardSize,
      backend: backend.backend,
      cpuThreads: threads,
      signal: controller.signal,
      onProgress: args.quiet ? undefined : progressReporter(stderr),
      onLog: args.quiet ? undefined : say,
      onWarning: say,
      nonFinite: args.allowNonFinite ? 'allow' : 'error',
    });
    if (!args.quiet) {
      stderr.write(
        `l2s-merge: wrote ${result.files.length} files (${result.tensors} tensors) to ${args.outDir}\n` +
          `l2s-merge: ${placementSummary(result.placement)}\n`,
      );
    }
    return 0;
  } catch (e) {
    if ((e as Error).name === 'AbortError') {
      stderr.write('l2s-merge: cancelled; nothing was written\n');
      return 130;
    }
    if (e instanceof UsageError) {
      stderr.write(`l2s-merge: ${e.message}\n`);
      return 2;
    }
    const hint =
      (e as Error).name === 'NonFiniteOutputError' ? ' (--allow-nonfinite writes the output anyway)' : '';
    stderr.write(`l2s-merge: ${failureText(e)}${hint}\n`);
    return 1;
  } finally {
    await threads?.close().catch(() => {});
    await resolver?.closeAll().catch(() => {});
    backend?.dispose();
    // Last: until now this run may still write, rename or clean up beside OUT_DIR.
    await outputLock?.release().catch(() => {});
    removeSignalHandlers();
  }
}
