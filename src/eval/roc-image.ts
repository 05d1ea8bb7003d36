// ROC curves as a PNG: drawn into raw RGBA pixels (axes, grid, ticks, labels with a built-in 5x7 font,
// one coloured curve per set, a legend) and encoded with sharp. No font files or canvas needed.
import sharp from 'sharp';
import { ArcfaceError } from '../errors.ts';

export interface RocCurve {
  /** Legend text, e.g. "lfw 0.99500". Letters, digits and + - . : = ( ) / _ % are drawn. */
  name: string;
  fpr: ArrayLike<number>;
  tpr: ArrayLike<number>;
}

export interface RocImageOptions {
  width?: number;
  height?: number;
  title?: string;
}

export interface RgbaImage {
  width: number;
  height: number;
  data: Uint8Array;
}

// 5x7 glyphs, one string per row, '#' = ink.
const FONT: Record<string, string[]> = {
  '0': [' ### ', '#   #', '#  ##', '# # #', '##  #', '#   #', ' ### '],
  '1': ['  #  ', ' ##  ', '  #  ', '  #  ', '  #  ', '  #  ', ' ### '],
  '2': [' ### ', '#   #', '    #', '   # ', '  #  ', ' #   ', '#####'],
  '3': ['#####', '   # ', '  #  ', '   # ', '    #', '#   #', ' ### '],
  '4': ['   # ', '  ## ', ' # # ', '#  # ', '#####', '   # ', '   # '],
  '5': ['#####', '#    ', '#### ', '    #', '    #', '#   #', ' ### '],
  '6': ['  ## ', ' #   ', '#    ', '#### ', '#   #', '#   #', ' ### '],
  '7': ['#####', '    #', '   # ', '  #  ', ' #   ', ' #   ', ' #   '],
  '8': [' ### ', '#   #', '#   #', ' ### ', '#   #', '#   #', ' ### '],
  '9': [' ### ', '#   #', '#   #', ' ####', '    #', '   # ', ' ##  '],
  A: [' ### ', '#   #', '#   #', '#####', '#   #', '#   #', '#   #'],
  B: ['#### ', '#   #', '#   #', '#### ', '#   #', '#   #', '#### '],
  C: [' ### ', '#   #', '#    ', '#    ', '#    ', '#   #', ' ### '],
  D: ['#### ', '#   #', '#   #', '#   #', '#   #', '#   #', '#### '],
  E: ['#####', '#    ', '#    ', '#### ', '#    ', '#    ', '#####'],
  F: ['#####', '#    ', '#    ', '#### ', '#    ', '#    ', '#    '],
  G: [' ### ', '#   #', '#    ', '# ###', '#   #', '#   #', ' ####'],
  H: ['#   #', '#   #', '#   #', '#####', '#   #', '#   #', '#   #'],
  I: [' ### ', '  #  ', '  #  ', '  #  ', '  #  ', '  #  ', ' ### '],
  J: ['  ###', '   # ', '   # ', '   # ', '   # ', '#  # ', ' ##  '],
  K: ['#   #', '#  # ', '# #  ', '##   ', '# #  ', '#  # ', '#   #'],
  L: ['#    ', '#    ', '#    ', '#    ', '#    ', '#    ', '#####'],
  M: ['#   #', '## ##', '# # #', '# # #', '#   #', '#   #', '#   #'],
  N: ['#   #', '#   #', '##  #', '# # #', '#  ##', '#   #', '#   #'],
  O: [' ### ', '#   #', '#   #', '#   #', '#   #', '#   #', ' ### '],
  P: ['#### ', '#   #', '#   #', '#### ', '#    ', '#    ', '#    '],
  Q: [' ### ', '#   #', '#   #', '#   #', '# # #', '#  # ', ' ## #'],
  R: ['#### ', '#   #', '#   #', '#### ', '# #  ', '#  # ', '#   #'],
  S: [' ####', '#    ', '#    ', ' ### ', '    #', '    #', '#### '],
  T: ['#####', '  #  ', '  #  ', '  #  ', '  #  ', '  #  ', '  #  '],
  U: ['#   #', '#   #', '#   #', '#   #', '#   #', '#   #', ' ### '],
  V: ['#   #', '#   #', '#   #', '#   #', '#   #', ' # # ', '  #  '],
  W: ['#   #', '#   #', '#   #', '# # #', '# # #', '# # #', ' # # '],
  X: ['#   #', '#   #', ' # # ', '  #  ', ' # # ', '#   #', '#   #'],
  Y: ['#   #', '#   #', ' # # ', '  #  ', '  #  ', '  #  ', '  #  '],
  Z: ['#####', '    #', '   # ', '  #  ', ' #   ', '#    ', '#####'],
  '.': ['     ', '     ', '     ', '     ', '     ', ' ##  ', ' ##  '],
  '-': ['     ', '     ', '     ', '#####', '     ', '     ', '     '],
  '+': ['     ', '  #  ', '  #  ', '#####', '  #  ', '  #  ', '     '],
  ':': ['     ', ' ##  ', ' ##  ', '     ', ' ##  ', ' ##  ', '     '],
  '=': ['     ', '     ', '#####', '     ', '#####', '     ', '     '],
  '(': ['   # ', '  #  ', ' #   ', ' #   ', ' #   ', '  #  ', '   # '],
  ')': [' #   ', '  #  ', '   # ', '   # ', '   # ', '  #  ', ' #   '],
  '/': ['    #', '    #', '   # ', '  #  ', ' #   ', '#    ', '#    '],
  _: ['     ', '     ', '     ', '     ', '     ', '     ', '#####'],
  '%': ['##  #', '##  #', '   # ', '  #  ', ' #   ', '#  ##', '#  ##'],
  ' ': ['     ', '     ', '     ', '     ', '     ', '     ', '     '],
};

const COLOURS: [number, number, number][] = [
  [31, 119, 180], [214, 39, 40], [44, 160, 44], [255, 127, 14], [148, 103, 189], [140, 86, 75],
];

class Canvas {
  readonly data: Uint8Array;
  constructor(readonly width: number, readonly height: number) {
    this.data = new Uint8Array(width * height * 4).fill(255);
  }

  set(x: number, y: number, [r, g, b]: [number, number, number]): void {
    x = Math.round(x);
    y = Math.round(y);
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const i = (y * this.width + x) * 4;
    this.data[i] = r;
    this.data[i + 1] = g;
    this.data[i + 2] = b;
    this.data[i + 3] = 255;
  }

  rect(x0: number, y0: number, x1: number, y1: number, c: [number, number, number]): void {
    for (let y = Math.round(y0); y <= Math.round(y1); y++) for (let x = Math.round(x0); x <= Math.round(x1); x++) this.set(x, y, c);
  }

  /** Line of the given thickness, by dense sampling (simple and good enough for a plot). */
  line(x0: number, y0: number, x1: number, y1: number, c: [number, number, number], thick = 1): void {
    const n = Math.max(1, Math.ceil(Math.hypot(x1 - x0, y1 - y0) * 2));
    const h = (thick - 1) / 2;
    for (let i = 0; i <= n; i++) {
      const x = x0 + ((x1 - x0) * i) / n;
      const y = y0 + ((y1 - y0) * i) / n;
      if (thick <= 1) this.set(x, y, c);
      else this.rect(x - h, y - h, x + h, y + h, c);
    }
  }

  /** Text at scale `s`; (x, y) is the top-left corner. Returns the width drawn. */
  text(str: string, x: number, y: number, c: [number, number, number], s = 2): number {
    let cx = x;
    for (const ch of str.toUpperCase()) {
      const g = FONT[ch] ?? FONT[' '];
      for (let r = 0; r < 7; r++) for (let k = 0; k < 5; k++) if (g[r][k] === '#') this.rect(cx + k * s, y + r * s, cx + k * s + s - 1, y + r * s + s - 1, c);
      cx += 6 * s;
    }
    return cx - x;
  }

  /** Text rotated 90 degrees counter-clockwise (for the y-axis label); (x, y) is the bottom-left corner. */
  textUp(str: string, x: number, y: number, c: [number, number, number], s = 2): void {
    let cy = y;
    for (const ch of str.toUpperCase()) {
      const g = FONT[ch] ?? FONT[' '];
      for (let r = 0; r < 7; r++) for (let k = 0; k < 5; k++) if (g[r][k] === '#') this.rect(x + r * s, cy - k * s - s + 1, x + r * s + s - 1, cy - k * s, c);
      cy -= 6 * s;
    }
  }
}

const textWidth = (s: string, scale: number) => s.length * 6 * scale;

/** Draws the ROC plot (FPR on x, TPR on y, both 0..1) into an RGBA image. */
export function renderRoc(curves: RocCurve[], opts: RocImageOptions = {}): RgbaImage {
  const width = opts.width ?? 640;
  const height = opts.height ?? 560;
  if (width < 200 || height < 200) throw new ArcfaceError(`roc image: ${width}x${height} is too small (at least 200x200)`);
  for (const c of curves) {
    if (c.fpr.length !== c.tpr.length) throw new ArcfaceError(`roc image: curve "${c.name}" has ${c.fpr.length} FPR and ${c.tpr.length} TPR values`);
  }
  const cv = new Canvas(width, height);
  const black: [number, number, number] = [0, 0, 0];
  const grey: [number, number, number] = [225, 225, 225];
  const left = 80;
  const right = width - 24;
  const top = 48;
  const bottom = height - 70;
  const px = (f: number) => left + f * (right - left);
  const py = (t: number) => bottom - t * (bottom - top);

  const title = opts.title ?? 'ROC';
  cv.text(title, (width - textWidth(title, 2)) / 2, 14, black, 2);
  for (let i = 0; i <= 10; i++) {
    const v = i / 10;
    cv.line(px(v), top, px(v), bottom, grey);
    cv.line(left, py(v), right, py(v), grey);
  }
  cv.line(px(0), py(0), px(1), py(1), [190, 190, 190]); // chance diagonal
  for (let i = 0; i <= 5; i++) {
    const v = i / 5;
    const label = v.toFixed(1);
    cv.line(px(v), bottom, px(v), bottom + 6, black, 2);
    cv.text(label, px(v) - textWidth(label, 2) / 2, bottom + 12, black, 2);
    cv.line(left - 6, py(v), left, py(v), black, 2);
    cv.text(label, left - 10 - textWidth(label, 2), py(v) - 7, black, 2);
  }
  const xl = 'FALSE POSITIVE RATE';
  cv.text(xl, (left + right - textWidth(xl, 2)) / 2, bottom + 40, black, 2);
  const yl = 'TRUE POSITIVE RATE';
  cv.textUp(yl, 8, (top + bottom + textWidth(yl, 2)) / 2, black, 2);

  curves.forEach((c, k) => {
    const col = COLOURS[k % COLOURS.length];
    // Sort points by FPR (then TPR) so the polyline runs left to right.
    const pts = Array.from({ length: c.fpr.length }, (_, i) => [c.fpr[i], c.tpr[i]]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    for (let i = 1; i < pts.length; i++) cv.line(px(pts[i - 1][0]), py(pts[i - 1][1]), px(pts[i][0]), py(pts[i][1]), col, 3);
    // Legend, bottom right inside the axes.
    const ly = bottom - 20 - (curves.length - 1 - k) * 20;
    const lx = right - 16 - textWidth(c.name, 2) - 30;
    cv.rect(lx, ly + 5, lx + 22, ly + 8, col);
    cv.text(c.name, lx + 30, ly, black, 2);
  });
  cv.rect(left, top, left + 1, bottom, black); // axes drawn last, over the curves' ends
  cv.rect(left, bottom - 1, right, bottom, black);
  cv.rect(right - 1, top, right, bottom, black);
  cv.rect(left, top, right, top + 1, black);
  return { width, height, data: cv.data };
}

/** Writes the ROC plot as a PNG file. */
export async function writeRocPng(path: string, curves: RocCurve[], opts: RocImageOptions = {}): Promise<void> {
  const img = renderRoc(curves, opts);
  try {
    await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 4 } }).png().toFile(path);
  } catch (e) {
    throw new ArcfaceError(`cannot write ROC image: ${(e as Error).message}`, path);
  }
}
