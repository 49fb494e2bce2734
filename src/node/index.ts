/** The Node API: what the CLI uses, for scripts and benchmarks that drive the engine directly. */
export { cpuBackend, DEFAULT_OUT_SHARD_SIZE, prepareMerge, runMerge } from '../engine/merge';
export type { MergeBackend, MergeOptions, MergeProgress, MergeResult } from '../engine/merge';
export { readTensorBytes, readSafetensorsHeader } from '../formats/safetensors';
export { planShards, ShardWriter } from '../formats/shard-writer';
export { encodeFromF32, decodeToF32 } from '../formats/dtype';
export { parseRecipe } from '../recipe';
export { folderResolver, modelFolder } from './model-folder';
export { outputDir } from './output-dir';
export { fileByteSource } from './file-source';
export { tinyQwenTensorShapes } from '../demo/tiny-qwen';
export type { TinyQwenShape } from '../demo/tiny-qwen';
