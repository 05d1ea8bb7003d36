// Image bytes -> RGB uint8 at the model's input size. JPEGs go through libjpeg-turbo (synchronous, fast);
// PNG/WebP, JPEGs libjpeg-turbo rejects (CMYK, warnings) and every resize go through sharp (libvips).
import sharp from 'sharp';
import { ArcfaceError } from '../errors.ts';
import { decodeJpeg, isJpeg, JpegDecodeError, type RgbImage } from './jpeg.ts';

export type { RgbImage } from './jpeg.ts';

/** Bytes that no decoder accepts. The message names `where` (a file or a RecordIO key). */
export class ImageDecodeError extends ArcfaceError {
  override name = 'ImageDecodeError';
  constructor(readonly where: string, readonly reason: string) {
    super(`cannot decode image: ${reason}`, where);
  }
}

/**
 * Synchronous fast path: a JPEG that libjpeg-turbo decodes. Returns null when the slow path (sharp) is
 * needed: not a JPEG, or libjpeg-turbo refused it (CMYK, warnings, damage).
 */
export function decodeFast(bytes: Uint8Array, into?: Uint8Array): RgbImage | null {
  if (!isJpeg(bytes)) return null;
  let img: RgbImage;
  try {
    img = decodeJpeg(bytes, into);
  } catch (e) {
    if (e instanceof JpegDecodeError) return null;
    throw e;
  }
  return img;
}

/**
 * Decodes any JPEG/PNG/WebP to RGB; with `size`, resizes the shorter side to `size` and centre-crops to a
 * square (bicubic), which for a square image is a plain resize (insightface's `resize_short`).
 */
export async function decodeImage(bytes: Uint8Array, where: string, size?: number): Promise<RgbImage> {
  const fast = decodeFast(bytes);
  let img: RgbImage;
  if (fast) {
    img = fast;
  } else {
    try {
      // failOn 'error': tolerate libjpeg warnings as PIL and OpenCV do, refuse truncated or broken data.
      const { data, info } = await sharp(bytes, { failOn: 'error' })
        .removeAlpha()
        .toColourspace('srgb')
        .raw()
        .toBuffer({ resolveWithObject: true });
      if (info.channels !== 3) throw new Error(`unexpected ${info.channels} channels`);
      img = { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
    } catch (e) {
      throw new ImageDecodeError(where, firstLine((e as Error).message));
    }
  }
  if (size === undefined || (img.width === size && img.height === size)) return img;
  return resizeRgb(img, size, where);
}

/** Shorter side to `size`, centre crop to `size`x`size`, bicubic. */
export async function resizeRgb(img: RgbImage, size: number, where = 'image'): Promise<RgbImage> {
  try {
    const data = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
      .resize(size, size, { fit: 'cover', position: 'centre', kernel: 'cubic' })
      .raw()
      .toBuffer();
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: size, height: size };
  } catch (e) {
    throw new ImageDecodeError(where, `resize failed: ${firstLine((e as Error).message)}`);
  }
}

/** Encodes RGB pixels as a JPEG (quality 95 as insightface's pack builders use). */
export async function encodeJpeg(img: RgbImage, quality = 95): Promise<Uint8Array> {
  const buf = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } }).jpeg({ quality }).toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
}

function firstLine(s: string): string {
  return s.split('\n')[0].trim();
}
