// Encoded images held in memory (a .bin verification set, a test set) as a source. The bytes are packed
// into one shared buffer so that worker threads see them without a copy.
import type { ImageSource, SourceItem, SourceSpec } from './source.ts';

export class MemorySource implements ImageSource {
  readonly kind = 'memory' as const;
  readonly numClasses: number;
  private readonly data: Uint8Array;
  private readonly offsets: Float64Array;
  private readonly labels: Int32Array;

  /** `labels` defaults to 0 for every image. */
  constructor(readonly path: string, images: readonly Uint8Array[] | Extract<SourceSpec, { kind: 'memory' }>, labels?: ArrayLike<number>) {
    if (!Array.isArray(images)) {
      const spec = images as Extract<SourceSpec, { kind: 'memory' }>;
      this.data = spec.data;
      this.offsets = spec.offsets;
      this.labels = spec.labels;
      this.numClasses = spec.numClasses;
      return;
    }
    const list = images as readonly Uint8Array[];
    if (labels && labels.length !== list.length) throw new Error(`${path}: ${list.length} images but ${labels.length} labels`);
    const total = list.reduce((n, b) => n + b.length, 0);
    this.data = new Uint8Array(new SharedArrayBuffer(Math.max(1, total)), 0, total);
    this.offsets = new Float64Array(new SharedArrayBuffer(8 * (list.length + 1)));
    let o = 0;
    list.forEach((b, i) => {
      this.data.set(b, o);
      this.offsets[i] = o;
      o += b.length;
    });
    this.offsets[list.length] = o;
    this.labels = new Int32Array(new SharedArrayBuffer(4 * Math.max(1, list.length)), 0, list.length);
    if (labels) this.labels.set(labels);
    let max = -1;
    for (const l of this.labels) max = Math.max(max, l);
    this.numClasses = max + 1;
  }

  get length(): number {
    return this.offsets.length - 1;
  }

  label(i: number): number {
    return this.labels[i];
  }

  bytes(i: number): Uint8Array {
    return this.data.subarray(this.offsets[i], this.offsets[i + 1]);
  }

  item(i: number): SourceItem {
    return { label: this.labels[i], bytes: this.bytes(i) };
  }

  describe(i: number): string {
    return `${this.path} image ${i}`;
  }

  spec(): SourceSpec {
    return { kind: 'memory', path: this.path, data: this.data, offsets: this.offsets, labels: this.labels, numClasses: this.numClasses };
  }

  close(): void {}
}
