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
  return tf.tidy(() => {
    const xt = tf.transpose(x, [3, 1, 2, 0]); // [Ci, H, W, N]: the batch becomes the reduction axis
    const dyt = tf.transpose(dy, [1, 2, 0, 3]); // [Ho, Wo, N, Co]
    const [top, bottom, left, right] = filterGradInputPads(g);
    const [xc, pads] = cropForPads(xt, top, bottom, left, right);
    const dw = tf.conv2d(xc, dyt, 1, pads, 'NHWC', [g.sh, g.sw]); // [Ci, kh, kw, Co]
    return tf.transpose(dw, [1, 2, 0, 3]);
  });
}

/** dW of depthwiseConv2d: x [N,H,W,C], dy [N,Ho,Wo,C*M] -> [kh,kw,C,M]. */
export function depthwiseFilterGrad(x: tf.Tensor4D, dy: tf.Tensor4D, g: ConvGeometry, multiplier: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [n, h, w, c] = x.shape;
    // Batch and channel fold into one channel axis (each (n, c) pair has its own dy "filter");
    // the batch sum follows the convolution.
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
  const sub = sh === 1 && sw === 1 ? w : tf.stridedSlice(w, [rh, rw, 0, 0], [kh, kw, a, b], [sh, sw, 1, 1]);
  return tf.reverse(sub, [0, 1]) as tf.Tensor4D;
}

/**
 * Shared dX driver: `convPhase(dyPadded, taps, pads)` runs one stride-1 convolution of dy with the
 * flipped taps of one phase and returns [N, U, V, C]; phases are then interleaved and cropped to x.
 */
function inputGradByPhases(
  dy: tf.Tensor4D,
  w: tf.Tensor4D,
  g: ConvGeometry,
  outChannels: number,
  convPhase: (dy: tf.Tensor4D, taps: tf.Tensor4D, pads: Pads) => tf.Tensor4D,
): tf.Tensor4D {
  return tf.tidy(() => {
    const u = Math.ceil((g.inH + g.top) / g.sh); // phase-grid rows covering every row of x
    const v = Math.ceil((g.inW + g.left) / g.sw);
    const phases: tf.Tensor4D[] = [];
    for (let rh = 0; rh < g.sh; rh++) {
      for (let rw = 0; rw < g.sw; rw++) {
        const taps = phaseTaps(w, rh, rw, g.sh, g.sw);
        if (taps === null) {
          phases.push(tf.zeros([g.batch, u, v, outChannels]));
          continue;
        }
        const [th, tw] = taps.shape;
        const [dyc, pads] = cropForPads(dy, th - 1, u - g.outH, tw - 1, v - g.outW);
        phases.push(convPhase(dyc, taps, pads));
      }
    }
    let full: tf.Tensor4D; // [N, U*sh, V*sw, C]: row u*sh+rh of padded x comes from phase rh, row u
    if (phases.length === 1) {
      full = phases[0];
    } else if (g.sh === g.sw) {
      full = tf.depthToSpace(tf.concat(phases, 3), g.sh);
    } else {
      const stacked = tf.reshape(tf.concat(phases, 3), [g.batch, u, v, g.sh, g.sw, outChannels]);
      full = tf.reshape(tf.transpose(stacked, [0, 1, 3, 2, 4, 5]), [g.batch, u * g.sh, v * g.sw, outChannels]);
    }
    if (g.top === 0 && g.left === 0 && full.shape[1] === g.inH && full.shape[2] === g.inW) return full;
    return tf.slice(full, [0, g.top, g.left, 0], [-1, g.inH, g.inW, -1]);
  });
}

/** dX of conv2d: dy [N,Ho,Wo,Co], w [kh,kw,Ci,Co] -> [N,H,W,Ci]. */
export function conv2dInputGrad(dy: tf.Tensor4D, w: tf.Tensor4D, g: ConvGeometry): tf.Tensor4D {
  const ci = w.shape[2];
  return inputGradByPhases(dy, w, g, ci, (d, taps, pads) =>
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
    return inputGradByPhases(dy, wFlat, g, c, (d, taps, pads) => {
      const r = tf.depthwiseConv2d(d, taps, 1, pads);
      if (m === 1) return r;
      const [n, uh, vw] = r.shape;
      return tf.sum(tf.reshape(r, [n, uh, vw, c, m]), 4) as tf.Tensor4D;
    });
  } finally {
    wFlat.dispose();
  }
}
