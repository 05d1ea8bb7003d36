// Opens a source from a path (pack folder, .rec, image folder) or from a spec sent to a worker thread.
import fs from 'node:fs';
import path from 'node:path';
import { ArcfaceError } from '../errors.ts';
import { ImageFolderSource } from './folder-source.ts';
import { MemorySource } from './memory-source.ts';
import { RecordIOSource } from './rec-source.ts';
import type { ImageSource, SourceSpec } from './source.ts';

export function openSourceFromSpec(spec: SourceSpec): ImageSource {
  switch (spec.kind) {
    case 'recordio':
      return RecordIOSource.fromSpec(spec);
    case 'folder':
      return new ImageFolderSource(spec.path, spec);
    case 'memory':
      return new MemorySource(spec.path, spec);
  }
}

/** A `.rec` file, a folder holding `train.rec`, or an image folder (one sub-folder per identity). */
export function openTrainingSource(p: string): ImageSource {
  if (!fs.existsSync(p)) throw new ArcfaceError('no such file or folder', p);
  if (fs.statSync(p).isDirectory()) {
    return fs.existsSync(path.join(p, 'train.rec')) ? RecordIOSource.open(p) : new ImageFolderSource(p);
  }
  if (p.endsWith('.rec')) return RecordIOSource.open(p);
  throw new ArcfaceError('expected a .rec file, a folder with train.rec, or an image folder', p);
}
