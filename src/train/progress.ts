// Training output: a JSON-lines log that is always written, a live one-line progress display on a TTY,
// and the reference's log lines (verification results) on stderr.
import fs from 'node:fs';

export interface ProgressOptions {
  quiet?: boolean;
  total: number;
  stepsPerEpoch: number;
  batchSize: number;
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

export class ProgressLog {
  private readonly fd: number;
  private readonly tty: boolean;
  private windowStart = performance.now();
  private windowSteps = 0;
  private lastDraw = 0;
  private lastSpeed = 0;

  constructor(file: string, private readonly o: ProgressOptions) {
    this.fd = fs.openSync(file, 'a');
    this.tty = !o.quiet && process.stderr.isTTY === true;
  }

  /** Samples/s since the last call (the window of the last `frequent` steps). */
  speed(): { samplesPerSec: number } {
    const now = performance.now();
    const sps = (this.windowSteps * this.o.batchSize * 1000) / Math.max(1, now - this.windowStart);
    this.windowStart = now;
    this.windowSteps = 0;
    this.lastSpeed = sps;
    return { samplesPerSec: +sps.toFixed(2) };
  }

  event(e: Record<string, unknown>): void {
    fs.writeSync(this.fd, `${JSON.stringify({ time: new Date().toISOString(), ...e })}\n`);
    if (this.o.quiet) return;
    if (e.type === 'train') {
      const eta = ((this.o.total - (e.step as number)) * this.o.batchSize) / Math.max(this.lastSpeed, 1e-9);
      this.line(
        `Speed ${(e.samplesPerSec as number).toFixed(2)} samples/sec   Loss ${(e.loss as number).toFixed(4)}   LearningRate ${(e.lr as number).toFixed(6)}   Epoch: ${e.epoch}   Global Step: ${e.step}   Required: ${formatSeconds(eta)}`,
      );
    }
  }

  /** A log line on stderr (clearing the live line first). */
  line(text: string): void {
    if (this.o.quiet) return;
    if (this.tty) process.stderr.write('\r\x1b[2K');
    process.stderr.write(`${text}\n`);
  }

  /** The live line, redrawn at most 10 times a second on a TTY. */
  progress(p: { step: number; epoch: number; loss: number; lr: number }): void {
    this.windowSteps++;
    if (!this.tty) return;
    const now = performance.now();
    if (now - this.lastDraw < 100 && p.step !== this.o.total) return;
    this.lastDraw = now;
    const elapsed = (now - this.windowStart) / 1000;
    const sps = elapsed > 0 ? (this.windowSteps * this.o.batchSize) / elapsed : this.lastSpeed;
    const eta = ((this.o.total - p.step) * this.o.batchSize) / Math.max(sps, 1e-9);
    const pct = Math.floor((100 * p.step) / this.o.total);
    process.stderr.write(
      `\r\x1b[2Kstep ${p.step}/${this.o.total} (${pct}%)  epoch ${p.epoch}  ${sps.toFixed(1)} img/s  loss ${p.loss.toFixed(4)}  lr ${p.lr.toFixed(5)}  ETA ${formatSeconds(eta)}`,
    );
  }

  close(): void {
    if (this.tty) process.stderr.write('\r\x1b[2K');
    fs.closeSync(this.fd);
  }
}
