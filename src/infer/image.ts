// Photos for inference: read from a file (EXIF orientation applied, so phone photos come out upright)
// through the project's one decoder, and plain resizing. Pixels are interleaved uint8 RGB, row-major.
import fs from 'node:fs';
import sharp from 'sharp';
import { ArcfaceError } from '../errors.ts';
import { decodeImage, ImageDecodeError, type RgbImage } from '../data/decode.ts';

export type { RgbImage } from '../data/decode.ts';

/** Reads a photo file (or its bytes) as RGB; a missing or non-image file is an ArcfaceError naming it. */
export async function readImage(fileOrBytes: string | Uint8Array, label?: string): Promise<RgbImage> {
  const name = typeof fileOrBytes === 'string' ? fileOrBytes : (label ?? '<image bytes>');
  let bytes: Uint8Array;
  if (typeof fileOrBytes === 'string') {
    try {
      bytes = fs.readFileSync(fileOrBytes);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new ArcfaceError(code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder, not an image file' : `cannot read (${code ?? (e as Error).message})`, name);
    }
  } else {
    bytes = fileOrBytes;
  }
  try {
    return await decodeImage(bytes, name, { orient: true });
  } catch (e) {
    if (e instanceof ImageDecodeError) throw new ArcfaceError(`not a readable image (${e.reason})`, name);
    throw e;
  }
}

/** Resizes to exactly `width` x `height` (aspect ratio not kept), bilinear: the `--no-align` path. */
export async function resizeImage(img: RgbImage, width: number, height: number = width): Promise<RgbImage> {
  if (img.width === width && img.height === height) return img;
  const data = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .resize(width, height, { fit: 'fill', kernel: 'linear' })
    .raw()
    .toBuffer();
  return { width, height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/** Writes an RGB image as PNG (for inspecting aligned crops). */
export async function writePng(img: RgbImage, file: string): Promise<void> {
  await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } }).png().toFile(file);
}
