// insightface verification sets (`lfw.bin`, `cfp_fp.bin`, `agedb_30.bin`): a pickle of
// `(list of 2P encoded images, list of P issame flags)`; pair k is images 2k and 2k+1.
// Reads Python 2 protocol 2 (py2 str), protocols 3-5 (bytes) and numpy.bool_ flags; writes protocol 2,
// the format of the published files, which py2 and py3 `pickle.load(f, encoding='bytes')` both read.
import fs from 'node:fs';
import { ArcfaceError } from '../errors.ts';
import { PickleObject, PyTuple, pickle, unpickle } from '../formats/pickle.ts';
import { decodeImage, resizeRgb, type RgbImage } from './decode.ts';
import { MemorySource } from './memory-source.ts';
import { writeFileAtomic } from '../util/atomic.ts';

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

export function readBin(file: string): VerificationSet {
  let buf: Uint8Array;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new ArcfaceError(`cannot read: ${(e as Error).message}`, file);
  }
  return parseBin(buf, file);
}

/** Serialises a set as insightface's files are: protocol 2, images as py2 str, issame as bools. */
export function serialiseBin(set: VerificationSet): Uint8Array {
  if (set.images.length !== 2 * set.issame.length) throw new Error(`${set.images.length} images for ${set.issame.length} pairs`);
  return pickle(new PyTuple([set.images, set.issame.map((b) => !!b)]), { protocol: 2 });
}

/** Writes a `.bin` through a temporary name, so an interrupted write leaves no partial file. */
export function writeBin(file: string, set: VerificationSet): void {
  writeFileAtomic(file, serialiseBin(set));
}

/** The images as a source (label = pair index), for decoding with the loader's worker pool. */
export function binSource(set: VerificationSet, name: string): MemorySource {
  return new MemorySource(name, set.images, set.images.map((_, i) => i >> 1));
}

/**
 * Decodes every image of a set to RGB uint8 at `size`x`size`. Images of another size are resized
 * (shorter side, centre crop, bicubic); `resized` counts them so that callers can warn.
 */
export async function decodeBinImages(set: VerificationSet, file: string, size = 112): Promise<{ images: RgbImage[]; resized: number }> {
  let resized = 0;
  const images: RgbImage[] = [];
  for (let i = 0; i < set.images.length; i++) {
    const where = `${file} image ${i}`;
    const img = await decodeImage(set.images[i], where);
    if (img.width !== size || img.height !== size) {
      resized++;
      images.push(await resizeRgb(img, size, where));
    } else {
      images.push(img);
    }
  }
  return { images, resized };
}
