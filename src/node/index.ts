/** The Node API: what the CLI uses, for scripts and benchmarks that drive the engine directly. */

export { selectBackend } from '../cli/backend';
export type { TinyQwenShape } from '../demo/tiny-qwen';
export { tinyQwenTensorShapes } from '../demo/tiny-qwen';
export type { MergeBackend, MergeOptions, MergeProgress, MergeResult } from '../engine/merge';
export { cpuBackend, DEFAULT_OUT_SHARD_SIZE, placementSummary, prepareMerge, runMerge } from '../engine/merge';
export { decodeToF32, encodeFromF32 } from '../formats/dtype';
export { parseByteSize } from '../formats/size';
export { readSafetensorsHeader, readTensorBytes } from '../formats/safetensors';
export { planShards, ShardWriter } from '../formats/shard-writer';
export { GpuMergeBackend } from '../gpu/backend';
export { GpuContext } from '../gpu/device';
export { gpuMergeBackend } from '../gpu/select-backend';
export { rsvdGpu } from '../gpu/rsvd';
export { frobeniusNormSquared, lowRankProduct, matmul, rsvd } from '../linalg';
export { parseRecipe } from '../recipe';
export { fileByteSource } from './file-source';
export { folderResolver, modelFolder } from './model-folder';
export { outputDir } from './output-dir';
export { nodeGpu } from './webgpu';
