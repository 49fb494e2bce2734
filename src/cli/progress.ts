/** One-line progress displays for stderr: a merge's tensors, bytes, throughput and ETA; hub downloads. */
import type { MergeProgress } from '../engine/merge';
import { formatBytes } from '../formats/size';
import type { CalibrationProgress } from '../model/calibration';
import type { HubDownloadProgress } from '../node/hub-cache';

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '--:--';
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const mm = String(m).padStart(2, '0');
  const ss = String(sec).padStart(2, '0');
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** Throughput counts input bytes read, the quantity that bounds a merge. */
export function progressLine(p: MergeProgress, width = 24): string {
  const frac =
    p.inputBytesTotal > 0
      ? p.inputBytesDone / p.inputBytesTotal
      : p.tensorsDone / Math.max(1, p.tensorsTotal);
  const filled = Math.round(frac * width);
  const bar = `${'#'.repeat(filled)}${'.'.repeat(width - filled)}`;
  const rate = p.elapsedMs > 0 ? (p.inputBytesDone / p.elapsedMs) * 1000 : 0;
  const eta = rate > 0 ? ((p.inputBytesTotal - p.inputBytesDone) / rate) * 1000 : Number.NaN;
  return (
    `[${bar}] ${(frac * 100).toFixed(1).padStart(5)}% ${p.tensorsDone}/${p.tensorsTotal} tensors, ` +
    `${formatBytes(p.inputBytesDone)}/${formatBytes(p.inputBytesTotal)} read, ${formatBytes(rate)}/s, ` +
    `ETA ${formatDuration(eta)}`
  );
}

/**
 * Redraws in place on a terminal; elsewhere (a log file, CI) prints the first report, then a line at
 * most every `intervalMs`, and the last. Large tensors report every chunk, so the first tensor is
 * throttled like any other.
 */
export function progressReporter(
  stream: Pick<NodeJS.WriteStream, 'write' | 'isTTY' | 'columns'>,
  intervalMs = 2000,
): (p: MergeProgress) => void {
  let last = Number.NEGATIVE_INFINITY;
  return (p) => {
    const now = Date.now();
    const done = p.tensorsDone === p.tensorsTotal;
    if (stream.isTTY) {
      if (now - last < 100 && !done) return;
      last = now;
      stream.write(`\r${progressLine(p).slice(0, (stream.columns ?? 120) - 1)}\x1b[K${done ? '\n' : ''}`);
    } else {
      if (now - last < intervalMs && !done) return;
      last = now;
      stream.write(`${progressLine(p)}\n`);
    }
  };
}

/** AIM's calibration pass: blocks, tokens per second, ETA; one line per block (it is the slow part). */
export function calibrationReporter(stream: NodeJS.WriteStream): (p: CalibrationProgress) => void {
  return (p) => {
    if (p.blocksDone === 0) {
      stream.write(`l2s-merge: AIM calibration: ${p.blocksTotal} blocks on the base model\n`);
      return;
    }
    const rate = p.elapsedMs > 0 ? (p.tokensDone / p.elapsedMs) * 1000 : 0;
    stream.write(
      `l2s-merge: AIM calibration: block ${p.blocksDone}/${p.blocksTotal}, ${p.tokensDone} tokens, ` +
        `${rate.toFixed(0)} tokens/s, ETA ${formatDuration(p.etaMs ?? Number.NaN)}\n`,
    );
  };
}

/** A hub download: the file, bytes of all files, throughput of this run's bytes, ETA. */
export function downloadLine(p: HubDownloadProgress, width = 24): string {
  const frac = p.bytesTotal > 0 ? p.bytesDone / p.bytesTotal : 1;
  const filled = Math.round(frac * width);
  const bar = `${'#'.repeat(filled)}${'.'.repeat(width - filled)}`;
  const fresh = p.bytesDone - p.bytesResumed;
  const rate = p.elapsedMs > 0 ? (fresh / p.elapsedMs) * 1000 : 0;
  const eta = rate > 0 ? ((p.bytesTotal - p.bytesDone) / rate) * 1000 : Number.NaN;
  return (
    `[${bar}] ${(frac * 100).toFixed(1).padStart(5)}% ${p.model} ${p.file}, ` +
    `${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)}, ${formatBytes(rate)}/s, ETA ${formatDuration(eta)}`
  );
}

/** Like progressReporter: in place on a terminal, else a line at most every `intervalMs` and the last. */
export function downloadReporter(
  stream: Pick<NodeJS.WriteStream, 'write' | 'isTTY' | 'columns'>,
  intervalMs = 2000,
): (p: HubDownloadProgress) => void {
  let last = Number.NEGATIVE_INFINITY;
  return (p) => {
    const now = Date.now();
    const done = p.bytesDone === p.bytesTotal;
    if (stream.isTTY) {
      if (now - last < 100 && !done) return;
      last = now;
      stream.write(`\r${downloadLine(p).slice(0, (stream.columns ?? 120) - 1)}\x1b[K${done ? '\n' : ''}`);
    } else {
      if (now - last < intervalMs && !done) return;
      last = now;
      stream.write(`${downloadLine(p)}\n`);
    }
  };
}
