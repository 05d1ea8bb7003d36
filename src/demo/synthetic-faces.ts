// Procedural face-like identities for `arcface demo`. Each identity is a set of latent parameters (face
// and jaw shape, skin tone, eye/brow/nose/mouth geometry, hair, glasses, facial hair, moles); each image
// of it adds nuisances (pose, expression, lighting, colour cast, background clutter, occluder, blur,
// noise) that are deliberately larger in pixel space than the differences between identities, so only
// a trained network tells people apart. Everything is a pure function of (seed, identity, image):
// any image can be rendered alone, in any order.
//
// Drawing is plain JS into a float RGB canvas with analytic anti-aliasing (coverage = clamp(0.5 - signed
// distance in pixels)), each shape touching only its bounding box: ~0.3 ms per 64x64 image.
import { Rng } from '../data/random.ts';

export type Rgb = [number, number, number];

/** What makes a person: fixed across all of their images. Lengths are fractions of the image side. */
export interface FaceIdentity {
  skin: Rgb;
  faceRx: number;
  faceRy: number;
  /** Jaw ellipse: width relative to the face, how far below the face centre it sits. */
  jawWidth: number;
  jawDrop: number;
  earSize: number;
  earY: number;
  hair: Rgb;
  /** 0 none (bald), otherwise the back-hair ellipse scale. */
  hairVolume: number;
  /** How far the back hair reaches below the face centre (long hair). */
  hairLength: number;
  /** Hairline height above the face centre and its tilt (a side parting). */
  hairline: number;
  hairTilt: number;
  eyeY: number;
  eyeDx: number;
  eyeRx: number;
  eyeRy: number;
  eyeTilt: number;
  iris: Rgb;
  irisSize: number;
  browGap: number;
  browLength: number;
  browThick: number;
  browTilt: number;
  browArch: number;
  noseLength: number;
  noseWidth: number;
  noseTip: number;
  mouthY: number;
  mouthWidth: number;
  lipThick: number;
  lips: Rgb;
  smile: number;
  beard: number;
  moustache: number;
  glasses: { frame: Rgb; radius: number; thick: number } | null;
  /** Moles in face coordinates (x, y, radius). */
  moles: [number, number, number][];
}

/** What changes from photo to photo of the same person. */
export interface FaceNuisance {
  /** In-plane rotation (radians), scale, shift (fractions of the image), out-of-plane yaw and pitch (-1..1). */
  roll: number;
  scale: number;
  dx: number;
  dy: number;
  yaw: number;
  pitch: number;
  smileDelta: number;
  mouthOpen: number;
  eyeOpen: number;
  gazeX: number;
  gazeY: number;
  background: Rgb;
  backgroundFar: Rgb;
  backgroundAngle: number;
  clutter: { kind: 0 | 1 | 2; x: number; y: number; a: number; b: number; angle: number; colour: Rgb; alpha: number }[];
  /** Face shading: light direction (image plane) and ambient share. */
  lightX: number;
  lightY: number;
  ambient: number;
  /** Whole-image illumination ramp: direction and depth. */
  rampAngle: number;
  ramp: number;
  gain: number;
  cast: Rgb;
  gamma: number;
  contrast: number;
  grey: boolean;
  occluder: { kind: 0 | 1 | 2; x: number; y: number; a: number; b: number; angle: number; colour: Rgb } | null;
  /** 3-tap blur weight (0 = sharp, 0.25 = strong), applied twice. */
  blur: number;
  noise: number;
  noiseSeed: number;
}

const TONE_STEPS = 256;
const TONE_MAX = 3;

const clamp01 = (x: number): number => (x < 0 ? 0 : x > 1 ? 1 : x);
const lerp = (a: number, b: number, t: number): number => a + (b - a) * t;
const mix = (a: Rgb, b: Rgb, t: number): Rgb => [lerp(a[0], b[0], t), lerp(a[1], b[1], t), lerp(a[2], b[2], t)];

const SKIN: Rgb[] = [
  [0.97, 0.84, 0.74],
  [0.9, 0.7, 0.56],
  [0.76, 0.55, 0.4],
  [0.55, 0.37, 0.25],
  [0.36, 0.24, 0.17],
];
const HAIR: Rgb[] = [
  [0.07, 0.06, 0.05],
  [0.3, 0.19, 0.1],
  [0.55, 0.38, 0.2],
  [0.88, 0.74, 0.45],
  [0.62, 0.24, 0.1],
  [0.7, 0.7, 0.7],
];
const IRIS: Rgb[] = [
  [0.3, 0.18, 0.08],
  [0.2, 0.4, 0.75],
  [0.3, 0.55, 0.3],
  [0.12, 0.1, 0.1],
];

function uniform(rng: Rng, a: number, b: number): number {
  return a + (b - a) * rng.nextFloat();
}

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.nextInt(xs.length)];
}

function jitter(rng: Rng, c: Rgb, s: number): Rgb {
  return [clamp01(c[0] + rng.nextNormal(0, s)), clamp01(c[1] + rng.nextNormal(0, s)), clamp01(c[2] + rng.nextNormal(0, s))];
}

function randomColour(rng: Rng): Rgb {
  return [rng.nextFloat(), rng.nextFloat(), rng.nextFloat()];
}

/** Draws one identity's latent parameters. */
export function sampleIdentity(rng: Rng): FaceIdentity {
  const tone = rng.nextFloat() * (SKIN.length - 1);
  const t0 = Math.floor(tone);
  const skin = jitter(rng, mix(SKIN[t0], SKIN[Math.min(t0 + 1, SKIN.length - 1)], tone - t0), 0.03);
  const hair = jitter(rng, pick(rng, HAIR), 0.05);
  const bald = rng.nextFloat() < 0.08;
  const long = rng.nextFloat() < 0.35;
  const faceRx = uniform(rng, 0.26, 0.33);
  const glasses = rng.nextFloat() < 0.25 ? { frame: jitter(rng, pick(rng, [[0.05, 0.05, 0.05], [0.5, 0.3, 0.1], [0.7, 0.7, 0.75]] as Rgb[]), 0.05), radius: uniform(rng, 0.05, 0.075), thick: uniform(rng, 0.008, 0.016) } : null;
  const moles: [number, number, number][] = [];
  for (let i = rng.nextInt(4); i > 0; i--) moles.push([uniform(rng, -0.17, 0.17), uniform(rng, -0.1, 0.2), uniform(rng, 0.008, 0.016)]);
  return {
    skin,
    faceRx,
    faceRy: uniform(rng, 0.33, 0.4),
    jawWidth: uniform(rng, 0.6, 0.95),
    jawDrop: uniform(rng, 0.1, 0.2),
    earSize: uniform(rng, 0.035, 0.07),
    earY: uniform(rng, -0.04, 0.05),
    hair,
    hairVolume: bald ? 0 : uniform(rng, 1.02, 1.2),
    hairLength: long ? uniform(rng, 0.15, 0.45) : 0,
    hairline: bald ? 0 : uniform(rng, 0.12, 0.24),
    hairTilt: rng.nextNormal(0, 0.25),
    eyeY: uniform(rng, -0.08, 0.0),
    eyeDx: uniform(rng, 0.09, 0.14),
    eyeRx: uniform(rng, 0.036, 0.06),
    eyeRy: uniform(rng, 0.016, 0.032),
    eyeTilt: rng.nextNormal(0, 0.15),
    iris: jitter(rng, pick(rng, IRIS), 0.04),
    irisSize: uniform(rng, 0.45, 0.8),
    browGap: uniform(rng, 0.03, 0.065),
    browLength: uniform(rng, 0.05, 0.09),
    browThick: uniform(rng, 0.006, 0.018),
    browTilt: rng.nextNormal(0, 0.2),
    browArch: uniform(rng, -0.01, 0.025),
    noseLength: uniform(rng, 0.07, 0.14),
    noseWidth: uniform(rng, 0.012, 0.03),
    noseTip: uniform(rng, 0.015, 0.032),
    mouthY: uniform(rng, 0.13, 0.2),
    mouthWidth: uniform(rng, 0.055, 0.11),
    lipThick: uniform(rng, 0.008, 0.02),
    lips: mix(skin, [0.75, 0.25, 0.3], uniform(rng, 0.25, 0.6)),
    smile: uniform(rng, -0.3, 0.7),
    beard: rng.nextFloat() < 0.2 ? uniform(rng, 0.5, 0.95) : 0,
    moustache: rng.nextFloat() < 0.2 ? uniform(rng, 0.6, 1) : 0,
    glasses,
    moles,
  };
}

/** How strong the per-image variation is (1 = the demo's default). */
export interface NuisanceStrength {
  pose?: number;
  light?: number;
  clutter?: number;
  noise?: number;
}

/** Draws one image's nuisances. */
export function sampleNuisance(rng: Rng, strength: NuisanceStrength = {}): FaceNuisance {
  const p = strength.pose ?? 1;
  const l = strength.light ?? 1;
  const c = strength.clutter ?? 1;
  const n = strength.noise ?? 1;
  const clutter: FaceNuisance['clutter'] = [];
  const nClutter = Math.round(c * (2 + rng.nextInt(7)));
  for (let i = 0; i < nClutter; i++) {
    clutter.push({
      kind: rng.nextInt(3) as 0 | 1 | 2,
      x: rng.nextFloat(),
      y: rng.nextFloat(),
      a: uniform(rng, 0.03, 0.3),
      b: uniform(rng, 0.02, 0.2),
      angle: uniform(rng, 0, Math.PI),
      colour: randomColour(rng),
      alpha: uniform(rng, 0.5, 1),
    });
  }
  const occluded = rng.nextFloat() < 0.15 * c;
  const la = uniform(rng, 0, 2 * Math.PI);
  return {
    roll: rng.nextNormal(0, 0.12 * p),
    scale: Math.exp(rng.nextNormal(0, 0.07 * p)),
    dx: rng.nextNormal(0, 0.04 * p),
    dy: rng.nextNormal(0, 0.04 * p),
    yaw: Math.max(-1, Math.min(1, rng.nextNormal(0, 0.35 * p))),
    pitch: Math.max(-1, Math.min(1, rng.nextNormal(0, 0.3 * p))),
    smileDelta: rng.nextNormal(0, 0.25),
    mouthOpen: rng.nextFloat() < 0.3 ? rng.nextFloat() : 0,
    eyeOpen: rng.nextFloat() < 0.06 ? 0.15 : uniform(rng, 0.7, 1.15),
    gazeX: rng.nextNormal(0, 0.25),
    gazeY: rng.nextNormal(0, 0.15),
    background: randomColour(rng),
    backgroundFar: randomColour(rng),
    backgroundAngle: uniform(rng, 0, 2 * Math.PI),
    clutter,
    lightX: Math.cos(la),
    lightY: Math.sin(la),
    ambient: uniform(rng, 1 - 0.7 * l, 1 - 0.1 * l),
    rampAngle: uniform(rng, 0, 2 * Math.PI),
    ramp: uniform(rng, 0, 0.6 * l),
    gain: Math.exp(rng.nextNormal(0, 0.2 * l)),
    cast: [Math.exp(rng.nextNormal(0, 0.12 * l)), Math.exp(rng.nextNormal(0, 0.12 * l)), Math.exp(rng.nextNormal(0, 0.12 * l))],
    gamma: Math.exp(rng.nextNormal(0, 0.2 * l)),
    contrast: uniform(rng, 1 - 0.35 * l, 1 + 0.15 * l),
    grey: rng.nextFloat() < 0.1 * l,
    occluder: occluded
      ? {
          kind: rng.nextInt(3) as 0 | 1 | 2,
          x: uniform(rng, 0.2, 0.8),
          y: uniform(rng, 0.3, 0.9),
          a: uniform(rng, 0.08, 0.22),
          b: uniform(rng, 0.05, 0.15),
          angle: uniform(rng, 0, Math.PI),
          colour: randomColour(rng),
        }
      : null,
    blur: rng.nextFloat() < 0.5 * n ? uniform(rng, 0.05, 0.25) : 0,
    noise: uniform(rng, 0.005, 0.06 * n),
    noiseSeed: rng.nextUint32(),
  };
}

// Float buffers reused across images of one size (rendering is synchronous, so one set per thread is enough).
const buffers = new Map<number, [Float32Array, Float32Array]>();
function scratch(size: number, which: 0 | 1): Float32Array {
  let b = buffers.get(size);
  if (!b) {
    b = [new Float32Array(size * size * 3), new Float32Array(size * size * 3)];
    buffers.set(size, b);
  }
  return b[which];
}

/**
 * The plainest photo: frontal, evenly lit, grey background, no clutter, occluder, blur or noise. Useful
 * to look at an identity, and to measure identity differences apart from the nuisances.
 */
export function neutralNuisance(): FaceNuisance {
  return {
    roll: 0, scale: 1, dx: 0, dy: 0, yaw: 0, pitch: 0,
    smileDelta: 0, mouthOpen: 0, eyeOpen: 1, gazeX: 0, gazeY: 0,
    background: [0.5, 0.5, 0.5], backgroundFar: [0.5, 0.5, 0.5], backgroundAngle: 0, clutter: [],
    lightX: 0, lightY: -1, ambient: 0.8, rampAngle: 0, ramp: 0, gain: 1, cast: [1, 1, 1], gamma: 1, contrast: 1, grey: false,
    occluder: null, blur: 0, noise: 0, noiseSeed: 0,
  };
}

/** A float RGB canvas (values nominally 0..1) with anti-aliased shapes in pixel coordinates. */
class Canvas {
  readonly px: Float32Array;
  constructor(readonly size: number) {
    this.px = scratch(size, 0);
  }

  /** Visits pixels within the box, passing each pixel centre to `cover` (0..1) and blending `colour`. */
  private paint(x0: number, y0: number, x1: number, y1: number, colour: Rgb, alpha: number, cover: (x: number, y: number) => number, shade?: (x: number, y: number) => number): void {
    const s = this.size;
    const xa = Math.max(0, Math.floor(x0));
    const xb = Math.min(s - 1, Math.ceil(x1));
    const ya = Math.max(0, Math.floor(y0));
    const yb = Math.min(s - 1, Math.ceil(y1));
    const px = this.px;
    const [r, g, b] = colour;
    for (let y = ya; y <= yb; y++) {
      const cy = y + 0.5;
      for (let x = xa; x <= xb; x++) {
        const cx = x + 0.5;
        const c = cover(cx, cy);
        if (c <= 0) continue;
        const a = alpha * c;
        const k = shade ? shade(cx, cy) : 1;
        const i = (y * s + x) * 3;
        px[i] += (r * k - px[i]) * a;
        px[i + 1] += (g * k - px[i + 1]) * a;
        px[i + 2] += (b * k - px[i + 2]) * a;
      }
    }
  }

  /** Rotated ellipse; `clip` keeps the side where nx*x + ny*y <= c (pixel units, unit normal). */
  ellipse(cx: number, cy: number, rx: number, ry: number, angle: number, colour: Rgb, alpha = 1, clip?: [number, number, number], shade?: (x: number, y: number) => number): void {
    if (rx <= 0 || ry <= 0 || alpha <= 0) return;
    const co = Math.cos(angle);
    const si = Math.sin(angle);
    const ia2 = 1 / (rx * rx);
    const ib2 = 1 / (ry * ry);
    // The pixel distance is (f - 1) / |grad f| with |grad f| in [1/max r, 1/min r]: beyond these
    // bounds on q = f^2 a pixel is surely fully inside or outside, with no square root.
    const m = 0.5 / Math.min(rx, ry);
    const qIn = m < 1 ? (1 - m) * (1 - m) : -1;
    const qOut = (1 + m) * (1 + m);
    // Bounding box of the rotated ellipse.
    const ex = Math.sqrt(rx * rx * co * co + ry * ry * si * si) + 1;
    const ey = Math.sqrt(rx * rx * si * si + ry * ry * co * co) + 1;
    // Inlined rather than through paint(): ellipses cover most of the painted pixels.
    const S = this.size;
    const px = this.px;
    const [cr, cg, cb] = colour;
    const xa = Math.max(0, Math.floor(cx - ex));
    const xb = Math.min(S - 1, Math.ceil(cx + ex));
    const ya = Math.max(0, Math.floor(cy - ey));
    const yb = Math.min(S - 1, Math.ceil(cy + ey));
    for (let y = ya; y <= yb; y++) {
      const dy = y + 0.5 - cy;
      for (let x = xa; x <= xb; x++) {
        const dx = x + 0.5 - cx;
        const u = dx * co + dy * si;
        const v = dy * co - dx * si;
        const q = u * u * ia2 + v * v * ib2;
        if (q >= qOut) continue;
        let cov = 1;
        if (q > qIn) {
          const f = Math.sqrt(q);
          const g = Math.sqrt(u * u * ia2 * ia2 + v * v * ib2 * ib2) / f;
          cov = 0.5 - (f - 1) / g;
          if (cov <= 0) continue;
          if (cov > 1) cov = 1;
        }
        if (clip) {
          const d = clip[0] * (x + 0.5) + clip[1] * (y + 0.5) - clip[2];
          if (d >= 0.5) continue;
          if (d > -0.5) cov *= 0.5 - d;
        }
        const a = alpha * cov;
        const k = shade ? shade(x + 0.5, y + 0.5) : 1;
        const i = (y * S + x) * 3;
        px[i] += (cr * k - px[i]) * a;
        px[i + 1] += (cg * k - px[i + 1]) * a;
        px[i + 2] += (cb * k - px[i + 2]) * a;
      }
    }
  }

  /** Ring between two concentric ellipses (glasses rims). */
  ring(cx: number, cy: number, r: number, thick: number, colour: Rgb, alpha = 1): void {
    const ext = r + thick + 1;
    this.paint(cx - ext, cy - ext, cx + ext, cy + ext, colour, alpha, (x, y) => {
      const d = Math.abs(Math.sqrt((x - cx) * (x - cx) + (y - cy) * (y - cy)) - r) - thick / 2;
      return d <= -0.5 ? 1 : d >= 0.5 ? 0 : 0.5 - d;
    });
  }

  /** Line segment with round caps and half-width `r`. */
  capsule(x0: number, y0: number, x1: number, y1: number, r: number, colour: Rgb, alpha = 1): void {
    if (alpha <= 0) return;
    const ex = x1 - x0;
    const ey = y1 - y0;
    const l2 = ex * ex + ey * ey || 1e-12;
    const rr = Math.max(r, 0.35); // thinner lines only fade, as a camera would render them
    const fade = r < 0.35 ? r / 0.35 : 1;
    const out2 = (rr + 0.5) * (rr + 0.5);
    const in2 = rr > 0.5 ? (rr - 0.5) * (rr - 0.5) : -1;
    this.paint(Math.min(x0, x1) - rr - 1, Math.min(y0, y1) - rr - 1, Math.max(x0, x1) + rr + 1, Math.max(y0, y1) + rr + 1, colour, alpha * fade, (x, y) => {
      let t = ((x - x0) * ex + (y - y0) * ey) / l2;
      t = t < 0 ? 0 : t > 1 ? 1 : t;
      const ux = x - x0 - t * ex;
      const uy = y - y0 - t * ey;
      const d2 = ux * ux + uy * uy;
      if (d2 >= out2) return 0;
      if (d2 <= in2) return 1;
      return 0.5 - (Math.sqrt(d2) - rr);
    });
  }

  /** Rotated rectangle. */
  rect(cx: number, cy: number, a: number, b: number, angle: number, colour: Rgb, alpha = 1): void {
    const co = Math.cos(angle);
    const si = Math.sin(angle);
    const ext = Math.hypot(a, b) + 1;
    this.paint(cx - ext, cy - ext, cx + ext, cy + ext, colour, alpha, (x, y) => {
      const dx = x - cx;
      const dy = y - cy;
      const d = Math.max(Math.abs(dx * co + dy * si) - a, Math.abs(-dx * si + dy * co) - b);
      return d <= -0.5 ? 1 : d >= 0.5 ? 0 : 0.5 - d;
    });
  }
}

/** Renders one image (RGB, row-major, `size` x `size` x 3). */
export function renderFace(id: FaceIdentity, nz: FaceNuisance, size = 64, out?: Uint8Array): Uint8Array {
  const S = size;
  const cv = new Canvas(S);
  const px = cv.px;

  // Background: a two-colour linear gradient plus clutter shapes.
  {
    const ca = Math.cos(nz.backgroundAngle);
    const sa = Math.sin(nz.backgroundAngle);
    const [r0, g0, b0] = nz.background;
    const [r1, g1, b1] = nz.backgroundFar;
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S; x++) {
        const t = clamp01(0.5 + (((x + 0.5) / S - 0.5) * ca + ((y + 0.5) / S - 0.5) * sa));
        const i = (y * S + x) * 3;
        px[i] = r0 + (r1 - r0) * t;
        px[i + 1] = g0 + (g1 - g0) * t;
        px[i + 2] = b0 + (b1 - b0) * t;
      }
    }
    for (const c of nz.clutter) drawShape(cv, c.kind, c.x * S, c.y * S, c.a * S, c.b * S, c.angle, c.colour, c.alpha);
  }

  // Pose: face coordinates (fractions of the image, origin at the face centre) -> pixels. Yaw moves the
  // inner features sideways by their depth and compresses them; pitch moves them up or down.
  const sc = nz.scale * S;
  const co = Math.cos(nz.roll);
  const si = Math.sin(nz.roll);
  const ox = (0.5 + nz.dx) * S;
  const oy = (0.53 + nz.dy) * S;
  const squeeze = 1 - 0.18 * Math.abs(nz.yaw);
  const P = (fx: number, fy: number, depth = 0): [number, number] => {
    const x = depth > 0 ? fx * squeeze + nz.yaw * depth : fx;
    const y = depth > 0 ? fy + nz.pitch * depth * 0.6 : fy;
    return [ox + sc * (x * co - y * si), oy + sc * (x * si + y * co)];
  };
  const L = (len: number): number => len * sc;
  const A = (a: number): number => a + nz.roll;

  // Face shading: a sphere-like normal from the head ellipse, lit from (lightX, lightY, 0.6).
  const [hx, hy] = P(0, 0);
  const hrx = L(id.faceRx) * 1.15;
  const hry = L(id.faceRy) * 1.15;
  const lz = 0.6;
  const ln = Math.hypot(nz.lightX, nz.lightY, lz);
  const lx = nz.lightX / ln;
  const ly = nz.lightY / ln;
  const lzn = lz / ln;
  const amb = nz.ambient;
  const shade = (x: number, y: number): number => {
    let u = (x - hx) / hrx;
    let v = (y - hy) / hry;
    const q = u * u + v * v;
    if (q > 1) {
      const f = 1 / Math.sqrt(q);
      u *= f;
      v *= f;
    }
    const w = Math.sqrt(Math.max(0, 1 - u * u - v * v));
    const d = u * lx + v * ly + w * lzn;
    return amb + (1 - amb) * 1.25 * (d > 0 ? d : 0);
  };
  const dark = (c: Rgb, k: number): Rgb => [c[0] * k, c[1] * k, c[2] * k];

  // Back hair (long hair reaches below the jaw).
  if (id.hairVolume > 0) {
    const [bx, by] = P(0, -0.03 + id.hairLength / 2);
    cv.ellipse(bx, by, L(id.faceRx * id.hairVolume), L(id.faceRy * id.hairVolume * 0.95 + id.hairLength / 2), A(0), id.hair, 1, undefined, shade);
  }
  // Ears, face, jaw.
  for (const side of [-1, 1]) {
    const [ex, ey] = P(side * id.faceRx * 0.98, id.earY, side * nz.yaw < 0 ? 0.02 : 0);
    cv.ellipse(ex, ey, L(id.earSize * 0.6 * (1 - 0.5 * Math.max(0, side * nz.yaw))), L(id.earSize), A(0), dark(id.skin, 0.92), 1, undefined, shade);
  }
  {
    const [fx, fy] = P(0, 0);
    cv.ellipse(fx, fy, L(id.faceRx), L(id.faceRy), A(0), id.skin, 1, undefined, shade);
    const [jx, jy] = P(0, id.jawDrop);
    cv.ellipse(jx, jy, L(id.faceRx * id.jawWidth), L(id.faceRy * 0.72), A(0), id.skin, 1, undefined, shade);
  }
  // Front hair: the top of the head above a (tilted) hairline.
  if (id.hairVolume > 0) {
    const [tx, ty] = P(0, -0.02);
    const [lx0, ly0] = P(0, -id.hairline);
    const nx = Math.sin(A(id.hairTilt)) * -1;
    const ny = Math.cos(A(id.hairTilt));
    // Keep the side of the hairline away from the face: n . p <= n . p0 with n pointing down the face.
    cv.ellipse(tx, ty, L(id.faceRx * 1.06), L(id.faceRy * 1.05), A(0), id.hair, 1, [nx, ny, nx * lx0 + ny * ly0], shade);
  }

  // Eyes (sclera, iris with gaze, pupil, lid closure) and brows.
  const open = nz.eyeOpen;
  for (const side of [-1, 1]) {
    const [ex, ey] = P(side * id.eyeDx, id.eyeY, 0.05);
    const rx = L(id.eyeRx) * (1 - 0.25 * Math.max(0, side * nz.yaw));
    const ry = L(id.eyeRy) * open;
    const tilt = A(side * id.eyeTilt);
    cv.ellipse(ex, ey, rx + 0.6, ry + 0.6, tilt, dark(id.skin, 0.6), 1);
    cv.ellipse(ex, ey, rx, ry, tilt, [0.95, 0.95, 0.93]);
    const ir = Math.min(L(id.eyeRy) * id.irisSize * 1.4, rx * 0.7);
    const gx = ex + nz.gazeX * rx * 0.4;
    const gy = ey + nz.gazeY * ry * 0.3;
    const eyeClip = (r: number): [number, number, number] => [0, 1, ey + ry * r]; // lids hide the iris
    cv.ellipse(gx, gy, ir, ir, 0, id.iris, 1, eyeClip(0.9));
    cv.ellipse(gx, gy, ir * 0.45, ir * 0.45, 0, [0.03, 0.03, 0.03], 1, eyeClip(0.9));
    const by = id.eyeY - id.eyeRy - id.browGap;
    const inner = id.eyeDx - id.browLength * 0.45;
    const outer = id.eyeDx + id.browLength * 0.55;
    const [ax, ay] = P(side * inner, by + id.browTilt * id.browLength * 0.5, 0.05);
    const [mx, my] = P(side * (inner + outer) / 2, by - id.browArch, 0.05);
    const [bx, by2] = P(side * outer, by - id.browTilt * id.browLength * 0.5, 0.05);
    const browColour = dark(id.hair, 0.8);
    cv.capsule(ax, ay, mx, my, L(id.browThick), browColour, 0.95);
    cv.capsule(mx, my, bx, by2, L(id.browThick * 0.8), browColour, 0.95);
  }
  // Nose: a bridge shadow, the tip and nostrils; it sticks out, so yaw moves it most.
  {
    const [ax, ay] = P(0, id.eyeY + 0.01, 0.07);
    const [tx, ty] = P(0, id.eyeY + id.noseLength, 0.1);
    const side = nz.lightX > 0 ? -1 : 1;
    cv.capsule(ax + side * L(id.noseWidth) * 0.6, ay, tx + side * L(id.noseWidth), ty, L(id.noseWidth * 0.35), dark(id.skin, 0.75), 0.6);
    cv.ellipse(tx, ty, L(id.noseTip * 1.1), L(id.noseTip * 0.8), A(0), dark(id.skin, 1.02), 1, undefined, shade);
    for (const s of [-1, 1]) {
      const [nx, ny] = P(s * id.noseTip * 0.7, id.eyeY + id.noseLength + id.noseTip * 0.5, 0.09);
      cv.ellipse(nx, ny, L(id.noseTip * 0.35), L(id.noseTip * 0.2), A(0), dark(id.skin, 0.45), 0.9);
    }
  }
  // Mouth: upper and lower lip as arcs whose curvature is the smile; an open mouth shows dark between.
  {
    const smile = id.smile + nz.smileDelta;
    const w = id.mouthWidth;
    const gap = nz.mouthOpen * 0.025;
    const seg = 6;
    const lip = (dy: number, thick: number, alpha: number, colour: Rgb): void => {
      let prev: [number, number] | null = null;
      for (let k = 0; k <= seg; k++) {
        const t = (k / seg) * 2 - 1;
        const p = P(t * w, id.mouthY + dy - smile * 0.025 * (1 - t * t), 0.06);
        if (prev) cv.capsule(prev[0], prev[1], p[0], p[1], L(thick), colour, alpha);
        prev = p;
      }
    };
    if (gap > 0) {
      const [mx, my] = P(0, id.mouthY + gap / 2 - smile * 0.02, 0.06);
      cv.ellipse(mx, my, L(w * 0.8), L(gap * 0.6 + 0.004), A(0), [0.15, 0.05, 0.05]);
    }
    lip(-id.lipThick * 0.4, id.lipThick * 0.5, 1, id.lips);
    lip(gap + id.lipThick * 0.5, id.lipThick * 0.6, 1, id.lips);
  }
  // Facial hair, moles, glasses.
  if (id.beard > 0) {
    const [jx, jy] = P(0, id.jawDrop, 0.02);
    const [cx, cy] = P(0, id.mouthY - 0.03, 0.04);
    const nx = Math.sin(A(0));
    const ny = -Math.cos(A(0));
    cv.ellipse(jx, jy, L(id.faceRx * id.jawWidth * 1.02), L(id.faceRy * 0.74), A(0), dark(id.hair, 0.9), id.beard, [nx, ny, nx * cx + ny * cy]);
    beardShadow(cv, P, L, id, 0.35);
  }
  if (id.moustache > 0) {
    const [ax, ay] = P(-id.mouthWidth * 0.9, id.mouthY - 0.02, 0.06);
    const [mx, my] = P(0, id.mouthY - 0.032, 0.07);
    const [bx, by] = P(id.mouthWidth * 0.9, id.mouthY - 0.02, 0.06);
    cv.capsule(ax, ay, mx, my, L(0.011), dark(id.hair, 0.85), id.moustache);
    cv.capsule(mx, my, bx, by, L(0.011), dark(id.hair, 0.85), id.moustache);
  }
  for (const [mx0, my0, r] of id.moles) {
    const [mx, my] = P(mx0, my0, 0.04);
    cv.ellipse(mx, my, L(r), L(r), 0, dark(id.skin, 0.35), 0.9);
  }
  if (id.glasses) {
    const g = id.glasses;
    const c: [number, number][] = [];
    for (const side of [-1, 1]) {
      const [gx, gy] = P(side * id.eyeDx, id.eyeY + 0.005, 0.055);
      cv.ring(gx, gy, L(g.radius), Math.max(0.8, L(g.thick)), g.frame);
      c.push([gx, gy]);
    }
    const r = L(g.radius);
    const dir = [c[1][0] - c[0][0], c[1][1] - c[0][1]];
    const dl = Math.hypot(dir[0], dir[1]) || 1;
    cv.capsule(c[0][0] + (dir[0] / dl) * r, c[0][1] + (dir[1] / dl) * r, c[1][0] - (dir[0] / dl) * r, c[1][1] - (dir[1] / dl) * r, Math.max(0.4, L(g.thick) / 2), g.frame);
  }
  if (nz.occluder) {
    const o = nz.occluder;
    drawShape(cv, o.kind, o.x * S, o.y * S, o.a * S, o.b * S, o.angle, o.colour, 1);
  }

  // Camera: blur (two passes of a 3-tap kernel per axis), lighting ramp, gain, cast, contrast, gamma,
  // optional greyscale, then noise and quantisation.
  if (nz.blur > 0) blur3(px, scratch(S, 1), S, nz.blur);
  const rc = Math.cos(nz.rampAngle);
  const rs = Math.sin(nz.rampAngle);
  const ramp = nz.ramp;
  const c0 = nz.gain * nz.cast[0];
  const c1 = nz.gain * nz.cast[1];
  const c2 = nz.gain * nz.cast[2];
  const ct = nz.contrast;
  const gamma = nz.gamma;
  // Contrast and gamma through a table over [0, TONE_MAX) instead of a pow per channel.
  const tone = new Float32Array(TONE_STEPS + 1);
  for (let t = 0; t <= TONE_STEPS; t++) {
    const v = 0.5 + ((t / TONE_STEPS) * TONE_MAX - 0.5) * ct;
    tone[t] = v <= 0 ? 0 : Math.pow(v, gamma);
  }
  const toneScale = TONE_STEPS / TONE_MAX;
  const rng = new Rng(nz.noiseSeed);
  const kShared = (nz.noise * 2 * 0.6) / 255;
  const kOwn = (nz.noise * 2 * 0.8) / 255;
  const img = out ?? new Uint8Array(S * S * 3);
  if (img.length !== S * S * 3) throw new RangeError(`output buffer has ${img.length} bytes, expected ${S * S * 3}`);
  const toByte = (v: number, n: number): number => {
    const f = v <= 0 ? 0 : v >= TONE_MAX ? TONE_STEPS - 1e-6 : v * toneScale;
    const t = f | 0;
    const w = tone[t] + (tone[t + 1] - tone[t]) * (f - t) + n;
    return w <= 0 ? 0 : w >= 1 ? 255 : (w * 255 + 0.5) | 0;
  };
  for (let y = 0; y < S; y++) {
    const rowLit = 1 + ramp * ((y + 0.5) / S - 0.5) * rs;
    for (let x = 0; x < S; x++) {
      const lit = rowLit + ramp * ((x + 0.5) / S - 0.5) * rc;
      const i = (y * S + x) * 3;
      let r = px[i] * lit * c0;
      let gg = px[i + 1] * lit * c1;
      let b = px[i + 2] * lit * c2;
      if (nz.grey) r = gg = b = 0.3 * r + 0.59 * gg + 0.11 * b;
      // One 32-bit draw: a triangular sample shared by the channels (sensor noise) plus two per-channel parts.
      const u = rng.nextUint32();
      const shared = ((u & 0xff) + ((u >>> 8) & 0xff) - 255) * kShared;
      const n0 = (((u >>> 16) & 0xff) - 127.5) * kOwn;
      const n1 = ((u >>> 24) - 127.5) * kOwn;
      img[i] = toByte(r, shared + n0);
      img[i + 1] = toByte(gg, shared + n1);
      img[i + 2] = toByte(b, shared + n0 - n1);
    }
  }
  return img;
}

/** The beard's shading on the upper lip line: a thin darker band under the nose. */
function beardShadow(cv: Canvas, P: (fx: number, fy: number, depth?: number) => [number, number], L: (l: number) => number, id: FaceIdentity, alpha: number): void {
  const [ax, ay] = P(-id.mouthWidth * 1.1, id.mouthY - 0.015, 0.06);
  const [bx, by] = P(id.mouthWidth * 1.1, id.mouthY - 0.015, 0.06);
  cv.capsule(ax, ay, bx, by, L(0.012), [id.hair[0] * 0.9, id.hair[1] * 0.9, id.hair[2] * 0.9], alpha * id.beard);
}

function drawShape(cv: Canvas, kind: 0 | 1 | 2, x: number, y: number, a: number, b: number, angle: number, colour: Rgb, alpha: number): void {
  if (kind === 0) cv.ellipse(x, y, a, b, angle, colour, alpha);
  else if (kind === 1) cv.rect(x, y, a * 0.7, b * 0.7, angle, colour, alpha);
  else cv.capsule(x - a * Math.cos(angle), y - a * Math.sin(angle), x + a * Math.cos(angle), y + a * Math.sin(angle), b * 0.25, colour, alpha);
}

/** Separable [w, 1-2w, w] blur, applied twice per axis, edges clamped. `tmp` is scratch of the same length. */
function blur3(px: Float32Array, tmp: Float32Array, S: number, w: number): void {
  const c = 1 - 2 * w;
  const row = S * 3;
  const n = row * S;
  for (let pass = 0; pass < 2; pass++) {
    // Along x: neighbours are 3 floats away; the first and last pixel of a row repeat themselves.
    for (let r0 = 0; r0 < n; r0 += row) {
      const r1 = r0 + row;
      for (let j = r0; j < r0 + 3; j++) tmp[j] = c * px[j] + w * (px[j] + px[j + 3]);
      for (let j = r0 + 3; j < r1 - 3; j++) tmp[j] = c * px[j] + w * (px[j - 3] + px[j + 3]);
      for (let j = r1 - 3; j < r1; j++) tmp[j] = c * px[j] + w * (px[j - 3] + px[j]);
    }
    // Along y: neighbours are a row away.
    for (let j = 0; j < row; j++) px[j] = c * tmp[j] + w * (tmp[j] + tmp[j + row]);
    for (let j = row; j < n - row; j++) px[j] = c * tmp[j] + w * (tmp[j - row] + tmp[j + row]);
    for (let j = n - row; j < n; j++) px[j] = c * tmp[j] + w * (tmp[j - row] + tmp[j]);
  }
}

export interface SyntheticFacesOptions {
  seed?: number;
  /** Image side in pixels (default 64). */
  size?: number;
  strength?: NuisanceStrength;
}

/**
 * The demo's population: identity k's parameters come from stream (seed, 1, k) and image j of identity k
 * from stream (seed, 2, k, j), so images are reproducible one by one.
 */
export class SyntheticFaces {
  readonly seed: number;
  readonly size: number;
  readonly strength: NuisanceStrength;
  private readonly cache = new Map<number, FaceIdentity>();

  constructor(opts: SyntheticFacesOptions = {}) {
    this.seed = opts.seed ?? 0;
    this.size = opts.size ?? 64;
    this.strength = opts.strength ?? {};
    if (!Number.isInteger(this.size) || this.size < 16) throw new RangeError(`image size must be an integer >= 16, got ${this.size}`);
  }

  identity(k: number): FaceIdentity {
    let id = this.cache.get(k);
    if (!id) {
      id = sampleIdentity(Rng.derive(this.seed, 1, k));
      if (this.cache.size > 4096) this.cache.clear();
      this.cache.set(k, id);
    }
    return id;
  }

  nuisance(k: number, j: number): FaceNuisance {
    return sampleNuisance(Rng.derive(this.seed, 2, k, j), this.strength);
  }

  /** Image j of identity k: RGB bytes, `size` x `size` x 3. */
  image(k: number, j: number, out?: Uint8Array): Uint8Array {
    return renderFace(this.identity(k), this.nuisance(k, j), this.size, out);
  }
}
