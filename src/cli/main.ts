/**
 * `l2s-merge CONFIG.yml OUT_DIR [--seed N] [--out-shard-size SIZE] [--device auto|cpu|gpu]
 *   [--gpu-memory SIZE] [--force]`
 *
 * Exit 0 on success; otherwise one line on stderr that names the file and tensor at fault.
 */
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_OUT_SHARD_SIZE, placementSummary, runMerge } from '../engine/merge';
import { parseByteSize } from '../formats/size';
import { MIN_MEMORY_BUDGET } from '../gpu/device';
import { folderResolver } from '../node/model-folder';
import { outputDir } from '../node/output-dir';
import { parseRecipe } from '../recipe';
import { type DeviceChoice, selectBackend } from './backend';
import { failureText } from './fatal';
import { guardOutputDir } from './output-guard';
import { progressReporter } from './progress';
import { readRecipeFile } from './recipe-file';
import { cancelOnSignals } from './signals';

export { installFatalHandlers } from './fatal';

export const USAGE = `usage: l2s-merge CONFIG.yml OUT_DIR [options]

Merge models as a mergekit YAML recipe describes and write the result to OUT_DIR.
Models are folders (relative to CONFIG.yml) or hub ids already in the local Hugging Face cache.

options:
  --seed N               seed of DARE/DELLA's random masks (default 0); same seed, same bytes
  --out-shard-size SIZE  largest output shard, e.g. 500M, 2B (default 5B)
  --device auto|cpu|gpu  where the math runs (default auto: the GPU when WebGPU has an adapter)
  --gpu-memory SIZE      GPU memory the merge may use, e.g. 3B, 500M (default: from the GPU's
                         limits); larger tensors stream through the GPU a tile at a time
  --force                replace OUT_DIR when it holds an earlier l2s-merge output
  --allow-nonfinite      write the output even when merged tensors hold Inf or NaN
  --quiet                no progress output
  -h, --help             this help
`;

class UsageError extends Error {
  override name = 'UsageError';
}

interface CliArgs {
  config: string;
  outDir: string;
  seed: number;
  outShardSize: number;
  device: DeviceChoice;
  gpuMemory?: number;
  force: boolean;
  quiet: boolean;
  allowNonFinite: boolean;
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
        force: { type: 'boolean' },
        quiet: { type: 'boolean' },
        'allow-nonfinite': { type: 'boolean' },
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
    force: Boolean(v.force),
    quiet: Boolean(v.quiet),
    allowNonFinite: Boolean(v['allow-nonfinite']),
  };
}

export async function main(argv: string[]): Promise<number> {
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
  const resolver = folderResolver(dirname(resolve(args.config)));
  let backend: Awaited<ReturnType<typeof selectBackend>> | undefined;
  try {
    const recipe = parseRecipe(await readRecipeFile(args.config), args.config);
    await guardOutputDir({
      outDir: args.outDir,
      force: args.force,
      recipe,
      recipeFile: args.config,
      locate: resolver.locate,
      log: say,
    });
    backend = await selectBackend(
      args.device,
      recipe.mergeMethod,
      (line) => stderr.write(`l2s-merge: ${line}\n`),
      args.gpuMemory,
    );
    const output = await outputDir(args.outDir, { force: args.force });
    const result = await runMerge({
      recipe,
      resolveModel: resolver,
      output,
      seed: args.seed,
      outShardSize: args.outShardSize,
      backend: backend.backend,
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
    const hint =
      (e as Error).name === 'NonFiniteOutputError' ? ' (--allow-nonfinite writes the output anyway)' : '';
    stderr.write(`l2s-merge: ${failureText(e)}${hint}\n`);
    return 1;
  } finally {
    await resolver.closeAll().catch(() => {});
    backend?.dispose();
    removeSignalHandlers();
  }
}
