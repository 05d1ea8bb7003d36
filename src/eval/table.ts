// `arcface eval` output: a table for people, one JSON object per set for programs.
import type { SetEvaluation } from './evaluate-bin.ts';
import { accuracyFlip } from './verification.ts';

/** `1e-3` rather than `0.001` in the column header. */
const farLabel = (far: number): string => (far > 0 && far < 0.01 ? far.toExponential().replace(/e-0*/, 'e-') : String(far));

/**
 * Accuracy as the reference prints it, its best squared-L2 threshold, then TAR and the cosine threshold
 * (the unit `compare` takes: same iff cosine > threshold) at each calibrated FAR.
 */
export function formatEvalTable(rows: readonly SetEvaluation[]): string {
  const fars = rows[0]?.calibration.map((c) => c.farTarget) ?? [];
  const header = ['set', 'pairs', 'Accuracy-Flip', 'accuracy %', 'XNorm', 'best thr (L2²)', ...fars.flatMap((f) => [`TAR@FAR=${farLabel(f)}`, 'cos thr'])];
  const body = rows.map((r) => [
    r.name,
    String(r.pairs),
    accuracyFlip(r),
    `${(100 * r.accuracyMean).toFixed(3)} ± ${(100 * r.accuracyStd).toFixed(3)}`,
    r.xnorm.toFixed(4),
    r.bestThreshold.toFixed(2),
    ...r.calibration.flatMap((c) => [c.tar.toFixed(4), c.threshold.toFixed(4)]),
  ]);
  const widths = header.map((h, c) => Math.max(h.length, ...body.map((b) => b[c].length)));
  const line = (cells: string[]) => cells.map((s, c) => (c === 0 ? s.padEnd(widths[c]) : s.padStart(widths[c]))).join('  ').trimEnd();
  return [line(header), ...body.map(line)].join('\n') + '\n';
}

/** One set as a flat JSON-able object (an infinite TAR threshold becomes null). */
export function evalJson(r: SetEvaluation, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    set: r.name,
    ...extra,
    pairs: r.pairs,
    accuracyFlip: accuracyFlip(r),
    accuracyMean: r.accuracyMean,
    accuracyStd: r.accuracyStd,
    accuracyPerFold: r.result.accuracyPerFold,
    xnorm: r.xnorm,
    bestThreshold: r.bestThreshold,
    farTarget: r.tarAtFar.farTarget,
    tar: r.tarAtFar.tar,
    far: r.tarAtFar.far,
    tarThreshold: Number.isFinite(r.tarAtFar.threshold) ? r.tarAtFar.threshold : null,
    /** Cosine thresholds: same iff cosine > threshold. */
    calibration: r.calibration,
  };
}
