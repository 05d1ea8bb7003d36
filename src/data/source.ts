// The interface every image dataset shares (RecordIO packs, image folders, in-memory .bin sets), so that one
// loader feeds them all. A source reads synchronously; a `spec()` lets a worker thread reopen the same source.

export interface SourceItem {
  /** Class id (0-based integer). */
  label: number;
  /** Encoded image bytes (JPEG, PNG or WebP). */
  bytes: Uint8Array;
}

export interface ImageSource {
  readonly kind: SourceSpec['kind'];
  /** The file or folder the images come from, for messages. */
  readonly path: string;
  /** Number of images. */
  readonly length: number;
  /** Number of classes (identities). */
  readonly numClasses: number;
  /** Class id of image i. May read from disk (RecordIO keeps labels in the records). */
  label(i: number): number;
  /** Encoded bytes of image i. */
  bytes(i: number): Uint8Array;
  /** Label and bytes with one read. */
  item(i: number): SourceItem;
  /** Where image i lives, for error messages: "train.rec key 17", a file path. */
  describe(i: number): string;
  /** A structured-cloneable description from which `openSource` rebuilds this source in another thread. */
  spec(): SourceSpec;
  close(): void;
}

export type SourceSpec =
  | { kind: 'recordio'; path: string; rec: string; keys: Float64Array; offsets: Float64Array; numClasses: number }
  | { kind: 'folder'; path: string; files: string[]; labels: Int32Array; classes: string[] }
  | { kind: 'memory'; path: string; data: Uint8Array; offsets: Float64Array; labels: Int32Array; numClasses: number };

/** Copies a typed array into shared memory, so sending it to workers does not copy it again. */
export function shareFloat64(a: ArrayLike<number>): Float64Array {
  const out = new Float64Array(new SharedArrayBuffer(8 * Math.max(1, a.length)), 0, a.length);
  out.set(a);
  return out;
}

export function shareInt32(a: ArrayLike<number>): Int32Array {
  const out = new Int32Array(new SharedArrayBuffer(4 * Math.max(1, a.length)), 0, a.length);
  out.set(a);
  return out;
}
