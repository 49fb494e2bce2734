/**
 * aim_statistics.safetensors: AIM's activation statistics saved beside a merge, reusable for another
 * omega without rerunning the calibration (`aim.statistics:` in a recipe).
 *
 * One F32 tensor [channels] per module, named by the module (`model.layers.0.self_attn.q_proj`), in
 * the order the forward pass meets them, holding a[c] (see src/model/calibration.ts). `__metadata__`:
 * `format` = "l2s-merge/aim-statistics", `version` = "1", `blocks`, `block_size`, `tokens`,
 * `text_sha256`, and `calibration` (the recipe's calibration block as JSON, without sha256).
 */
import { bytesByteSource } from '../formats/byte-source';
import { readSafetensorsHeader, SafetensorsError } from '../formats/safetensors';
import type { ActivationStatistics } from '../methods/aim';
import { aimBlockValue, type CalibrationSettings, readCalibrationBlock } from '../recipe/aim';

export const AIM_STATISTICS_FORMAT = 'l2s-merge/aim-statistics';
const VERSION = '1';
const HEADER_ALIGNMENT = 8;

/** A statistics file that is not one, or is inconsistent; names the file. */
export class AimStatisticsError extends Error {
  override name = 'AimStatisticsError';
}

export function encodeAimStatistics(stats: ActivationStatistics): Uint8Array {
  const metadata: Record<string, string> = {
    format: AIM_STATISTICS_FORMAT,
    version: VERSION,
    blocks: String(stats.blocks),
    block_size: String(stats.blockSize),
    tokens: String(stats.tokens),
    text_sha256: stats.textSha256,
  };
  if (stats.calibration) {
    const { sha256: _, ...calibration } = stats.calibration;
    metadata.calibration = JSON.stringify(
      aimBlockValue({ omega: 0, calibration: calibration as CalibrationSettings }).calibration,
    );
  }
  // Hand-assembled so the tensor order is kept (an object would list integer-like keys first).
  const entries = [`"__metadata__":${JSON.stringify(metadata)}`];
  let offset = 0;
  for (const [module, a] of stats.modules) {
    const end = offset + a.byteLength;
    entries.push(
      `${JSON.stringify(module)}:{"dtype":"F32","shape":[${a.length}],"data_offsets":[${offset},${end}]}`,
    );
    offset = end;
  }
  const json = new TextEncoder().encode(`{${entries.join(',')}}`);
  const headerBytes = Math.ceil(json.byteLength / HEADER_ALIGNMENT) * HEADER_ALIGNMENT;
  const out = new Uint8Array(8 + headerBytes + offset).fill(0x20, 8, 8 + headerBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes), true);
  out.set(json, 8);
  let at = 8 + headerBytes;
  for (const a of stats.modules.values()) {
    // Little-endian f32, whatever the host's byte order.
    const view = new DataView(out.buffer, at, a.byteLength);
    for (let c = 0; c < a.length; c++) view.setFloat32(c * 4, a[c], true);
    at += a.byteLength;
  }
  return out;
}

function positiveInt(value: string | undefined, key: string, file: string): number {
  const n = Number(value);
  if (value === undefined || !Number.isSafeInteger(n) || n < 1)
    throw new AimStatisticsError(`${file}: __metadata__.${key} must be a positive integer, got ${value}`);
  return n;
}

export async function decodeAimStatistics(bytes: Uint8Array, file: string): Promise<ActivationStatistics> {
  let header: Awaited<ReturnType<typeof readSafetensorsHeader>>;
  try {
    header = await readSafetensorsHeader(bytesByteSource(bytes, file));
  } catch (e) {
    if (e instanceof SafetensorsError) throw new AimStatisticsError(e.message, { cause: e });
    throw e;
  }
  const meta = header.metadata;
  if (meta.format !== AIM_STATISTICS_FORMAT) {
    throw new AimStatisticsError(
      `${file}: not an AIM statistics file (its __metadata__.format is ${JSON.stringify(meta.format)}, ` +
        `expected "${AIM_STATISTICS_FORMAT}"); name the aim_statistics.safetensors of an earlier AIM merge`,
    );
  }
  if (meta.version !== VERSION)
    throw new AimStatisticsError(
      `${file}: statistics format version ${meta.version} is not supported (expected ${VERSION})`,
    );
  if (!/^[0-9a-f]{64}$/.test(meta.text_sha256 ?? ''))
    throw new AimStatisticsError(`${file}: __metadata__.text_sha256 must be 64 hex digits`);
  let calibration: CalibrationSettings | undefined;
  if (meta.calibration !== undefined) {
    let raw: unknown;
    try {
      raw = JSON.parse(meta.calibration);
    } catch {
      throw new AimStatisticsError(`${file}: __metadata__.calibration is not JSON`);
    }
    calibration = readCalibrationBlock(raw, ['calibration'], (path, detail) => {
      throw new AimStatisticsError(`${file}: __metadata__.${path.join('.')}: ${detail}`);
    });
  }
  const modules = new Map<string, Float32Array>();
  for (const [name, info] of header.tensors) {
    if (info.dtype !== 'F32' || info.shape.length !== 1)
      throw new AimStatisticsError(
        `${file}: tensor '${name}' must be F32 [channels], is ${info.dtype} [${info.shape}]`,
      );
    const view = new DataView(bytes.buffer, bytes.byteOffset + info.offset, info.byteLength);
    const a = new Float32Array(info.shape[0]);
    for (let c = 0; c < a.length; c++) a[c] = view.getFloat32(c * 4, true);
    modules.set(name, a);
  }
  return {
    modules,
    blocks: positiveInt(meta.blocks, 'blocks', file),
    blockSize: positiveInt(meta.block_size, 'block_size', file),
    tokens: positiveInt(meta.tokens, 'tokens', file),
    textSha256: meta.text_sha256,
    calibration,
  };
}
