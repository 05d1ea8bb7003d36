// UnsortedSegmentSum as one scatter-add (ScatterNd sums duplicate indices), so its cost is one pass
// over x whatever the number of segments (the gradient of tf.gather over a large class-centre matrix).
import * as tf from '@tensorflow/tfjs';

/**
 * out[s, ...] = sum of x[idx, ...] over the positions idx (a prefix of x's axes) with segmentIds[idx] == s.
 * Ids outside [0, numSegments) contribute nothing, as in TensorFlow.
 */
export function unsortedSegmentSum(x: tf.Tensor, segmentIds: tf.Tensor, numSegments: number): tf.Tensor {
  const idsRank = segmentIds.rank;
  if (idsRank > x.rank || segmentIds.shape.some((d, i) => d !== x.shape[i])) {
    throw new Error(
      `UnsortedSegmentSum: segmentIds shape [${segmentIds.shape}] must be a prefix of x shape [${x.shape}]`,
    );
  }
  if (!Number.isInteger(numSegments) || numSegments < 0) {
    throw new Error(`UnsortedSegmentSum: numSegments must be a non-negative integer, got ${numSegments}`);
  }
  const inner = x.shape.slice(idsRank);
  const outShape = [numSegments, ...inner];
  return tf.tidy(() => {
    if (segmentIds.size === 0 || numSegments === 0) return tf.zeros(outShape, x.dtype);
    const ids = tf.reshape(segmentIds.dtype === 'int32' ? segmentIds : tf.cast(segmentIds, 'int32'), [segmentIds.size]);
    // Out-of-range ids go to one spare row past the end, dropped afterwards.
    const valid = tf.logicalAnd(tf.greaterEqual(ids, 0), tf.less(ids, numSegments));
    const safe = tf.where(valid, ids, tf.fill([ids.size], numSegments, 'int32'));
    const updates = tf.reshape(x, [segmentIds.size, ...inner]);
    const summed = tf.scatterND(tf.reshape(safe, [ids.size, 1]), updates, [numSegments + 1, ...inner]);
    return tf.slice(summed, 0, numSegments);
  });
}
