// Face alignment as insightface's `norm_crop`: a least-squares similarity transform (what
// skimage's SimilarityTransform.estimate / Umeyama gives) from five landmarks onto the ArcFace
// template, then a bilinear warp with border 0 (cv2.warpAffine, INTER_LINEAR, BORDER_CONSTANT).
import type { RgbImage } from './image.ts';

export type Point = readonly [number, number];
export type Landmarks5 = readonly [Point, Point, Point, Point, Point];
/** Row-major 2x3 affine matrix [[a, b, c], [d, e, f]]: (x, y) -> (a x + b y + c, d x + e y + f). */
export type Affine2x3 = [[number, number, number], [number, number, number]];

/** The ArcFace 112x112 template: left eye, right eye, nose tip, left and right mouth corners (as seen in the image). */
export const ARCFACE_TEMPLATE_112: Landmarks5 = [
  [38.2946, 51.6963],
  [73.5318, 51.5014],
  [56.0252, 71.7366],
  [41.5493, 92.3655],
  [70.7299, 92.2041],
];

/** The template for a square crop of `size` pixels, scaled as insightface's `estimate_norm` does. */
export function arcfaceTemplate(size = 112): Landmarks5 {
  if (!Number.isInteger(size) || size <= 0) throw new Error(`crop size must be a positive integer, got ${size}`);
  // Multiples of 112 scale the template; other sizes scale it as a 128 crop and shift x by 8 (insightface's rule).
  const ratio = size % 112 === 0 ? size / 112 : size / 128;
  const dx = size % 112 === 0 ? 0 : 8 * ratio;
  return ARCFACE_TEMPLATE_112.map(([x, y]) => [x * ratio + dx, y * ratio] as const) as unknown as Landmarks5;
}

/**
 * Least-squares similarity transform (rotation, uniform scale, translation; no reflection) mapping
 * `src` onto `dst`. For 2-D points this closed form is the Umeyama solution skimage computes.
 */
export function estimateSimilarity(src: readonly Point[], dst: readonly Point[]): Affine2x3 {
  if (src.length !== dst.length || src.length < 2) {
    throw new Error(`need the same number (>= 2) of source and target points, got ${src.length} and ${dst.length}`);
  }
  const n = src.length;
  let sx = 0, sy = 0, dx = 0, dy = 0;
  for (let i = 0; i < n; i++) {
    sx += src[i][0]; sy += src[i][1]; dx += dst[i][0]; dy += dst[i][1];
  }
  sx /= n; sy /= n; dx /= n; dy /= n;
  let num1 = 0, num2 = 0, den = 0;
  for (let i = 0; i < n; i++) {
    const x = src[i][0] - sx, y = src[i][1] - sy, u = dst[i][0] - dx, v = dst[i][1] - dy;
    num1 += x * u + y * v;
    num2 += x * v - y * u;
    den += x * x + y * y;
  }
  if (!(den > 0) || !Number.isFinite(den)) throw new Error('landmarks are degenerate (all at one point or not finite)');
  // Model [[a, -b], [b, a]]: a = s cos(theta), b = s sin(theta).
  const a = num1 / den, b = num2 / den;
  return [
    [a, -b, dx - (a * sx - b * sy)],
    [b, a, dy - (b * sx + a * sy)],
  ];
}

/** The matrix mapping image pixel coordinates of the five landmarks onto the ArcFace template for a `size` crop. */
export function alignmentMatrix(landmarks: Landmarks5, size = 112): Affine2x3 {
  return estimateSimilarity(landmarks, arcfaceTemplate(size));
}

function invertAffine(m: Affine2x3): Affine2x3 {
  const [[a, b, c], [d, e, f]] = m;
  const det = a * e - b * d;
  if (!(Math.abs(det) > 1e-12)) throw new Error('alignment matrix is singular');
  const ia = e / det, ib = -b / det, id = -d / det, ie = a / det;
  return [
    [ia, ib, -(ia * c + ib * f)],
    [id, ie, -(id * c + ie * f)],
  ];
}

/**
 * Warps `img` with `m` (source -> destination) into a `width` x `height` RGB image: each output pixel
 * samples the source at inverse(m)·(x, y, 1) bilinearly; neighbours outside the image count as 0.
 * Results are rounded to uint8, as cv2.warpAffine does for 8-bit images.
 */
export function warpAffine(img: RgbImage, m: Affine2x3, width: number, height: number = width): RgbImage {
  const inv = invertAffine(m);
  const [[a, b, c], [d, e, f]] = inv;
  const { width: W, height: H, data: src } = img;
  const out = new Uint8Array(width * height * 3);
  const px = (xi: number, yi: number, ch: number): number =>
    xi >= 0 && xi < W && yi >= 0 && yi < H ? src[(yi * W + xi) * 3 + ch] : 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const sx = a * x + b * y + c;
      const sy = d * x + e * y + f;
      const x0 = Math.floor(sx), y0 = Math.floor(sy);
      const fx = sx - x0, fy = sy - y0;
      const o = (y * width + x) * 3;
      if (x0 < -1 || y0 < -1 || x0 >= W || y0 >= H) continue; // all four neighbours outside: 0
      for (let ch = 0; ch < 3; ch++) {
        const top = px(x0, y0, ch) * (1 - fx) + px(x0 + 1, y0, ch) * fx;
        const bottom = px(x0, y0 + 1, ch) * (1 - fx) + px(x0 + 1, y0 + 1, ch) * fx;
        out[o + ch] = Math.min(255, Math.max(0, Math.round(top * (1 - fy) + bottom * fy)));
      }
    }
  }
  return { width, height, data: out };
}

/** insightface's `norm_crop`: the aligned `size` x `size` face crop for five landmarks. */
export function normCrop(img: RgbImage, landmarks: Landmarks5, size = 112): { crop: RgbImage; matrix: Affine2x3 } {
  const matrix = alignmentMatrix(landmarks, size);
  return { crop: warpAffine(img, matrix, size), matrix };
}

/** The five ArcFace points from iBUG 68 points: eye centres = mean of 36-41 and 42-47, nose tip 30, mouth corners 48 and 54. */
export function fivePointsFrom68(p: readonly Point[]): Landmarks5 {
  if (p.length !== 68) throw new Error(`expected 68 landmarks, got ${p.length}`);
  const mean = (from: number, to: number): Point => {
    let x = 0, y = 0;
    for (let i = from; i <= to; i++) {
      x += p[i][0];
      y += p[i][1];
    }
    const n = to - from + 1;
    return [x / n, y / n];
  };
  return [mean(36, 41), mean(42, 47), p[30], p[48], p[54]];
}
