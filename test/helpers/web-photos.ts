// Photos of a few people for the web page test, made from face-api's demo group photos (shipped in its npm
// package): each face is one person; variants differ in framing, rotation, mirroring, colour and border.
import sharp from 'sharp';

/** Variant k (0..7) of the face at box [x, y, w, h] of `photo`, as a 256x256 JPEG at `out`. */
export async function variant(photo: string, [x, y, w, h]: [number, number, number, number], k: number, out: string): Promise<void> {
  const meta = await sharp(photo).metadata();
  // The face and a little around it (no neighbour's face), on a plain border the detector needs around a face.
  const side = Math.round(Math.max(w, h) * (1.6 + 0.15 * (k % 3)));
  const cx = x + w / 2 + w * 0.08 * (((k * 5) % 3) - 1);
  const cy = y + h / 2 + h * 0.06 * (((k * 7) % 3) - 1);
  const left = Math.max(0, Math.round(cx - side / 2));
  const top = Math.max(0, Math.round(cy - side / 2));
  const region = { left, top, width: Math.min(side, meta.width! - left), height: Math.min(side, meta.height! - top) };
  const grey = [70, 110, 150, 90, 130, 60, 100, 140][k]!;
  const border = { r: grey, g: grey, b: grey + 20 };
  const face = await sharp(photo).extract(region).resize(150, 150, { fit: 'cover' }).toBuffer();
  let img = sharp(face)
    .extend({ top: 53, bottom: 53, left: 53, right: 53, background: border })
    .rotate([0, -8, 6, -4, 10, 3, -6, 5][k]!, { background: border })
    .resize(256, 256, { fit: 'cover' });
  if (k % 2) img = img.flop();
  img = img.modulate({ brightness: [1, 0.85, 1.15, 0.9, 1.1, 0.95, 1.05, 0.85][k]!, saturation: [1, 0.6, 1.3, 0.3, 1, 1.1, 0.8, 1.2][k]!, hue: [0, 10, -10, 0, 20, -15, 5, -5][k]! });
  await img.jpeg({ quality: [90, 80, 85, 75, 90, 70, 85, 80][k]! }).toFile(out);
}
