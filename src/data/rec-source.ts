// A RecordIO training pack (train.rec + train.idx + property) as an image source.
// Layouts: insightface (record 0 is a meta record: flag > 0, label [a, b], no image; images are keys
// 1..a-1), plain (every key of the .idx is an image, in key order) and no-idx (records in file order).
// Unlike insightface's MXFaceDataset, a record 0 that carries an image is an image even when its label is
// an array (im2rec --pack-label writes such files).
import fs from 'node:fs';
import path from 'node:path';
import { ArcfaceError } from '../errors.ts';
import { classOf, IRHEADER_SIZE, unpackRecord } from './irheader.ts';
import { idxPathFor, readIdxTable, RecordIOReader, scanRecordOffsets, type IdxTable } from './recordio.ts';
import { shareFloat64, type ImageSource, type SourceItem, type SourceSpec } from './source.ts';

export type RecLayout = 'insightface' | 'plain' | 'no-idx';

export interface PackProperty {
  numClasses: number;
  height: number;
  width: number;
}

/** Reads a `property` file (`num_classes,height,width`). */
export function readProperty(file: string): PackProperty {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw new ArcfaceError(`cannot read: ${(e as Error).message}`, file);
  }
  const parts = text.split(',').map((s) => Number(s.trim()));
  // Class ids are int32 and no decoder takes images past 65500 pixels a side: bigger numbers are damage.
  if (parts.length !== 3 || parts.some((n) => !Number.isInteger(n) || n <= 0) || parts[0] > 2 ** 31 - 1 || parts[1] > 65500 || parts[2] > 65500) {
    throw new ArcfaceError(`expected one line "num_classes,height,width" (e.g. 12,112,112), got ${JSON.stringify(text.slice(0, 60))}`, file);
  }
  return { numClasses: parts[0], height: parts[1], width: parts[2] };
}

/** key -> offset: a dense table when keys are small non-negative integers (the usual 0..N), else a Map. */
class KeyLookup {
  private dense: Float64Array | null = null;
  private map: Map<number, number> | null = null;

  constructor(t: IdxTable, file: string) {
    let max = -1;
    let denseOk = true;
    for (const k of t.keys) {
      if (k < 0 || !Number.isInteger(k)) denseOk = false;
      else if (k > max) max = k;
    }
    const dup = (k: number): never => {
      throw new ArcfaceError(`key ${k} appears twice`, file);
    };
    if (denseOk && max < 4 * t.keys.length + 1024) {
      this.dense = new Float64Array(max + 1).fill(-1);
      for (let i = 0; i < t.keys.length; i++) {
        if (this.dense[t.keys[i]] >= 0) dup(t.keys[i]);
        this.dense[t.keys[i]] = t.offsets[i];
      }
    } else {
      this.map = new Map();
      for (let i = 0; i < t.keys.length; i++) {
        if (this.map.has(t.keys[i])) dup(t.keys[i]);
        this.map.set(t.keys[i], t.offsets[i]);
      }
    }
  }

  get(k: number): number | undefined {
    if (this.dense) {
      const o = k >= 0 && k < this.dense.length ? this.dense[k] : -1;
      return o >= 0 ? o : undefined;
    }
    return this.map!.get(k);
  }

  /** Every key, ascending. */
  sortedKeys(): Float64Array {
    if (this.map) return Float64Array.from(this.map.keys()).sort();
    const d = this.dense!;
    let n = 0;
    for (let k = 0; k < d.length; k++) if (d[k] >= 0) n++;
    const out = new Float64Array(n);
    n = 0;
    for (let k = 0; k < d.length; k++) if (d[k] >= 0) out[n++] = k;
    return out;
  }
}

export interface RecordIOSourceOptions {
  /** Ignore the .idx and walk the file (the layout is still detected from record 0). */
  noIdx?: boolean;
}

export class RecordIOSource implements ImageSource {
  readonly kind = 'recordio' as const;
  readonly path: string;
  readonly layout: RecLayout;
  readonly property: PackProperty | null;
  /** Record key of each image, in dataset order. */
  readonly keys: Float64Array;
  /** Byte offset of each image's record. */
  readonly offsets: Float64Array;
  /** For the insightface layout: record 0's label [first identity-record key, end key]. */
  readonly meta: { a: number; b: number } | null = null;
  private readonly reader: RecordIOReader;
  private classes: number | undefined;

  /** `p` is a pack folder (holding train.rec) or a .rec file. */
  static open(p: string, opts: RecordIOSourceOptions = {}): RecordIOSource {
    let rec = p;
    if (fs.existsSync(p) && fs.statSync(p).isDirectory()) rec = path.join(p, 'train.rec');
    if (!fs.existsSync(rec)) throw new ArcfaceError('no such RecordIO file', rec);
    return new RecordIOSource(rec, opts);
  }

  /** Rebuilds a source from a spec (in a worker), without re-reading the .idx. */
  static fromSpec(spec: Extract<SourceSpec, { kind: 'recordio' }>): RecordIOSource {
    return new RecordIOSource(spec.rec, {}, spec);
  }

  private constructor(rec: string, opts: RecordIOSourceOptions, spec?: Extract<SourceSpec, { kind: 'recordio' }>) {
    this.path = rec;
    this.reader = new RecordIOReader(rec);
    const propFile = path.join(path.dirname(rec), 'property');
    if (spec) {
      this.layout = 'plain';
      this.property = null;
      this.keys = spec.keys;
      this.offsets = spec.offsets;
      this.classes = spec.numClasses >= 0 ? spec.numClasses : undefined;
      return;
    }
    this.property = fs.existsSync(propFile) ? readProperty(propFile) : null;
    const idxFile = idxPathFor(rec);
    let table: IdxTable;
    const hasIdx = !opts.noIdx && fs.existsSync(idxFile);
    if (hasIdx) {
      table = readIdxTable(idxFile);
      for (let i = 0; i < table.keys.length; i++) {
        if (table.offsets[i] >= this.reader.size) {
          throw new ArcfaceError(`key ${table.keys[i]}: offset ${table.offsets[i]} is past the end of ${path.basename(rec)} (${this.reader.size} bytes); the .idx does not belong to this .rec or the .rec is truncated`, idxFile);
        }
      }
    } else {
      const offs = scanRecordOffsets(rec);
      table = { keys: Float64Array.from(offs, (_, i) => i), offsets: Float64Array.from(offs) };
    }
    const byKey = new KeyLookup(table, hasIdx ? idxFile : rec);
    let keys: ArrayLike<number> = byKey.sortedKeys();
    let offsets: ArrayLike<number> = Float64Array.from(keys as Float64Array, (k) => byKey.get(k)!);
    // Meta record: key 0 with an array label and nothing after the labels.
    const off0 = byKey.get(0);
    let layout: RecLayout = hasIdx ? 'plain' : 'no-idx';
    if (off0 !== undefined) {
      const r0 = unpackRecord(this.reader.readAt(off0, 0).payload, `${rec} key 0`);
      if (r0.flag > 0 && r0.image.length === 0) {
        const lab = r0.label as Float32Array;
        const a = Math.round(lab[0]);
        const b = r0.flag > 1 ? Math.round(lab[1]) : a;
        // Images are keys 1..a-1, so a cannot pass the number of records (checked before allocating for them).
        if (!(a >= 1) || !(a - 1 <= table.keys.length) || !Number.isFinite(b)) {
          throw new ArcfaceError(
            `key 0, byte offset ${off0}: meta record label [${Array.from(lab.subarray(0, 4)).join(', ')}] does not give a first identity key between 1 and ${table.keys.length + 1} (the number of records + 1)`,
            rec,
          );
        }
        const imgKeys = new Float64Array(a - 1);
        const imgOffsets = new Float64Array(a - 1);
        for (let k = 1; k < a; k++) {
          const o = byKey.get(k);
          if (o === undefined) throw new ArcfaceError(`the meta record says images are keys 1..${a - 1}, but key ${k} is missing${hasIdx ? ` from ${path.basename(idxFile)}` : ''}`, rec);
          imgKeys[k - 1] = k;
          imgOffsets[k - 1] = o;
        }
        keys = imgKeys;
        offsets = imgOffsets;
        this.meta = { a, b };
        layout = 'insightface';
      }
    }
    this.layout = layout;
    this.keys = shareFloat64(keys);
    this.offsets = shareFloat64(offsets);
    if (this.property) this.classes = this.property.numClasses;
    else if (this.meta && this.meta.b > this.meta.a) this.classes = this.meta.b - this.meta.a;
  }

  get length(): number {
    return this.keys.length;
  }

  /** From `property`, else the meta record's identity count, else max label + 1 (reads every header once). */
  get numClasses(): number {
    if (this.classes === undefined) {
      let max = -1;
      for (let i = 0; i < this.length; i++) max = Math.max(max, this.label(i));
      this.classes = max + 1;
    }
    return this.classes;
  }

  label(i: number): number {
    const key = this.keys[i];
    // Header plus up to two floats of label array in the first chunk: one small read.
    const head = this.reader.peekAt(this.offsets[i], IRHEADER_SIZE, key);
    // A record shorter than the IRHeader: unpackRecord below says so.
    const flag = head.length < IRHEADER_SIZE ? 0 : new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(0, true);
    const full = flag === 0 ? head : this.reader.peekAt(this.offsets[i], IRHEADER_SIZE + 4 * flag, key);
    return this.checkLabel(classOf(unpackRecord(full, this.describe(i))), i);
  }

  bytes(i: number): Uint8Array {
    return this.item(i).bytes;
  }

  item(i: number): SourceItem {
    const key = this.keys[i];
    const r = unpackRecord(this.reader.readAt(this.offsets[i], key).payload, this.describe(i));
    return { label: this.checkLabel(classOf(r), i), bytes: r.image };
  }

  describe(i: number): string {
    return `${this.path} key ${this.keys[i]}`;
  }

  spec(): SourceSpec {
    return { kind: 'recordio', path: this.path, rec: this.path, keys: this.keys, offsets: this.offsets, numClasses: this.classes ?? -1 };
  }

  close(): void {
    this.reader.close();
  }

  private checkLabel(x: number, i: number): number {
    if (!Number.isFinite(x) || x < 0 || x !== Math.floor(x) || x > 2 ** 31 - 1) {
      throw new ArcfaceError(`${this.describe(i)}: label ${x} is not a class id (a non-negative integer)`);
    }
    return x;
  }
}
