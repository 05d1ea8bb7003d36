// RGB images for inference: decoding files with sharp (any format it reads, EXIF orientation applied)
// and plain resizing. Pixels are interleaved uint8 RGB, row-major.
import fs from 'node:fs';
import sharp from 'sharp';
import { ArcfaceError } from '../errors.ts';

export interface RgbImage {
  width: number;
  height: number;
  /** width * height * 3 bytes, RGB interleaved. */
  data: Uint8Array;
}

/** Decodes an image file (or its bytes) to RGB; a missing or non-image file is an ArcfaceError naming it. */
export async function decodeImage(fileOrBytes: string | Uint8Array, label?: string): Promise<RgbImage> {
  const name = typeof fileOrBytes === 'string' ? fileOrBytes : (label ?? '<image bytes>');
  if (typeof fileOrBytes === 'string' && !fs.existsSync(fileOrBytes)) throw new ArcfaceError('no such file', name);
  if (typeof fileOrBytes === 'string' && fs.statSync(fileOrBytes).isDirectory()) throw new ArcfaceError('is a folder, not an image file', name);
  try {
    // rotate() with no angle applies the EXIF orientation, so phone photos come out upright.
    const { data, info } = await sharp(fileOrBytes).rotate().removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } catch (e) {
    throw new ArcfaceError(`not a readable image (${(e as Error).message})`, name);
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
