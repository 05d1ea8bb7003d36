// An image folder as a source: one sub-folder per identity (sorted by name -> class ids 0..C-1, as
// torchvision's ImageFolder does), images found recursively inside it, sorted by path.
import fs from 'node:fs';
import path from 'node:path';
import { ArcfaceError } from '../errors.ts';
import { shareInt32, type ImageSource, type SourceItem, type SourceSpec } from './source.ts';

export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp'];

export function isImageFile(name: string): boolean {
  return IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase());
}

const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function walk(dir: string, out: string[], skipped: string[]): void {
  const entries = fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => byName(a.name, b.name));
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p, out, skipped);
    else if (isImageFile(e.name)) out.push(p);
    else skipped.push(p);
  }
}

export class ImageFolderSource implements ImageSource {
  readonly kind = 'folder' as const;
  readonly path: string;
  /** Identity names (sub-folder names); class id = position. */
  readonly classes: string[];
  readonly files: string[];
  readonly labels: Int32Array;
  /** Files that are not images by extension (ignored). */
  readonly ignored: string[];

  constructor(root: string, spec?: Extract<SourceSpec, { kind: 'folder' }>) {
    this.path = root;
    if (spec) {
      this.classes = spec.classes;
      this.files = spec.files;
      this.labels = spec.labels;
      this.ignored = [];
      return;
    }
    if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) throw new ArcfaceError('not a folder (expected one sub-folder per identity)', root);
    const dirs = fs
      .readdirSync(root, { withFileTypes: true })
      .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
      .map((e) => e.name)
      .sort(byName);
    const files: string[] = [];
    const labels: number[] = [];
    const ignored: string[] = [];
    const classes: string[] = [];
    for (const d of dirs) {
      const found: string[] = [];
      walk(path.join(root, d), found, ignored);
      if (!found.length) continue; // an empty identity would be a class no image trains
      const c = classes.length;
      classes.push(d);
      for (const f of found) {
        files.push(f);
        labels.push(c);
      }
    }
    for (const e of fs.readdirSync(root, { withFileTypes: true })) {
      if (e.isFile() && !e.name.startsWith('.')) ignored.push(path.join(root, e.name));
    }
    if (!files.length) throw new ArcfaceError('no images found (expected <identity>/<image>.{jpg,png,webp} in it)', root);
    this.classes = classes;
    this.files = files;
    this.labels = shareInt32(labels);
    this.ignored = ignored;
  }

  get length(): number {
    return this.files.length;
  }

  get numClasses(): number {
    return this.classes.length;
  }

  label(i: number): number {
    return this.labels[i];
  }

  bytes(i: number): Uint8Array {
    try {
      return fs.readFileSync(this.files[i]);
    } catch (e) {
      throw new ArcfaceError(`cannot read: ${(e as Error).message}`, this.files[i]);
    }
  }

  item(i: number): SourceItem {
    return { label: this.labels[i], bytes: this.bytes(i) };
  }

  describe(i: number): string {
    return this.files[i];
  }

  spec(): SourceSpec {
    return { kind: 'folder', path: this.path, files: this.files, labels: this.labels, classes: this.classes };
  }

  close(): void {}
}
