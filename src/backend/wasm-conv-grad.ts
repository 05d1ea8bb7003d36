// Convolution gradients (dW, dX) written as forward convolutions, so that on the wasm backend they run
// on XNNPACK instead of naive loops. All tensors are NHWC; filters are [kh, kw, in, out] (depthwise:
// [kh, kw, channels, multiplier]). Dilation 1 only (tfjs's own conv gradients require it too).
//
// Forward: y[n,i,j,o] = sum_{a,b,c} xp[n, i*sh+a, j*sw+b, c] * w[a,b,c,o], xp = x padded by (top, left).
//  dW[a,b,c,o] = sum_{n,i,j} xp[n, i*sh+a, j*sw+b, c] dy[n,i,j,o]: a convolution of x (channels as
//    batch, batch as reduction) with dy as a filter dilated by the stride.
//  dX: row p of xp receives dy row i through tap a = p - i*sh. Splitting p by its phase r = p mod sh
//    leaves, per phase, a stride-1 convolution of dy with the flipped taps a = r, r+sh, ...; the sh*sw
//    phase results are interleaved (depth-to-space). This is the zero-stuffed-dy convolution without
//    multiplying by the stuffed zeros.
import * as tf from '@tensorflow/tfjs';

/** The geometry of one forward convolution, as tfjs's computeConv2DInfo resolves it. */
export interface ConvGeometry {
  batch: number;
  inH: number;
  inW: number;
  outH: number;
  outW: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  top: number;
  left: number;
}

export function geometryFromConvInfo(info: tf.backend_util.Conv2DInfo): ConvGeometry {
  return {
    batch: info.batchSize,
    inH: info.inHeight,
    inW: info.inWidth,
    outH: info.outHeight,
    outW: info.outWidth,
    kh: info.filterHeight,
    kw: info.filterWidth,
    sh: info.strideHeight,
    sw: info.strideWidth,
    top: info.padInfo.top,
    left: info.padInfo.left,
  };
}

type Pads = [[number, number], [number, number], [number, number], [number, number]];

/**
 * Pads rows/cols of an NHWC tensor by (top, bottom, left, right); negative amounts crop instead.
 * Returns the cropped tensor and the (non-negative) padding left for the convolution to apply.
 */
function cropForPads(t: tf.Tensor4D, top: number, bottom: number, left: number, right: number): [tf.Tensor4D, Pads] {
  const [, h, w] = t.shape;
  const r0 = Math.max(0, -top);
  const r1 = h - Math.max(0, -bottom);
  const c0 = Math.max(0, -left);
  const c1 = w - Math.max(0, -right);
  const cropped = r0 === 0 && c0 === 0 && r1 === h && c1 === w ? t : tf.slice(t, [0, r0, c0, 0], [-1, r1 - r0, c1 - c0, -1]);
  return [cropped, [[0, 0], [Math.max(0, top), Math.max(0, bottom)], [Math.max(0, left), Math.max(0, right)], [0, 0]]];
}

/** Pads needed around x so that exactly the rows/cols that some window touches remain. */
function filterGradInputPads(g: ConvGeometry): [number, number, number, number] {
  const bottom = (g.outH - 1) * g.sh + g.kh - g.inH - g.top;
  const right = (g.outW - 1) * g.sw + g.kw - g.inW - g.left;
  return [g.top, bottom, g.left, right];
}

/** dW of conv2d: x [N,H,W,Ci], dy [N,Ho,Wo,Co] -> [kh,kw,Ci,Co]. */
export function conv2dFilterGrad(x: tf.Tensor4D, dy: tf.Tensor4D, g: ConvGeometry): tf.Tensor4D {
  if (g.kh === 1 && g.kw === 1) return pointwiseFilterGrad(x, dy, g);
  return tf.tidy(() => {
    const xt = tf.transpose(x, [3, 1, 2, 0]); // [Ci, H, W, N]: the batch becomes the reduction axis
    const dyt = tf.transpose(dy, [1, 2, 0, 3]); // [Ho, Wo, N, Co]
    const [top, bottom, left, right] = filterGradInputPads(g);
    const [xc, pads] = cropForPads(xt, top, bottom, left, right);
    const dw = tf.conv2d(xc, dyt, 1, pads, 'NHWC', [g.sh, g.sw]); // [Ci, kh, kw, Co]
    return tf.transpose(dw, [1, 2, 0, 3]);
  });
}

/**
 * dW of a 1x1 conv is one matrix product X^T dY over all N*Ho*Wo positions. It runs as a 1x1
 * convolution (XNNPACK's GEMM, several times faster than tf.matMul on wasm) with the reduction in
 * the channel axis; the dilated form above would reduce over Ho*Wo taps of only N channels each.
 */
function pointwiseFilterGrad(x: tf.Tensor4D, dy: tf.Tensor4D, g: ConvGeometry): tf.Tensor4D {
  return tf.tidy(() => {
    const [top, bottom, left, right] = filterGradInputPads(g);
    const [xc, pads] = cropForPads(x, top, bottom, left, right);
    let xs: tf.Tensor4D = pads.some(([a, b]) => a > 0 || b > 0) ? tf.pad(xc, pads) : xc;
    // A 1x1 average pool with the conv's stride picks exactly the positions the windows start at.
    if (g.sh > 1 || g.sw > 1) xs = tf.avgPool(xs, 1, [g.sh, g.sw], 'valid');
    const p = g.batch * g.outH * g.outW;
    const ci = x.shape[3];
    const co = dy.shape[3];
    const x2 = tf.reshape(xs, [p, ci]);
    const dy2 = tf.reshape(dy, [p, co]);
    // Transpose whichever operand is smaller; it becomes the GEMM's rows, the other its weights.
    if (ci <= co) {
      const rows = tf.reshape(tf.transpose(x2), [ci, 1, 1, p]) as tf.Tensor4D;
      return tf.reshape(tf.conv2d(rows, tf.reshape(dy2, [1, 1, p, co]) as tf.Tensor4D, 1, 'valid'), [1, 1, ci, co]);
    }
    const rows = tf.reshape(tf.transpose(dy2), [co, 1, 1, p]) as tf.Tensor4D;
    const dwT = tf.conv2d(rows, tf.reshape(x2, [1, 1, p, ci]) as tf.Tensor4D, 1, 'valid'); // [Co,1,1,Ci]
    return tf.reshape(tf.transpose(tf.reshape(dwT, [co, ci])), [1, 1, ci, co]);
  });
}

/** dW of depthwiseConv2d: x [N,H,W,C], dy [N,Ho,Wo,C*M] -> [kh,kw,C,M]. */
export function depthwiseFilterGrad(x: tf.Tensor4D, dy: tf.Tensor4D, g: ConvGeometry, multiplier: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [n, h, w, c] = x.shape;
    // Batch and channel fold into one channel axis (each (n, c) pair has its own dy "filter");
    // the batch sum follows the convolution. XNNPACK has no fast depthwise kernel for a Ho x Wo
    // filter, so this runs at ~0.5 GFLOP/s; per-tap multiply+reduce with tf ops and a JS loop over
    // the wasm heap were measured no better than ~1.5x faster, so the simple form stays.
    const xt = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, h, w, n * c]) as tf.Tensor4D;
    const dyt = tf.reshape(tf.transpose(dy, [1, 2, 0, 3]), [g.outH, g.outW, n * c, multiplier]) as tf.Tensor4D;
    const [top, bottom, left, right] = filterGradInputPads(g);
    const [xc, pads] = cropForPads(xt, top, bottom, left, right);
    const dw = tf.depthwiseConv2d(xc, dyt, 1, pads, 'NHWC', [g.sh, g.sw]); // [1, kh, kw, N*C*M]
    const perBatch = tf.reshape(dw, [g.kh, g.kw, n, c, multiplier]);
    return n === 1 ? tf.reshape(perBatch, [g.kh, g.kw, c, multiplier]) : tf.sum(perBatch, 2);
  });
}

/** The taps of filter w [kh,kw,...] that phase (rh, rw) uses, flipped spatially; null if none. */
function phaseTaps(w: tf.Tensor4D, rh: number, rw: number, sh: number, sw: number): tf.Tensor4D | null {
  const [kh, kw, a, b] = w.shape;
  if (rh >= kh || rw >= kw) return null;
  // The filter is small, so a strided slice is cheap here (it is slow on large activations).
  const sub = sh === 1 && sw === 1 ? w : tf.stridedSlice(w, [rh, rw, 0, 0], [kh, kw, a, b], [sh, sw, 1, 1]);
  return tf.reverse(sub, [0, 1]) as tf.Tensor4D;
}

/**
 * Interleaves the phase results p[rh*sw+rw] ([N,U,V,C] each) into [N, U*sh, V*sw, C], where row
 * u*sh+rh comes from phase rh, row u (a reshape and one transpose: tf.depthToSpace is far slower on wasm).
 */
function interleavePhases(phases: (tf.Tensor4D | null)[], sh: number, sw: number): tf.Tensor4D {
  const present = phases.find((p): p is tf.Tensor4D => p !== null);
  if (present === undefined) throw new Error('interleavePhases: no phase has taps');
  const [n, u, v, c] = present.shape;
  if (phases.length === 1) return present;
  if (phases.every((p, i) => (i === 0) === (p !== null))) {
    // Only phase (0,0) has taps (a 1x1 kernel with stride > 1): zero-stuff it with one pad.
    const stuffed = tf.pad(tf.reshape(present, [n, u, 1, v, 1, c]), [[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]]);
    return tf.reshape(stuffed, [n, u * sh, v * sw, c]);
  }
  const all = phases.map((p) => p ?? tf.zeros([n, u, v, c]));
  const stacked = tf.reshape(tf.concat(all, 3), [n, u, v, sh, sw, c]);
  return tf.reshape(tf.transpose(stacked, [0, 1, 3, 2, 4, 5]), [n, u * sh, v * sw, c]);
}

/**
 * Shared dX driver: `convPhase(dyPadded, taps, pads)` runs one stride-1 convolution of dy with the
 * flipped taps of one phase and returns [N, U, V, C]; phases are then interleaved and cropped to x.
 * With `uniformTaps`, every phase's taps are zero-padded (at the top/left, which keeps the
 * alignment) to the largest phase's size: XNNPACK's depthwise kernels exist for 2x2 and 3x3 taps
 * but not 2x1, where it falls back to a path ~10x slower.
 */
function inputGradByPhases(
  dy: tf.Tensor4D,
  w: tf.Tensor4D,
  g: ConvGeometry,
  uniformTaps: boolean,
  convPhase: (dy: tf.Tensor4D, taps: tf.Tensor4D, pads: Pads) => tf.Tensor4D,
): tf.Tensor4D {
  return tf.tidy(() => {
    // Phase-grid rows u0 .. u0+u-1 cover padded-x rows top .. top+inH-1 (no more: with stride 1
    // the result needs no crop).
    const u0 = Math.floor(g.top / g.sh);
    const v0 = Math.floor(g.left / g.sw);
    const u = Math.floor((g.top + g.inH - 1) / g.sh) - u0 + 1;
    const v = Math.floor((g.left + g.inW - 1) / g.sw) - v0 + 1;
    const maxTh = Math.ceil(g.kh / g.sh);
    const maxTw = Math.ceil(g.kw / g.sw);
    const phases: (tf.Tensor4D | null)[] = [];
    for (let rh = 0; rh < g.sh; rh++) {
      for (let rw = 0; rw < g.sw; rw++) {
        let taps = phaseTaps(w, rh, rw, g.sh, g.sw);
        if (taps === null) {
          phases.push(null);
          continue;
        }
        if (uniformTaps && (taps.shape[0] < maxTh || taps.shape[1] < maxTw)) {
          taps = tf.pad(taps, [[maxTh - taps.shape[0], 0], [maxTw - taps.shape[1], 0], [0, 0], [0, 0]]);
        }
        const [th, tw] = taps.shape;
        const [dyc, pads] = cropForPads(dy, th - 1 - u0, u0 + u - g.outH, tw - 1 - v0, v0 + v - g.outW);
        phases.push(convPhase(dyc, taps, pads));
      }
    }
    const full = interleavePhases(phases, g.sh, g.sw); // padded-x rows from u0*sh, cols from v0*sw
    const r0 = g.top - u0 * g.sh;
    const c0 = g.left - v0 * g.sw;
    if (r0 === 0 && c0 === 0 && full.shape[1] === g.inH && full.shape[2] === g.inW) return full;
    return tf.slice(full, [0, r0, c0, 0], [-1, g.inH, g.inW, -1]);
  });
}

/** dX of conv2d: dy [N,Ho,Wo,Co], w [kh,kw,Ci,Co] -> [N,H,W,Ci]. */
export function conv2dInputGrad(dy: tf.Tensor4D, w: tf.Tensor4D, g: ConvGeometry): tf.Tensor4D {
  return inputGradByPhases(dy, w, g, false, (d, taps, pads) =>
    tf.conv2d(d, tf.transpose(taps, [0, 1, 3, 2]), 1, pads),
  );
}

/** dX of depthwiseConv2d: dy [N,Ho,Wo,C*M], w [kh,kw,C,M] -> [N,H,W,C]. */
export function depthwiseInputGrad(dy: tf.Tensor4D, w: tf.Tensor4D, g: ConvGeometry): tf.Tensor4D {
  const [kh, kw, c, m] = w.shape;
  // Output channel c*M+m of the forward pass is input channel c through w[..,c,m]: one depthwise
  // filter per dy channel, then the M contributions of each input channel are summed.
  const wFlat = tf.reshape(w, [kh, kw, c * m, 1]) as tf.Tensor4D;
  try {
    return inputGradByPhases(dy, wFlat, g, true, (d, taps, pads) => {
      const r = tf.depthwiseConv2d(d, taps, 1, pads);
      if (m === 1) return r;
      const [n, uh, vw] = r.shape;
      return tf.sum(tf.reshape(r, [n, uh, vw, c, m]), 4) as tf.Tensor4D;
    });
  } finally {
    wFlat.dispose();
  }
}
