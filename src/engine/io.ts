/**
 * What the engine reads models from and writes output to. Node (files), the worker (IndexedDB
 * library, OPFS output) and tests each provide these, so the engine is written once.
 */
import type { ByteSource } from '../formats/byte-source';

/** One model as a set of named files (config.json, *.safetensors, index, tokenizer files). */
export interface ModelFiles {
  /** How the model is named to the user: a folder path or a library name. */
  readonly name: string;
  /** File names relative to the model root, e.g. `model-00001-of-00002.safetensors`. */
  files(): readonly string[];
  /** Random access to one file; rejects with an error naming the file when it is absent. */
  open(file: string): Promise<ByteSource>;
}

/** Finds a recipe's model reference (`./r1`, `deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B`). */
export type ModelResolver = (reference: string) => Promise<ModelFiles>;

export interface FileSink {
  write(bytes: Uint8Array): Promise<void>;
  /** Makes what was written durable (used before a finished tensor is recorded for resumption). */
  flush?(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Where the merged folder goes. Files are written somewhere private and only `commit` makes the
 * folder visible as finished; `abort` removes every trace. Nothing half-written looks finished.
 */
export interface OutputTarget {
  createFile(name: string): Promise<FileSink>;
  /** For resuming: open an existing file, cut it to `keepBytes`, and append from there. */
  reopenFile?(name: string, keepBytes: number): Promise<FileSink>;
  commit(): Promise<void>;
  abort(): Promise<void>;
}
