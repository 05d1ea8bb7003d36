// insightface verification sets (`lfw.bin`, `cfp_fp.bin`, `agedb_30.bin`): a pickle of
// `(list of 2P encoded images, list of P issame flags)`; pair k is images 2k and 2k+1.
// Reads Python 2 protocol 2 (py2 str), protocols 3-5 (bytes) and numpy.bool_ flags; writes protocol 2,
// the format of the published files, which py2 and py3 `pickle.load(f, encoding='bytes')` both read.
import fs from 'node:fs';
import { ArcfaceError } from '../errors.ts';
import { parseBin, serialiseBin, type VerificationSet } from './bin-bytes.ts';
import { decodeImage, resizeRgb, type RgbImage } from './decode.ts';
import { MemorySource } from './memory-source.ts';
import { writeFileAtomic } from '../util/atomic.ts';

export { parseBin, serialiseBin, type VerificationSet };

export function readBin(file: string): VerificationSet {
  let buf: Uint8Array;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new ArcfaceError(`cannot read: ${(e as Error).message}`, file);
  }
  if (buf.length === 0) throw new ArcfaceError('not a verification .bin: the file is empty (0 bytes)', file);
  return parseBin(buf, file);
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
