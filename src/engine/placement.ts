/** The run summary of where tensors were merged (the CLI's last line, the app's merge status). */

/** Where the tensors were merged, and why any left the GPU. */
export interface TensorPlacement {
  gpu: number;
  cpu: number;
  /** Tensors copied unchanged from one model (no math). */
  copied: number;
  /** Why tensors of a GPU run were merged on the CPU: by error name, with a count and one message. */
  cpuReasons: Array<{ reason: string; tensors: number; example: string }>;
}

/** One line for the run summary: "290 tensors merged on the GPU, 0 on the CPU, 1 copied". */
export function placementSummary(p: TensorPlacement): string {
  let line = `${p.gpu} tensors merged on the GPU, ${p.cpu} on the CPU, ${p.copied} copied`;
  for (const r of p.cpuReasons) line += `; ${r.tensors} on the CPU for ${r.reason} (${r.example})`;
  return line;
}
