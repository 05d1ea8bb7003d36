// ONNX spatial padding (explicit `pads` or `auto_pad`) resolved to [top, left, bottom, right],
// and the test for whether tfjs' own 'same' padding gives exactly those pads.
import type { Dim } from './const-tensor.ts';
import type { ConvertContext } from './context.ts';
import { samePadTotal } from '../../onnx/geometry.ts';

export type Pads4 = [number, number, number, number];

/** Pads of a 2-D Conv/Pool node for input spatial size `hw` (null = known only at run time). */
export function resolvePads(ctx: ConvertContext, hw: Dim[], kernel: number[], strides: number[], dilations: number[]): Pads4 {
  const autoPad = ctx.string('auto_pad', 'NOTSET');
  if (autoPad === 'NOTSET') {
    const p = ctx.ints('pads', [0, 0, 0, 0])!;
    if (p.length !== 4) throw ctx.error(`expected 4 pads for a 2-D op, got [${p}]`);
    return [p[0], p[1], p[2], p[3]];
  }
  if (autoPad === 'VALID') return [0, 0, 0, 0];
  if (autoPad !== 'SAME_UPPER' && autoPad !== 'SAME_LOWER') throw ctx.error(`unknown auto_pad ${autoPad}`);
  const begin: number[] = [];
  const end: number[] = [];
  for (let i = 0; i < 2; i++) {
    const n = hw[i];
    if (n === null && strides[i] !== 1) throw ctx.error(`auto_pad ${autoPad} with stride ${strides[i]} needs a fixed input size`);
    const total = n === null ? (kernel[i] - 1) * dilations[i] : samePadTotal(n, kernel[i], strides[i], dilations[i]);
    const b = autoPad === 'SAME_UPPER' ? Math.floor(total / 2) : Math.ceil(total / 2);
    begin.push(b);
    end.push(total - b);
  }
  return [begin[0], begin[1], end[0], end[1]];
}

/** True when tfjs 'same' padding on an input of size `hw` pads exactly `pads`. */
export function isTfSame(pads: Pads4, hw: Dim[], kernel: number[], strides: number[], dilations: number[]): boolean {
  for (let i = 0; i < 2; i++) {
    const n = hw[i];
    if (n === null && strides[i] !== 1) return false;
    const total = n === null ? (kernel[i] - 1) * dilations[i] : samePadTotal(n, kernel[i], strides[i], dilations[i]);
    if (pads[i] !== Math.floor(total / 2) || pads[i + 2] !== total - Math.floor(total / 2)) return false;
  }
  return true;
}

export function isZero(pads: Pads4): boolean {
  return pads.every((p) => p === 0);
}
