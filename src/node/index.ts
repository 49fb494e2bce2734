/** The Node API: what the CLI uses, for scripts and benchmarks that drive the engine directly. */

export { selectBackend } from '../cli/backend';
export type { TinyQwenShape } from '../demo/tiny-qwen';
export { tinyQwenTensorShapes } from '../demo/tiny-qwen';
export type { MergeBackend, MergeOptions, MergeProgress, MergeResult } from '../engine/merge';
export {
  cpuBackend,
  DEFAULT_OUT_SHARD_SIZE,
  placementSummary,
  prepareMerge,
  runMerge,
  STREAM_ELEMENTS,
} from '../engine/merge';
export { readInto } from '../formats/byte-source';
export { DTYPE_BYTES, decodeToF32, encodeFromF32 } from '../formats/dtype';
export { readSafetensorsHeader, readTensorBytes } from '../formats/safetensors';
export { planShards, ShardWriter } from '../formats/shard-writer';
export { parseByteSize } from '../formats/size';
export { GpuMergeBackend } from '../gpu/backend';
export { GpuContext } from '../gpu/device';
export { rsvdGpu } from '../gpu/rsvd';
export { gpuMergeBackend } from '../gpu/select-backend';
export { frobeniusNormSquared, lowRankProduct, matmul, rsvd } from '../linalg';
// AIM's statistics pass (bench/aim.mjs).
export { cpuStatisticsSink, runStatisticsPass } from '../model/calibration';
// The model runtime: what `l2s-merge generate` runs.
export { parseModelConfig } from '../model/config';
export { generate } from '../model/generate';
export { GpuActivationStatistics } from '../model/gpu/activation-stats';
export { createGpuRunner } from '../model/gpu/runner';
export { createRunner } from '../model/index';
export { createCpuRunner } from '../model/reference';
export { ModelTokenizer } from '../model/tokenizer';
export { openModelWeights } from '../model/weights';
export { parseRecipe } from '../recipe';
export { fileByteSource } from './file-source';
export { NodeCpuThreads } from './kernel-threads';
export { folderResolver, modelFolder } from './model-folder';
export { outputDir } from './output-dir';
export { nodeGpu } from './webgpu';
