// ROC curves as SVG (real text, log-scale FPR axis, TAR@FAR marks, curves told apart by colour, dash
// pattern and marker), rendered to PNG by sharp (librsvg).
import fs from 'node:fs';
import sharp from 'sharp';
import { ArcfaceError } from '../errors.ts';

export interface RocCurve {
  /** Legend text, e.g. "lfw 0.99500". */
  name: string;
  /** Increasing false-accept rates. */
  fpr: ArrayLike<number>;
  tpr: ArrayLike<number>;
  /** Operating points to mark, e.g. TAR at FAR 1e-3. */
  marks?: { far: number; tar: number }[];
}

export interface RocImageOptions {
  width?: number;
  height?: number;
  title?: string;
  /** Left end of the FPR axis (a power of ten); default: the decade below the smallest non-zero FPR, at least 1e-6. */
  minFpr?: number;
}

// Colour-blind-safe palette (Okabe-Ito) with a dash pattern and a marker each, so curves stay apart in grey too.
const STYLES: { colour: string; dash: string; marker: 'circle' | 'square' | 'triangle' | 'diamond' }[] = [
  { colour: '#0072B2', dash: '', marker: 'circle' },
  { colour: '#D55E00', dash: '8 4', marker: 'square' },
  { colour: '#009E73', dash: '2 3', marker: 'triangle' },
  { colour: '#CC79A7', dash: '10 3 2 3', marker: 'diamond' },
  { colour: '#E69F00', dash: '14 4', marker: 'circle' },
  { colour: '#56B4E9', dash: '4 2', marker: 'square' },
  { colour: '#000000', dash: '1 2', marker: 'triangle' },
];

const escape = (s: string): string => s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
const fmt = (v: number): string => (Math.round(v * 100) / 100).toString();

/** The plot's geometry: FPR on a log axis from `minFpr` to 1, TPR linear 0..1. */
export function rocLayout(width: number, height: number, minFpr: number) {
  const left = 72;
  const right = width - 24;
  const top = 44;
  const bottom = height - 56;
  const lo = Math.log10(minFpr);
  return {
    left,
    right,
    top,
    bottom,
    x: (fpr: number) => left + ((Math.log10(Math.max(fpr, minFpr)) - lo) / -lo) * (right - left),
    y: (tpr: number) => bottom - tpr * (bottom - top),
  };
}

function autoMinFpr(curves: RocCurve[]): number {
  let min = 1;
  for (const c of curves) for (let i = 0; i < c.fpr.length; i++) if (c.fpr[i] > 0) min = Math.min(min, c.fpr[i]);
  return Math.min(1e-1, Math.max(1e-6, 10 ** Math.floor(Math.log10(min))));
}

function marker(kind: string, x: number, y: number, colour: string): string {
  const r = 5;
  const style = `fill="white" stroke="${colour}" stroke-width="2"`;
  if (kind === 'circle') return `<circle cx="${fmt(x)}" cy="${fmt(y)}" r="${r}" ${style}/>`;
  if (kind === 'square') return `<rect x="${fmt(x - r)}" y="${fmt(y - r)}" width="${2 * r}" height="${2 * r}" ${style}/>`;
  if (kind === 'triangle') return `<polygon points="${fmt(x)},${fmt(y - r - 1)} ${fmt(x + r + 1)},${fmt(y + r)} ${fmt(x - r - 1)},${fmt(y + r)}" ${style}/>`;
  return `<polygon points="${fmt(x)},${fmt(y - r - 1)} ${fmt(x + r + 1)},${fmt(y)} ${fmt(x)},${fmt(y + r + 1)} ${fmt(x - r - 1)},${fmt(y)}" ${style}/>`;
}

/** The ROC plot as an SVG document. */
export function rocSvg(curves: RocCurve[], opts: RocImageOptions = {}): string {
  const width = opts.width ?? 640;
  const height = opts.height ?? 560;
  for (const c of curves) {
    if (c.fpr.length !== c.tpr.length) throw new ArcfaceError(`ROC curve "${c.name}": ${c.fpr.length} FPR and ${c.tpr.length} TPR values`);
  }
  const minFpr = opts.minFpr ?? autoMinFpr(curves);
  if (!(minFpr > 0 && minFpr < 1)) throw new ArcfaceError(`ROC plot: the FPR axis must start in (0, 1), got ${minFpr}`);
  const L = rocLayout(width, height, minFpr);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
  ];
  // Grid and ticks: decades on x (minor ticks at 2..9), tenths on y.
  for (let e = Math.round(Math.log10(minFpr)); e <= 0; e++) {
    const x = L.x(10 ** e);
    out.push(`<line x1="${fmt(x)}" y1="${L.top}" x2="${fmt(x)}" y2="${L.bottom}" stroke="#d0d0d0"/>`);
    out.push(`<text x="${fmt(x)}" y="${L.bottom + 18}" font-size="12" text-anchor="middle">${e === 0 ? '1' : `1e${e}`}</text>`);
    if (e < 0) {
      for (let m = 2; m <= 9; m++) {
        const xm = L.x(m * 10 ** e);
        out.push(`<line x1="${fmt(xm)}" y1="${L.bottom}" x2="${fmt(xm)}" y2="${L.bottom + 4}" stroke="black"/>`);
      }
    }
  }
  for (let i = 0; i <= 10; i++) {
    const y = L.y(i / 10);
    out.push(`<line x1="${L.left}" y1="${fmt(y)}" x2="${L.right}" y2="${fmt(y)}" stroke="#e4e4e4"/>`);
    out.push(`<text x="${L.left - 8}" y="${fmt(y + 4)}" font-size="12" text-anchor="end">${(i / 10).toFixed(1)}</text>`);
  }
  out.push(`<rect x="${L.left}" y="${L.top}" width="${L.right - L.left}" height="${L.bottom - L.top}" fill="none" stroke="black"/>`);
  out.push(`<text x="${(L.left + L.right) / 2}" y="${height - 16}" font-size="14" text-anchor="middle">False accept rate (log scale)</text>`);
  out.push(`<text transform="translate(18 ${(L.top + L.bottom) / 2}) rotate(-90)" font-size="14" text-anchor="middle">True accept rate</text>`);
  if (opts.title) out.push(`<text x="${(L.left + L.right) / 2}" y="26" font-size="16" font-weight="bold" text-anchor="middle">${escape(opts.title)}</text>`);

  curves.forEach((c, k) => {
    const s = STYLES[k % STYLES.length]!;
    const pts: string[] = [];
    for (let i = 0; i < c.fpr.length; i++) pts.push(`${fmt(L.x(c.fpr[i]))},${fmt(L.y(c.tpr[i]))}`);
    out.push(`<polyline data-curve="${k}" points="${pts.join(' ')}" fill="none" stroke="${s.colour}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    for (const m of c.marks ?? []) out.push(marker(s.marker, L.x(m.far), L.y(m.tar), s.colour));
  });
  // Legend, bottom right (ROC curves hug the top left).
  const rowH = 20;
  const legendW = Math.min(L.right - L.left - 20, 60 + 7.5 * Math.max(0, ...curves.map((c) => c.name.length)));
  const lx = L.right - legendW - 10;
  const ly = L.bottom - 10 - rowH * curves.length;
  if (curves.length) out.push(`<rect x="${fmt(lx)}" y="${fmt(ly - 6)}" width="${fmt(legendW)}" height="${rowH * curves.length + 8}" fill="white" fill-opacity="0.9" stroke="#909090"/>`);
  curves.forEach((c, k) => {
    const s = STYLES[k % STYLES.length]!;
    const y = ly + rowH * k + 8;
    out.push(`<line x1="${fmt(lx + 8)}" y1="${fmt(y)}" x2="${fmt(lx + 44)}" y2="${fmt(y)}" stroke="${s.colour}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    out.push(marker(s.marker, lx + 26, y, s.colour));
    out.push(`<text x="${fmt(lx + 52)}" y="${fmt(y + 4)}" font-size="13">${escape(c.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

/** Renders the plot to PNG bytes. */
export async function renderRocPng(curves: RocCurve[], opts: RocImageOptions = {}): Promise<Uint8Array> {
  const buf = await sharp(Buffer.from(rocSvg(curves, opts))).png().toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
}

/** Writes the plot as PNG, or as SVG when the path ends in `.svg`. */
export async function writeRocImage(file: string, curves: RocCurve[], opts: RocImageOptions = {}): Promise<void> {
  const bytes = file.toLowerCase().endsWith('.svg') ? Buffer.from(rocSvg(curves, opts)) : await renderRocPng(curves, opts);
  try {
    fs.writeFileSync(file, bytes);
  } catch (e) {
    throw new ArcfaceError(`cannot write the ROC image (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, file);
  }
}
