// A source restricted to some of its images (a train / held-out split), as a source of the same kind so
// decode workers reopen it from its spec.
import { ArcfaceError } from '../errors.ts';
import { MemorySource } from './memory-source.ts';
import { openSourceFromSpec } from './open-source.ts';
import { shareFloat64, shareInt32, type ImageSource, type SourceSpec } from './source.ts';

export function subsetSource(source: ImageSource, indices: readonly number[]): ImageSource {
  for (const i of indices) {
    if (!Number.isInteger(i) || i < 0 || i >= source.length) throw new ArcfaceError(`subset index ${i} is outside 0..${source.length - 1}`, source.path);
  }
  const spec = source.spec();
  const pick = <T extends ArrayLike<number>>(a: T) => indices.map((i) => a[i]!);
  let sub: SourceSpec;
  switch (spec.kind) {
    case 'recordio':
      sub = { ...spec, keys: shareFloat64(pick(spec.keys)), offsets: shareFloat64(pick(spec.offsets)) };
      break;
    case 'folder':
      sub = { ...spec, files: indices.map((i) => spec.files[i]!), labels: shareInt32(pick(spec.labels)) };
      break;
    case 'memory':
      return new MemorySource(source.path, indices.map((i) => source.bytes(i)), pick(spec.labels));
  }
  return openSourceFromSpec(sub);
}
