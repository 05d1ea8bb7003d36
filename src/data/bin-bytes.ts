// The bytes of insightface verification sets (`.bin`: a pickle of (2P encoded images, P issame flags));
// no file or image I/O here, so it runs in browsers too (bin-set.ts reads, writes and decodes).
import { ArcfaceError } from '../errors.ts';
import { PickleObject, PyTuple, pickle, unpickle } from '../formats/pickle.ts';

export interface VerificationSet {
  /** 2P encoded images (JPEG/PNG bytes). */
  images: Uint8Array[];
  /** P flags: true when images 2k and 2k+1 show the same person. */
  issame: boolean[];
}

const NUMPY_SCALAR = new Set(['numpy.core.multiarray.scalar', 'numpy._core.multiarray.scalar']);

/** numpy.bool_ (and integer) scalars pickled as scalar(dtype, raw bytes) -> boolean. */
function toBool(v: unknown, k: number, file: string): boolean {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number' && (v === 0 || v === 1)) return v === 1;
  if (v instanceof PickleObject && NUMPY_SCALAR.has(v.cls.qualname)) {
    const [dtype, raw] = v.args;
    const kind = dtype instanceof PickleObject && dtype.cls.qualname.endsWith('.dtype') ? String(dtype.args[0]) : '?';
    const bytes = raw instanceof Uint8Array ? raw : typeof raw === 'string' ? Uint8Array.from(raw, (c) => c.charCodeAt(0)) : null;
    if (bytes && (kind === 'b1' || kind === '?' || /^[iu]\d$/.test(kind))) return bytes.some((b) => b !== 0);
    throw new ArcfaceError(`issame[${k}] is a numpy scalar of dtype ${kind}, expected bool`, file);
  }
  const what = v instanceof PickleObject ? v.cls.qualname : typeof v;
  throw new ArcfaceError(`issame[${k}] is ${what}, expected a boolean`, file);
}

/** Parses the bytes of a `.bin` file; `file` names it in errors. */
export function parseBin(buf: Uint8Array, file: string): VerificationSet {
  let root: unknown;
  try {
    root = unpickle(buf);
  } catch (e) {
    throw new ArcfaceError(`not a verification .bin (cannot unpickle: ${(e as Error).message})`, file);
  }
  if (!Array.isArray(root) || root.length !== 2 || !Array.isArray(root[0]) || !Array.isArray(root[1])) {
    throw new ArcfaceError('not a verification .bin: expected a pickled (list of images, list of issame) pair', file);
  }
  const [rawImages, rawSame] = root as [unknown[], unknown[]];
  const images = rawImages.map((b, i) => {
    if (b instanceof Uint8Array) return b;
    throw new ArcfaceError(`not a verification .bin: image ${i} is ${b === null ? 'None' : typeof b}, expected bytes`, file);
  });
  const issame = rawSame.map((v, k) => toBool(v, k, file));
  if (images.length !== 2 * issame.length) {
    throw new ArcfaceError(`not a verification .bin: ${images.length} images for ${issame.length} pairs (expected twice as many images)`, file);
  }
  return { images, issame };
}

/** Serialises a set as insightface's files are: protocol 2, images as py2 str, issame as bools. */
export function serialiseBin(set: VerificationSet): Uint8Array {
  if (set.images.length !== 2 * set.issame.length) throw new Error(`${set.images.length} images for ${set.issame.length} pairs`);
  return pickle(new PyTuple([set.images, set.issame.map((b) => !!b)]), { protocol: 2 });
}
