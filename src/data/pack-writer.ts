// Writes a training pack (train.rec, train.idx, property) that MXNet and insightface read. All three
// files are written under temporary names and published together by finish() (an AtomicFileSet), so a
// pack killed at any moment leaves the previous pack or none, never a new .rec beside an old .idx.
//
// insightface layout (as its RecBuilder writes MS1M/Glint packs): images are keys 1..N with scalar labels,
// grouped by identity; then one identity record per class (keys N+1..N+C, label [first key, end key));
// record 0, written last, has label [N+1, N+C+1] and no image. Plain layout: images are keys 0..N-1.
import fs from 'node:fs';
import path from 'node:path';
import { ArcfaceError } from '../errors.ts';
import { packRecord } from './irheader.ts';
import { RecordIOWriter, writeIdx, type IdxEntry } from './recordio.ts';
import { AtomicFileSet } from '../util/atomic.ts';

export type PackLayout = 'insightface' | 'plain';

export interface PackSummary {
  images: number;
  identities: number;
  /** Records written in several parts because their payload held the magic word at an aligned offset. */
  splitRecords: number;
  files: { rec: string; idx: string; property: string };
}

export class PackWriter {
  readonly files: { rec: string; idx: string; property: string };
  private readonly tmp: { rec: string; idx: string; property: string };
  private readonly set: AtomicFileSet;
  private readonly writer: RecordIOWriter;
  private readonly idx: IdxEntry[] = [];
  /** [first key, end key) per class, in class order. */
  private readonly ranges: [number, number][] = [];
  private count = 0;
  private lastLabel = -1;
  private done = false;
  private splitRecords = 0;

  constructor(readonly dir: string, readonly layout: PackLayout = 'insightface', name = 'train') {
    fs.mkdirSync(dir, { recursive: true });
    this.files = { rec: path.join(dir, `${name}.rec`), idx: path.join(dir, `${name}.idx`), property: path.join(dir, 'property') };
    // property last: its presence marks a finished pack.
    this.set = new AtomicFileSet([this.files.rec, this.files.idx, this.files.property]);
    const [rec, idx, property] = this.set.temporaries as [string, string, string];
    this.tmp = { rec, idx, property };
    this.writer = new RecordIOWriter(this.tmp.rec);
  }

  /** Adds one encoded image with its class id. The insightface layout needs labels in non-decreasing order. */
  add(label: number, image: Uint8Array): number {
    if (this.done) throw new Error('pack already finished');
    if (!Number.isInteger(label) || label < 0) throw new ArcfaceError(`label ${label} is not a non-negative integer`, this.files.rec);
    if (this.layout === 'insightface' && label < this.lastLabel) {
      throw new ArcfaceError(`the insightface layout needs images grouped by identity in increasing order (label ${label} after ${this.lastLabel})`, this.files.rec);
    }
    const key = this.layout === 'insightface' ? this.count + 1 : this.count;
    const offset = this.writer.write(packRecord({ label, id: key }, image));
    this.idx.push({ key, offset });
    if (label !== this.lastLabel) {
      // Classes with no image still get an (empty) identity record, so class ids stay aligned.
      for (let c = this.lastLabel + 1; c <= label; c++) this.ranges.push([key, key]);
      this.lastLabel = label;
    }
    this.ranges[label][1] = key + 1;
    this.count++;
    return key;
  }

  get images(): number {
    return this.count;
  }

  /** Writes identity and meta records (insightface layout), the .idx and `property`, then renames all three. */
  finish(opts: { numClasses?: number; height: number; width: number }): PackSummary {
    const numClasses = opts.numClasses ?? this.lastLabel + 1;
    if (numClasses < this.lastLabel + 1) throw new ArcfaceError(`numClasses ${numClasses} is below the largest label + 1 (${this.lastLabel + 1})`, this.files.rec);
    if (this.count === 0) throw new ArcfaceError('no images to pack', this.files.rec);
    try {
      if (this.layout === 'insightface') {
        while (this.ranges.length < numClasses) this.ranges.push([this.count + 1, this.count + 1]);
        const a = this.count + 1;
        this.ranges.forEach(([s, e], c) => {
          const key = a + c;
          this.idx.push({ key, offset: this.writer.write(packRecord({ label: [s, e], id: key })) });
        });
        this.idx.push({ key: 0, offset: this.writer.write(packRecord({ label: [a, a + numClasses], id: 0 })) });
      }
      this.splitRecords = this.writer.splitRecords;
      this.writer.close();
      writeIdx(this.tmp.idx, this.idx);
      fs.writeFileSync(this.tmp.property, `${numClasses},${opts.height},${opts.width}`);
      this.set.commit();
    } catch (e) {
      this.abort();
      throw e;
    }
    this.done = true;
    return { images: this.count, identities: numClasses, splitRecords: this.splitRecords, files: this.files };
  }

  /** Deletes the temporary files (after an error or an interruption). */
  abort(): void {
    this.done = true;
    this.writer.abort();
    this.set.abort();
  }
}
