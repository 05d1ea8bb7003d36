// Turns an image file into the JPEG bytes a pack or .bin stores: a JPEG that is already size x size and
// decodes cleanly is kept byte for byte; anything else is decoded, resized (shorter side + centre crop)
// and re-encoded at JPEG quality 95, as insightface's builders do.
import { decodeFast, decodeImage, encodeJpeg } from './decode.ts';
import { isJpeg, jpegSize } from './jpeg.ts';

export interface PreparedImage {
  jpeg: Uint8Array;
  /** True when the bytes were re-encoded (not a JPEG, another size, or only decodable by libvips). */
  reencoded: boolean;
}

/** Throws ImageDecodeError (naming `where`) when the bytes cannot be decoded. */
export async function prepareImage(bytes: Uint8Array, where: string, size: number, quality = 95): Promise<PreparedImage> {
  if (isJpeg(bytes)) {
    const dims = jpegSize(bytes);
    if (dims && dims.width === size && dims.height === size && decodeFast(bytes)) return { jpeg: bytes, reencoded: false };
  }
  const img = await decodeImage(bytes, where, size);
  return { jpeg: await encodeJpeg(img, quality), reencoded: true };
}
